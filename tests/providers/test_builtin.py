from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import responses

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period
from budget_exporter.core.periods import window_at
from budget_exporter.providers import get_provider
from budget_exporter.providers.base import ProviderContext

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def make(provider: str, now: datetime = NOW, **fields: Any):
    cls = get_provider(provider)
    config = cls.config_model.model_validate({"name": "src", "provider": provider, **fields})
    requests_seen: list[str] = []
    context = ProviderContext(
        source="src",
        timeout=timedelta(seconds=2),
        retries=0,
        retry_backoff=timedelta(milliseconds=1),
        max_retry_after=timedelta(seconds=1),
        record_request=requests_seen.append,
        now=lambda: now,
        logger=logging.getLogger("test"),
    )
    provider_obj = cls(config, context)
    provider_obj.requests_seen = requests_seen  # type: ignore[attr-defined]
    return provider_obj


def windows(*periods: Period, now: datetime = NOW):
    return [window_at(p, now) for p in periods]


def test_static_amount_counts_for_every_window() -> None:
    result = make("static", amount="120.50", currency="usd").poll(
        windows(Period.MONTHLY, Period.DAILY)
    )
    assert [(ln.period, ln.amount, ln.currency) for ln in result.lines] == [
        (Period.MONTHLY, Decimal("120.50"), "USD"),
        (Period.DAILY, Decimal("120.50"), "USD"),
    ]


def test_static_lines_keep_dimensions() -> None:
    provider = make(
        "static",
        currency="EUR",
        lines=[
            {"amount": 1.1, "dimensions": {"service_name": "a"}},
            {"amount": "2", "dimensions": {}},
        ],
    )
    lines = provider.poll(windows(Period.MONTHLY)).lines
    assert [(ln.amount, ln.dims) for ln in lines] == [
        (Decimal("1.1"), {"service_name": "a"}),
        (Decimal("2"), {}),
    ]


def test_demo_is_deterministic_grows_and_has_dimensions() -> None:
    earlier = make("demo", seed=7, monthly_spend=900, values=["a", "b"]).poll(
        windows(Period.MONTHLY)
    )
    again = make("demo", seed=7, monthly_spend=900, values=["a", "b"]).poll(windows(Period.MONTHLY))
    later_now = NOW + timedelta(hours=6)
    later = make("demo", now=later_now, seed=7, monthly_spend=900, values=["a", "b"]).poll(
        windows(Period.MONTHLY, now=later_now)
    )
    other_seed = make("demo", seed=8, monthly_spend=900, values=["a", "b"]).poll(
        windows(Period.MONTHLY)
    )
    total = sum(ln.amount for ln in earlier.lines)
    assert earlier.lines == again.lines
    assert sum(ln.amount for ln in later.lines) > total
    assert earlier.lines != other_seed.lines
    assert [ln.dims for ln in earlier.lines] == [{"service_name": "a"}, {"service_name": "b"}]
    # 24.5 days into November at 30/day with a wobble of ±30 %
    assert Decimal(24.5 * 30 * 0.7) < total < Decimal(24.5 * 30 * 1.3)


URL = "https://usage.example.com/v1/cost"


@responses.activate
def test_http_json_single_amount_with_placeholders() -> None:
    responses.get(URL, json={"data": {"total": "12.3456"}})
    provider = make(
        "http_json",
        url=URL + "?from={start}&to={end}",
        params={"since": "{start_unix}"},
        headers={"Authorization": "Bearer tok"},
        amount="data.total",
        currency="USD",
    )
    result = provider.poll(windows(Period.MONTHLY))
    assert [(ln.amount, ln.currency) for ln in result.lines] == [(Decimal("12.3456"), "USD")]
    sent = responses.calls[0].request
    assert "from=2026-11-01" in sent.url and "to=2026-12-01" in sent.url
    assert f"since={int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())}" in sent.url
    assert sent.headers["Authorization"] == "Bearer tok"
    assert provider.requests_seen == ["ok"]


@responses.activate
def test_http_json_lines_pages_and_post_body() -> None:
    page1 = {
        "usage": [
            {"cost": 10.25, "cur": "usd", "product": "search", "account": 7},
            {"cost": "0.75", "cur": "USD", "product": "enrich", "account": None},
        ],
        "next": "tok2",
    }
    page2 = {"usage": [{"cost": 1, "cur": "EUR", "product": "search", "account": 8}], "next": None}

    def answer(request):
        page = page2 if "cursor=tok2" in request.url else page1
        return 200, {"Content-Type": "application/json"}, json.dumps(page)

    responses.add_callback(responses.POST, URL, callback=answer)
    provider = make(
        "http_json",
        url=URL,
        method="POST",
        body={"period": {"from": "{start_time}"}},
        lines="usage",
        amount="cost",
        currency_path="cur",
        dimensions={"charge_category": "product", "sub_account_id": "account"},
        next_page="next",
        page_param="cursor",
    )
    result = provider.poll(windows(Period.MONTHLY))
    assert [(ln.amount, ln.currency, ln.dims) for ln in result.lines] == [
        (Decimal("10.25"), "USD", {"charge_category": "search", "sub_account_id": "7"}),
        (Decimal("0.75"), "USD", {"charge_category": "enrich", "sub_account_id": ""}),
        (Decimal("1"), "EUR", {"charge_category": "search", "sub_account_id": "8"}),
    ]
    assert len(responses.calls) == 2
    assert json.loads(responses.calls[0].request.body) == {
        "period": {"from": "2026-11-01T00:00:00Z"}
    }
    assert provider.requests_seen == ["ok", "ok"]


