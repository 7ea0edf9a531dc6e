"""The ``prometheus`` provider against answers of the Prometheus HTTP query API.

The answers are recorded in ``fixtures/`` (evaluated at :data:`tests.support.llm.NOW`) and
follow https://prometheus.io/docs/prometheus/latest/querying/api/:
``{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {...},
"value": [<unix time>, "<value as string>"]}]}, "warnings": [...]}`` and, on errors,
``{"status": "error", "errorType": "bad_data", "error": "..."}`` with a 4xx/5xx code.
"""

from __future__ import annotations

import base64
import dataclasses
import textwrap
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.core.model import Period
from budget_exporter.providers.prometheus import fill, metered_start, promql_duration
from tests.support.fixtures import load_fixture
from tests.support.llm import MONTH, NOW, make_provider

URL = "https://prometheus.test"
QUERY_URL = f"{URL}/api/v1/query"
LITELLM = "sum by (model, team) (increase(litellm_spend_metric_total[{range}]))"
OTEL = (
    "sum by (gen_ai_request_model, gen_ai_token_type) "
    "(increase(gen_ai_client_token_usage_sum[{range}]))"
)


def answer(name: str) -> Any:
    """The recorded query API answer ``name`` (``fixtures/<name>.json``)."""
    return load_fixture("prometheus", name)


def one_series(labels: dict[str, str], value: str) -> Any:
    """The recorded one-series vector ``spend_total`` with its labels and value replaced."""
    document = answer("spend_total")
    (series,) = document["data"]["result"]
    series["metric"] = labels
    series["value"][1] = value
    return document


def provider(**fields: Any) -> Any:
    settings = {"url": URL, "query": LITELLM, "currency": "USD", **fields}
    return make_provider("prometheus", **settings)


def sent(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


@responses.activate
def test_query_covers_the_window_and_maps_dimensions() -> None:
    responses.get(QUERY_URL, json=answer("spend_by_model_and_team"))
    result = provider(dimensions={"model": "model", "sub_account_id": "team"}).poll([MONTH])
    params = sent(responses.calls[0])
    seconds = int((NOW - MONTH.start).total_seconds())
    assert params["query"] == [
        f"sum by (model, team) (increase(litellm_spend_metric_total[{seconds}s]))"
    ]
    assert float(params["time"][0]) == NOW.timestamp()
    got = {(ln.dims["model"], ln.dims["sub_account_id"]): ln.amount for ln in result.lines}
    assert got == {
        ("gpt-4o", "search"): Decimal("12.5"),
        ("gpt-4o-mini", "search"): Decimal("0.25"),
        ("gpt-4o", "ads"): Decimal("3"),
    }
    assert {ln.currency for ln in result.lines} == {"USD"}
    assert all(ln.period == Period.MONTHLY for ln in result.lines)
    assert result.metered_from is None


@responses.activate
def test_unmapped_labels_are_summed_and_an_empty_answer_is_no_spend() -> None:
    responses.get(QUERY_URL, json=answer("spend_one_team"))
    responses.get(QUERY_URL, json=answer("empty_vector"))
    p = provider(dimensions={"sub_account_id": "team"})
    [line] = p.poll([MONTH]).lines
    assert (line.dims, line.amount) == ({"sub_account_id": "x"}, Decimal("3.5"))
    assert p.poll([MONTH]).lines == ()


@responses.activate
def test_a_scalar_answer_is_one_line() -> None:
    responses.get(QUERY_URL, json=answer("scalar"))
    [line] = provider(query="scalar(sum(increase(x_total[{range}])))").poll([MONTH]).lines
    assert line.amount == Decimal("42.5") and line.dims == {}


@responses.activate
def test_the_metered_window_starts_at_the_billed_horizon() -> None:
    responses.get(QUERY_URL, json=answer("spend_total"))
    horizon = NOW - timedelta(hours=3)
    p = provider(metered_after="openai", query="sum(increase(spend_total[{range}])) @ {end_unix}")
    p.context = dataclasses.replace(p.context, horizon=lambda: horizon)
    result = p.poll([MONTH])
    assert sent(responses.calls[0])["query"] == [
        f"sum(increase(spend_total[10800s])) @ {int(NOW.timestamp())}"
    ]
    assert result.metered_from == horizon
    assert [ln.amount for ln in result.lines] == [Decimal("4")]


def test_window_arithmetic() -> None:
    assert promql_duration(0) == "1s" and promql_duration(3600.2) == "3601s"
    assert fill("x[{range}] {start_unix}", NOW - timedelta(seconds=90), NOW) == (
        f"x[90s] {int(NOW.timestamp()) - 90}"
    )
    # The horizon only ever narrows the window, and never starts it after now.
    assert metered_start(MONTH, None, NOW) == MONTH.start
    assert metered_start(MONTH, MONTH.start - timedelta(days=3), NOW) == MONTH.start
    assert metered_start(MONTH, NOW + timedelta(days=1), NOW) == NOW


@responses.activate
def test_auth_tenant_and_custom_headers_are_sent() -> None:
    responses.get(QUERY_URL, json=answer("empty_vector"))
    provider(username="budget", password="s3cret", tenant="team-a", headers={"X-Extra": "1"}).poll(
        [MONTH]
    )
    headers = responses.calls[0].request.headers
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"budget:s3cret").decode()
    assert headers["X-Scope-OrgID"] == "team-a"
    assert headers["X-Extra"] == "1"

    responses.calls.reset()
    provider(bearer_token="tok-123").poll([MONTH])
    headers = responses.calls[0].request.headers
    assert headers["Authorization"] == "Bearer tok-123"
    assert "X-Scope-OrgID" not in headers


