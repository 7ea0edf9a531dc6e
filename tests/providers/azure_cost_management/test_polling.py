"""azure_cost_management: polling (pages, tokens, groupings), throttling and retries, and
the credentials other than a client secret (workload and managed identity), mocked at
HTTP level.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from urllib3 import HTTPResponse

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period
from budget_exporter.core.periods import window_at
from budget_exporter.providers.azure_cost_management import _CostManagementRetry
from tests.support.azure import (
    ACCESS_TOKEN,
    ARM_SCOPE,
    CLIENT_ID,
    QUERY_URL,
    SECRET,
    SUBSCRIPTION,
    answer,
    arm_error,
    by_dims,
    clean_azure_env,  # noqa: F401 (autouse fixture)
    make_provider,
    mock_login,
    monthly,
    poll_error,
    query_calls,
    query_page,
    throttle_query,
)
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture: belt and braces)


@pytest.mark.extra("azure")
def test_poll_follows_next_link_with_the_same_body(rs: Any) -> None:
    mock_login(rs)
    second = f"{QUERY_URL}?api-version=2023-11-01&$skiptoken=AQAAAA%3D%3D"
    first = answer("next_link_page1")  # Storage 19.54, Bandwidth 0.1
    assert first["properties"]["nextLink"] == second
    rs.post(QUERY_URL, json=first)
    rs.post(second, json=answer("next_link_page2"))  # Virtual Machines 120.0, Bandwidth 0.2
    requests: Counter[str] = Counter()
    provider = make_provider(requests)
    result = provider.poll(monthly())

    assert by_dims(result) == {
        (("service_name", "Storage"),): (Decimal("19.54"), "USD"),
        (("service_name", "Bandwidth"),): (Decimal("0.3"), "USD"),  # exact: parsed as Decimal
        (("service_name", "Virtual Machines"),): (Decimal("120.0"), "USD"),
    }
    assert all(line.period == Period.MONTHLY for line in result.lines)
    calls = query_calls(rs)
    assert len(calls) == 2
    first = urlsplit(calls[0].request.url)
    assert parse_qs(first.query) == {"api-version": ["2023-11-01"]}
    assert calls[1].request.url == second
    bodies = [json.loads(c.request.body) for c in calls]
    assert bodies[0] == bodies[1] == provider.config.query_body()
    for call in calls:
        assert call.request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    # two token-side requests (tenant discovery, token) and two pages, all counted
    assert requests == Counter({"ok": 4})
    token_call = next(c for c in rs.calls if c.request.url.endswith("/oauth2/v2.0/token"))
    form = parse_qs(token_call.request.body)
    assert form["grant_type"] == ["client_credentials"]
    assert form["client_id"] == [CLIENT_ID]
    assert form["client_secret"] == [SECRET]
    assert form["scope"] == [ARM_SCOPE]


@pytest.mark.extra("azure")
def test_token_is_cached_between_polls(rs: Any) -> None:
    mock_login(rs)
    rs.post(QUERY_URL, json=query_page([[5, "Storage", "USD"]]))
    requests: Counter[str] = Counter()
    provider = make_provider(requests)
    provider.poll(monthly())
    provider.poll(monthly())
    token_posts = [c for c in rs.calls if c.request.url.endswith("/oauth2/v2.0/token")]
    assert len(token_posts) == 1
    assert len(query_calls(rs)) == 2
    assert requests == Counter({"ok": 4})
    provider.close()


@pytest.mark.extra("azure")
def test_two_groupings_and_currencies(rs: Any) -> None:
    mock_login(rs)
    # Storage in two subscriptions: EUR 10 and USD 7 in ours, EUR 2.5 in another.
    rs.post(QUERY_URL, json=answer("by_service_and_subscription"))
    result = make_provider(group_by=["ServiceName", "SubscriptionId"]).poll(monthly())
    other = "99999999-1111-2222-3333-444444444444"
    # the EUR and USD lines of one subscription stay apart
    assert sorted(
        (line.currency, line.dims["sub_account_id"], line.amount) for line in result.lines
    ) == [
        ("EUR", SUBSCRIPTION, Decimal(10)),
        ("EUR", other, Decimal("2.5")),
        ("USD", SUBSCRIPTION, Decimal(7)),
    ]
    assert {line.dims["service_name"] for line in result.lines} == {"Storage"}


@pytest.mark.extra("azure")
def test_no_content_means_no_spend_yet(rs: Any) -> None:
    mock_login(rs)
    rs.post(QUERY_URL, status=204)
    requests: Counter[str] = Counter()
    result = make_provider(requests).poll(monthly())
    assert result.lines == ()
    assert requests == Counter({"ok": 3})


@pytest.mark.extra("azure")
def test_only_monthly_windows_are_queried(rs: Any) -> None:
    result = make_provider().poll(())
    assert result.lines == ()
    assert len(rs.calls) == 0


@pytest.mark.extra("azure")
def test_other_windows_ask_for_their_days(rs: Any) -> None:
    mock_login(rs)
    rs.post(QUERY_URL, json=answer("by_service"))
    rs.post(QUERY_URL, json=answer("by_service"))
    now = datetime(2026, 1, 1, 9, tzinfo=UTC)  # Thursday 1 January 2026: ISO week 1 of 2026
    provider = make_provider(ctx={"now": lambda: now})
    windows = [
        window_at(Period(p), now)
        for p in ("weekly", "yearly-april", "2026-02-01/2026-02-28", "daily")
    ]
    result = provider.poll(windows)
    bodies = [json.loads(c.request.body) for c in query_calls(rs)]
    # the week from Monday 29 December 2025 to today; the fiscal year from 1 April 2025;
    # the range not begun and today alone are not asked for
    assert [(b["timeframe"], b["timePeriod"]) for b in bodies] == [
        ("Custom", {"from": "2025-12-29T00:00:00Z", "to": "2026-01-01T23:59:59Z"}),
        ("Custom", {"from": "2025-04-01T00:00:00Z", "to": "2026-01-01T23:59:59Z"}),
    ]
    monthly_body = provider.config.query_body()
    assert all(b["dataset"] == monthly_body["dataset"] for b in bodies)
    by_period = {ln.period for ln in result.lines}
    assert by_period == {Period.WEEKLY, Period("yearly-april")}
    week = sum(ln.amount for ln in result.lines if ln.period == Period.WEEKLY)
    year = sum(ln.amount for ln in result.lines if ln.period == Period("yearly-april"))
    assert week == year > 0


@pytest.mark.extra("azure")
def test_next_link_on_another_host_stays_on_base_url(rs: Any) -> None:
    mock_login(rs)
    real = (
        "https://management.azure.com/subscriptions/"
        f"{SUBSCRIPTION}/providers/Microsoft.CostManagement/query?$skiptoken=AQAAAA%3D%3D"
    )
    rs.post(QUERY_URL, json=query_page([[1, "Storage", "USD"]], next_link=real))
    rs.post(QUERY_URL, json=query_page([[2, "Backup", "USD"]]))
    result = make_provider().poll(monthly())
    assert sorted(line.amount for line in result.lines) == [1, 2]
    second = urlsplit(query_calls(rs)[1].request.url)
    assert second.netloc == "management.example.test"
    assert parse_qs(second.query) == {"$skiptoken": ["AQAAAA=="], "api-version": ["2023-11-01"]}


@pytest.mark.extra("azure")
def test_max_pages_stops_a_runaway_next_link(rs: Any) -> None:
    mock_login(rs)
    rs.post(QUERY_URL, json=query_page([[1, "Storage", "USD"]], next_link=QUERY_URL))
    with pytest.raises(SourceError, match=r"max_pages \(3\)"):
        make_provider(max_pages=3).poll(monthly())
    assert len(query_calls(rs)) == 3


@pytest.mark.extra("azure")
def test_throttled_query_is_retried_and_counted(rs: Any) -> None:
    mock_login(rs)
    throttle_query(
        rs,
        {
            "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "1",
            "x-ms-ratelimit-microsoft.costmanagement-qpu-remaining": "QueryResource=0",
        },
    )
    rs.post(QUERY_URL, json=query_page([[4.2, "Storage", "USD"]]))
    requests: Counter[str] = Counter()
    result = make_provider(requests).poll(monthly())
    assert [line.amount for line in result.lines] == [Decimal("4.2")]
    assert requests == Counter({"ok": 3, "throttled": 1})


@pytest.mark.extra("azure")
def test_throttled_until_retries_run_out(rs: Any) -> None:
    mock_login(rs)
    throttle_query(rs, {"x-ms-ratelimit-microsoft.costmanagement-entity-retry-after": "0"})
    requests: Counter[str] = Counter()
    message = poll_error(requests)
    assert "throttling" in message and "poll_interval" in message
    assert requests["throttled"] == 3  # the first try and two retries
    assert len(query_calls(rs)) == 3


def _urllib3_response(headers: dict[str, str]) -> HTTPResponse:
    return HTTPResponse(body=b"", headers=headers, status=429, preload_content=False)


def _retry(max_retry_after: float = 30.0) -> _CostManagementRetry:
    return _CostManagementRetry(total=2, status_forcelist={429}, max_retry_after=max_retry_after)


def test_retry_waits_for_the_longest_cost_management_header() -> None:
    response = _urllib3_response(
        {
            "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "7",
            "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after": "3",
            "Retry-After": "2",
        }
    )
    assert _retry().get_retry_after(response) == 7
    assert _retry(max_retry_after=5).get_retry_after(response) == 5
    assert _retry().get_retry_after(_urllib3_response({"Retry-After": "4"})) == 4
    tenant = {"X-Ms-Ratelimit-Microsoft.CostManagement-Tenant-Retry-After": "11"}
    assert _retry().get_retry_after(_urllib3_response(tenant)) == 11
    assert _retry().get_retry_after(_urllib3_response({"Retry-After": "soon"})) is None
    unrelated = {"x-ms-ratelimit-remaining-subscription-reads": "11999"}
    assert _retry().get_retry_after(_urllib3_response(unrelated)) is None


def test_retry_sleeps_the_header_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib3.util.retry as retry_module

    slept: list[float] = []

    class FakeTime:
        @staticmethod
        def sleep(seconds: float) -> None:
            slept.append(seconds)

        time = staticmethod(time.time)

    monkeypatch.setattr(retry_module, "time", FakeTime)
    headers = {"x-ms-ratelimit-microsoft.costmanagement-clienttype-retry-after": "9"}
    _retry().sleep(_urllib3_response(headers))
    assert slept == [9]


@pytest.mark.extra("azure")
def test_provider_installs_the_cost_management_retry() -> None:
    provider = make_provider()
    for adapter in provider.http.session.adapters.values():
        assert isinstance(adapter.max_retries, _CostManagementRetry)
        assert adapter.max_retries.total == 2
        assert adapter.max_retries.max_retry_after == 30


class _Throttling(http.server.BaseHTTPRequestHandler):
    """A Cost Management double on loopback: 429 with the QPU header, then a result."""

    answers: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []
    seen: ClassVar[list[tuple[float, str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.seen.append((time.monotonic(), self.path, self.rfile.read(length)))
        status, headers, body = self.answers.pop(0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.extra("azure")
def test_retry_after_header_is_honoured_on_the_wire(rs: Any) -> None:
    """urllib3 really waits the header's seconds (responses skips the sleep, so use loopback)."""
    _Throttling.answers = [
        (
            429,
            {
                "Content-Type": "application/json",
                "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "1",
            },
            json.dumps(arm_error("429", "Too many requests. Please retry.")).encode(),
        ),
        (
            200,
            {"Content-Type": "application/json"},
            json.dumps(query_page([[8.5, "Storage", "USD"]])).encode(),
        ),
    ]
    _Throttling.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        rs.add_passthru(base)
        mock_login(rs)
        requests: Counter[str] = Counter()
        provider = make_provider(
            requests, ctx={"retry_backoff": timedelta(milliseconds=1)}, base_url=base
        )
        result = provider.poll(monthly())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert [line.amount for line in result.lines] == [Decimal("8.5")]
    (first, path, body1), (second, _, body2) = _Throttling.seen
    assert second - first >= 0.95  # the header's second, not the 1 ms backoff
    assert path.startswith(f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.CostManagement/")
    assert json.loads(body1) == json.loads(body2)
    assert requests == Counter({"ok": 3, "throttled": 1})


@pytest.mark.extra("azure")
def test_workload_identity_sends_the_federated_token(rs: Any, tmp_path: Path) -> None:
    assertion = "eyJhbGciOiJSUzI1NiJ9.federated-service-account-token.sig"
    (tmp_path / "azure-identity-token").write_text(assertion)
    mock_login(rs)
    rs.post(QUERY_URL, json=query_page([[3, "Storage", "USD"]]))
    provider = make_provider(
        auth="workload_identity",
        client_secret=None,
        token_file=str(tmp_path / "azure-identity-token"),
    )
    assert [line.amount for line in provider.poll(monthly()).lines] == [3]
    token_call = next(c for c in rs.calls if c.request.url.endswith("/oauth2/v2.0/token"))
    form = parse_qs(token_call.request.body)
    assert form["client_assertion"] == [assertion]
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert "client_secret" not in form


@pytest.mark.extra("azure")
def test_workload_identity_without_settings(rs: Any) -> None:
    provider = make_provider(
        auth="workload_identity", client_secret=None, tenant_id=None, client_id=None
    )
    with pytest.raises(SourceError, match="cannot set up Azure workload identity credentials"):
        provider.poll(monthly())
    assert len(rs.calls) == 0


@pytest.mark.extra("azure")
def test_managed_identity_uses_imds(rs: Any) -> None:
    rs.get(
        "http://169.254.169.254/metadata/identity/oauth2/token",
        json={
            "access_token": ACCESS_TOKEN,
            "client_id": CLIENT_ID,
            "expires_in": "86399",
            "expires_on": str(int(time.time()) + 86399),
            "ext_expires_in": "86399",
            "not_before": str(int(time.time())),
            "resource": "https://management.example.test",
            "token_type": "Bearer",
        },
    )
    rs.post(QUERY_URL, json=query_page([[6, "Storage", "USD"]]))
    requests: Counter[str] = Counter()
    provider = make_provider(
        requests, auth="managed_identity", client_secret=None, tenant_id=None, authority=None
    )
    assert [line.amount for line in provider.poll(monthly()).lines] == [6]
    imds = rs.calls[0].request
    query = parse_qs(urlsplit(imds.url).query)
    assert query["resource"] == ["https://management.example.test"]
    assert query["client_id"] == [CLIENT_ID]
    assert imds.headers["Metadata"] == "true"
    assert query_calls(rs)[0].request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert requests == Counter({"ok": 2})