@responses.activate
def test_http_json_next_page_as_url_and_amount_scale() -> None:
    responses.get(URL, json={"items": [{"cents": "250"}], "links": {"next": "/v1/cost?page=2"}})
    responses.get(URL + "?page=2", json={"items": [{"cents": 50}], "links": {"next": None}})
    provider = make(
        "http_json",
        url=URL,
        lines="items",
        amount="cents",
        amount_scale="0.01",
        currency="USD",
        next_page="links.next",
    )
    assert [ln.amount for ln in provider.poll(windows(Period.MONTHLY)).lines] == [
        Decimal("2.50"),
        Decimal("0.50"),
    ]


@responses.activate
@pytest.mark.parametrize(
    "payload, message",
    [
        ({"data": {}}, "amount (data.total) is missing"),
        ({"data": {"total": "n/a"}}, "amount (data.total) is not a number"),
        ({"data": {"total": True}}, "amount (data.total) is not a number"),
    ],
)
def test_http_json_bad_amounts(payload: dict[str, Any], message: str) -> None:
    responses.get(URL, json=payload)
    provider = make("http_json", url=URL, amount="data.total", currency="USD")
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        provider.poll(windows(Period.MONTHLY))


@responses.activate
def test_http_json_not_json_and_http_errors() -> None:
    responses.get(URL, body="<html>maintenance</html>", content_type="text/html")
    provider = make("http_json", url=URL + "?key=s3cr3tv4lue", amount="total", currency="USD")
    with pytest.raises(SourceError, match="did not answer JSON") as info:
        provider.poll(windows(Period.MONTHLY))
    assert "s3cr3tv4lue" not in str(info.value)
    responses.replace(responses.GET, URL, json={"error": "invalid key"}, status=401)
    with pytest.raises(SourceError, match="answered HTTP 401") as info:
        provider.poll(windows(Period.MONTHLY))
    assert "s3cr3tv4lue" not in str(info.value)
    assert provider.requests_seen == ["ok", "client_error"]


def test_http_json_only_reports_its_period() -> None:
    cls = get_provider("http_json")
    config = cls.config_model.model_validate(
        {
            "name": "a",
            "provider": "http_json",
            "url": URL,
            "amount": "x",
            "currency": "USD",
            "period": "daily",
        }
    )
    assert cls.periods_for(config) == {Period.DAILY}


@responses.activate
def test_http_json_never_follows_a_page_link_to_another_server() -> None:
    responses.get(URL, json={"items": [{"c": 1}], "next": "https://evil.example.net/steal?page=2"})
    provider = make(
        "http_json",
        url=URL,
        headers={"Authorization": "Bearer tok"},
        lines="items",
        amount="c",
        currency="USD",
        next_page="next",
    )
    with pytest.raises(SourceError, match="refusing to send credentials there"):
        provider.poll(windows(Period.MONTHLY))
    assert len(responses.calls) == 1


@responses.activate
def test_http_json_odd_answers() -> None:
    responses.get(
        URL,
        json={
            "currency": "eur",
            "items": [
                {"cost": "1_000", "k": "a"},
                {"cost": "5", "k": ["l", "i"]},
            ],
        },
    )
    provider = make(
        "http_json", url=URL, lines="items", amount="cost", currency_path="currency",
        dimensions={"charge_category": "k"},
    )  # fmt: skip
    with pytest.raises(SourceError, match=r"lines\[0\] amount \(cost\) is not a number"):
        provider.poll(windows(Period.MONTHLY))
    responses.replace(
        responses.GET, URL, json={"currency": "eur", "items": [{"cost": "5", "k": ["l", "i"]}]}
    )
    with pytest.raises(SourceError, match="selected a JSON list, not a single value"):
        provider.poll(windows(Period.MONTHLY))
    responses.replace(
        responses.GET, URL, json={"currency": "eur", "items": [{"cost": "5", "k": "x"}]}
    )
    (line,) = provider.poll(windows(Period.MONTHLY)).lines
    assert (line.amount, line.currency) == (Decimal(5), "EUR")  # the document's currency


def test_http_json_url_must_be_usable() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="has an invalid port"):
        make("http_json", url="http://127.0.0.1:18999:1/x", amount="a", currency="USD")