@responses.activate
def test_warnings_mean_a_partial_answer_and_fail_the_poll() -> None:
    responses.get(QUERY_URL, json=answer("partial_answer"))
    with pytest.raises(SourceError, match=r"partial answer.*store 10\.0\.0\.7:10901 unavailable"):
        provider().poll([MONTH])


@responses.activate
@pytest.mark.parametrize("status", [400, 422])
def test_error_json_is_explained(status: int) -> None:
    responses.get(QUERY_URL, status=status, json=answer("error_bad_data"))
    with pytest.raises(SourceError) as caught:
        provider().poll([MONTH])
    message = str(caught.value)
    assert f"answered HTTP {status}: bad_data: 1:5: parse error" in message
    assert "{" not in message.split("bad_data")[0]  # the JSON is read, not dumped


@responses.activate
def test_server_errors_are_retried_once_then_fail() -> None:
    # global.retries is 3, but each retry is one more query on an overloaded server.
    for _ in range(4):
        responses.get(QUERY_URL, status=503, json=answer("error_unavailable"))
    p = make_provider("prometheus", url=URL, query=LITELLM, currency="USD", retries=3)
    with pytest.raises(SourceError, match=r"HTTP 503.*unavailable: too many queries"):
        p.poll([MONTH])
    assert len(responses.calls) == 2


@responses.activate
def test_the_evaluation_timeout_is_sent_below_the_clients() -> None:
    responses.get(QUERY_URL, json=answer("spend_total"))
    make_provider("prometheus", url=URL, query=LITELLM, currency="USD", timeout=10.0).poll([MONTH])
    assert sent(responses.calls[0])["timeout"] == ["9000ms"]


def test_meter_polls_start_at_a_capped_rate(tmp_path: Path) -> None:
    from budget_exporter.runtime.engine import _poll_rates

    config = load_config(_config(tmp_path, "- " + METER_SOURCE + "\n"))
    assert _poll_rates(config) == {"prometheus": 10.0}


@responses.activate
def test_unreachable_and_slow_servers_fail_the_poll() -> None:
    responses.get(QUERY_URL, body=requests.ConnectionError("connection refused"))
    with pytest.raises(SourceError, match="failed: connection refused"):
        provider().poll([MONTH])
    responses.replace(responses.GET, QUERY_URL, body=requests.ReadTimeout("read timed out"))
    p = provider()
    with pytest.raises(SourceError, match="timed out"):
        p.poll([MONTH])
    assert p.requests_seen == ["timeout"]


@responses.activate
def test_unauthorized_and_missing_tenant_have_hints() -> None:
    responses.get(QUERY_URL, status=401, json=answer("error_unauthorized"))
    with pytest.raises(SourceError, match=r"HTTP 401.*check username/password"):
        provider().poll([MONTH])
    responses.replace(responses.GET, QUERY_URL, status=401, body="no org id\n")
    with pytest.raises(SourceError, match="set tenant"):
        provider().poll([MONTH])


@responses.activate
@pytest.mark.parametrize(
    ("document", "why"),
    [
        (answer("empty_matrix"), "returned a matrix, not an instant vector"),
        (answer("error_execution"), "query failed: execution"),
        (one_series({"model": "a"}, "NaN"), r'series \{model="a"\}: value is NaN'),
        (one_series({}, "+Inf"), "value is"),
        (one_series({}, "1e20"), "not a plausible amount"),
        ({"status": "success"}, "no data object"),
        (["not", "an", "object"], "not a JSON object"),
    ],
)
def test_unusable_answers_fail_the_poll(document: Any, why: str) -> None:
    responses.get(QUERY_URL, json=document)
    with pytest.raises(SourceError, match=why):
        provider().poll([MONTH])


@responses.activate
def test_tokens_are_priced_with_the_price_table() -> None:
    responses.get(QUERY_URL, json=answer("gen_ai_tokens"))
    p = provider(
        query=OTEL,
        currency=None,
        mode="tokens",
        tokens={"model_label": "gen_ai_request_model", "token_type_label": "gen_ai_token_type"},
        pricing={"models": {"house-model": {"input": 1, "output": 2}}},
    )
    lines = {(ln.dims["model"], ln.dims["token_type"]): ln.amount for ln in p.poll([MONTH]).lines}
    table = p.config.price_table()
    assert lines == {
        ("gpt-4o", "input"): table.lookup("gpt-4o").input * 2,
        ("gpt-4o", "output"): table.lookup("gpt-4o").output,
        ("house-model", "input"): Decimal(1),
    }


@responses.activate
@pytest.mark.parametrize(
    ("labels", "why"),
    [
        ({"model": "no-such-model-xyz", "token_type": "input"}, "no price for model"),
        ({"model": "gpt-4o", "token_type": "reasoning"}, "token type 'reasoning'"),
        ({"token_type": "input"}, "has no 'model' label"),
    ],
)
def test_tokens_never_become_a_silent_zero(labels: dict[str, str], why: str) -> None:
    responses.get(QUERY_URL, json=one_series(labels, "10"))
    p = provider(
        query="sum by (model, token_type) (increase(t[{range}]))", currency=None, mode="tokens"
    )
    with pytest.raises(SourceError, match=why):
        p.poll([MONTH])


METER_SOURCE = (
    "{name: m, provider: prometheus, url: 'http://prom:9090', currency: USD, "
    "query: 'sum(increase(x[{range}]))'}"
)


def _config(tmp_path: Path, source: str) -> Path:
    file = tmp_path / "config.yml"
    file.write_text(
        "sources:\n"
        + textwrap.indent(textwrap.dedent(source), "  ")
        + "budgets:\n  - {name: b, limit: 10, currency: USD}\n"
    )
    return file


@pytest.mark.parametrize(
    ("source", "where", "why"),
    [
        (
            "- {name: m, provider: prometheus, url: 'http://prom:9090', query: 'x'}\n",
            "sources[0]",
            "currency is required",
        ),
        (
            "- {name: m, provider: prometheus, url: 'http://prom:9090', currency: USD,\n"
            "   query: 'sum(x_total)'}\n",
            "sources[0]",
            "must use {range}",
        ),
        (
            "- {name: m, provider: prometheus, url: 'http://prom:9090', currency: USD,\n"
            "   query: 'sum(increase(x[{range}]))', bearer_token: abc}\n",
            "sources[0]",
            "must use https when credentials are set",
        ),
        (
            "- {name: m, provider: prometheus, url: 'http://prom:9090/api/v1/query',\n"
            "   currency: USD, query: 'sum(increase(x[{range}]))'}\n",
            "sources[0].url",
            "must be the base URL",
        ),
        (
            "- {name: m, provider: prometheus, url: 'http://prom:9090', currency: USD,\n"
            "   query: 'sum(increase(x[{range}]))', dimensions: {instance: instance}}\n",
            "sources[0]",
            "clashes with Prometheus target labels",
        ),
    ],
)
def test_config_mistakes_are_one_clear_line(
    tmp_path: Path, source: str, where: str, why: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, source))
    assert where in str(caught.value) and why in str(caught.value)


def test_secrets_come_from_files_and_are_redacted(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("pa55-from-file\n")
    (tmp_path / "token").write_text("tok-from-file\n")
    config = load_config(
        _config(
            tmp_path,
            """\
            - name: m1
              provider: prometheus
              url: https://mimir.test/prometheus
              tenant: team-a
              username: budget
              password_file: password
              currency: USD
              query: sum(increase(x_total[{range}]))
            - name: m2
              provider: prometheus
              url: https://thanos.test
              bearer_token_file: token
              currency: USD
              query: sum(increase(x_total[{range}]))
            """,
        )
    )
    m1, m2 = config.sources
    assert m1.password == "pa55-from-file" and m2.bearer_token == "tok-from-file"
    assert {"pa55-from-file", "tok-from-file"} <= config.secrets
    assert config.poll_interval(m1) == timedelta(seconds=30)
