"""azure_cost_management: Cost Management query and Microsoft Entra ID tokens, mocked at HTTP level.

azure-identity sends its token requests through azure-core's ``RequestsTransport``
(``requests`` underneath), so ``responses`` intercepts them exactly like the
query calls; anything not registered fails with a ConnectionError instead of
reaching the network.  Payloads follow /work/shared/provider-apis.md.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from urllib3 import HTTPResponse

from budget_exporter.config import load_config
from budget_exporter.engine import Engine
from budget_exporter.errors import ConfigError, SourceError
from budget_exporter.model import Period, Window
from budget_exporter.periods import window_at
from budget_exporter.providers import get_provider
from budget_exporter.providers.azure_cost_management import (
    AzureCostManagementConfig,
    AzureCostManagementProvider,
    _CostManagementRetry,
    parse_query_result,
)
from budget_exporter.providers.base import ProviderContext
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture: belt and braces)

AUTHORITY = "https://login.example.test"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "5b1a1f9e-3c1d-4c8e-9a55-0d2f3c4b5a61"
SECRET = "kQ8~s3cret.Value_not-for-logs"
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
BASE = "https://management.example.test"
QUERY_URL = f"{BASE}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.CostManagement/query"
ACCESS_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.test-access-token.sig"
ARM_SCOPE = "https://management.example.test/.default"

_AZURE_ENV = (
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_REGIONAL_AUTHORITY_NAME",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture(autouse=True)
def _clean_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No host setting may steer azure-identity anywhere but the mocks."""
    for name in _AZURE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def rs() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# -- payloads, shaped as Cost Management and Microsoft Entra ID send them ----------


def cost_columns(*dimensions: str) -> list[tuple[str, str]]:
    """The columns of a grouped answer: the cost, one per grouping dimension, the currency."""
    return [("Cost", "Number"), *((name, "String") for name in dimensions), ("Currency", "String")]


def query_page(
    rows: list[list[Any]],
    columns: list[tuple[str, str]] | None = None,
    next_link: str | None = None,
) -> dict[str, Any]:
    columns = columns or cost_columns("ServiceName")
    return {
        "id": f"subscriptions/{SUBSCRIPTION}/providers/Microsoft.CostManagement/query/"
        "9af9459d-441d-4055-9ed0-83d4c4a363fb",
        "name": "9af9459d-441d-4055-9ed0-83d4c4a363fb",
        "type": "Microsoft.CostManagement/query",
        "location": None,
        "sku": None,
        "eTag": None,
        "properties": {
            "nextLink": next_link,
            "columns": [{"name": n, "type": t} for n, t in columns],
            "rows": rows,
        },
    }


def arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def refuse_query(
    rs: Any,
    status: int,
    code: str,
    message: str,
    *,
    url: str = QUERY_URL,
    headers: dict[str, str] | None = None,
) -> None:
    """Cost Management answers the next query with an ARM error."""
    rs.post(url, status=status, json=arm_error(code, message), headers=headers)


def throttle_query(rs: Any, headers: dict[str, str]) -> None:
    """Cost Management's 429 for the next query, with its rate-limit ``headers``."""
    refuse_query(rs, 429, "429", "Too many requests. Please retry.", headers=headers)


def mock_login(rs: Any, *, status: int = 200, body: dict[str, Any] | None = None) -> None:
    """Tenant discovery (GET openid-configuration) and the client-credentials token POST."""
    rs.get(
        f"{AUTHORITY}/{TENANT}/v2.0/.well-known/openid-configuration",
        json={
            "token_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{AUTHORITY}/{TENANT}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{AUTHORITY}/{TENANT}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        },
    )
    rs.post(
        f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token",
        status=status,
        json=body
        or {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": ACCESS_TOKEN,
        },
    )


def context(requests: Counter[str], **overrides: Any) -> ProviderContext:
    values: dict[str, Any] = {
        "source": "azure",
        "timeout": timedelta(seconds=5),
        "retries": 2,
        "retry_backoff": timedelta(0),
        "max_retry_after": timedelta(seconds=30),
        "record_request": lambda status: requests.update([status]),
        "now": lambda: datetime.now(UTC),
        "logger": logging.getLogger("test.azure"),
    }
    values.update(overrides)
    return ProviderContext(**values)


def make_config(**overrides: Any) -> AzureCostManagementConfig:
    values: dict[str, Any] = {
        "name": "azure",
        "provider": "azure_cost_management",
        "scope": f"/subscriptions/{SUBSCRIPTION}",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "authority": AUTHORITY,
        "base_url": BASE,
    }
    values.update(overrides)
    return AzureCostManagementConfig.model_validate(values)


def make_provider(
    requests: Counter[str] | None = None, ctx: dict[str, Any] | None = None, **overrides: Any
) -> AzureCostManagementProvider:
    counter = Counter() if requests is None else requests
    return AzureCostManagementProvider(make_config(**overrides), context(counter, **(ctx or {})))


def monthly() -> tuple[Window, ...]:
    return (window_at(Period.MONTHLY, datetime.now(UTC)),)


def poll_error(requests: Counter[str] | None = None, **overrides: Any) -> str:
    """The SourceError message of one monthly poll, which must fail."""
    with pytest.raises(SourceError) as info:
        make_provider(requests, **overrides).poll(monthly())
    return str(info.value)


def source_file(tmp_path: Path, *settings: str) -> Path:
    """A config file with one azure source on SUBSCRIPTION, plus ``settings`` (YAML lines)."""
    path = tmp_path / "c.yml"
    lines = [
        "sources:",
        "  - name: azure",
        "    provider: azure_cost_management",
        f"    scope: /subscriptions/{SUBSCRIPTION}",
        *(f"    {line}" for line in settings),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def query_calls(rs: Any) -> list[Any]:
    return [c for c in rs.calls if "/providers/Microsoft.CostManagement/query" in c.request.url]


def by_dims(result: Any) -> dict[tuple[tuple[str, str], ...], tuple[Decimal, str]]:
    return {line.dimensions: (line.amount, line.currency) for line in result.lines}


# -- configuration -------------------------------------------------------------------


def test_registered_under_its_name() -> None:
    assert get_provider("azure_cost_management") is AzureCostManagementProvider
    assert AzureCostManagementProvider.periods_for(make_config()) == {Period.MONTHLY}
    assert AzureCostManagementProvider.default_poll_interval == timedelta(hours=4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scope": "subscription/abc"}, "must be subscriptions/<subscription id>"),
        ({"scope": "providers/Microsoft.Management/managementGroups/x"}, "billingAccounts"),
        (
            {"group_by": ["ServiceName", "ResourceGroup", "SubscriptionId"]},
            "at most two dimensions",
        ),
        ({"group_by": ["ServiceName", "ServiceName"]}, "twice"),
        ({"group_by": ["MeterCategory"]}, "ServiceName"),
        ({"client_secret": None}, "needs client_secret"),
        ({"tenant_id": None, "client_id": None}, "needs tenant_id, client_id"),
        ({"base_url": "http://management.example.test"}, "https"),
        ({"base_url": "https://management.example.test/?x=1"}, "query"),
        ({"authority": "http://login.example.test"}, "https"),
        ({"tenant_id": "bad tenant/"}, "tenant"),
        ({"auth": "managed_identity"}, "client_secret is only used"),
        ({"auth": "managed_identity", "client_secret": None}, "neither tenant_id"),
        ({"token_file": "/var/run/token"}, "token_file is only used"),
        ({"cost_type": "Usage"}, "ActualCost"),
        ({"api_version": "latest"}, "pattern"),
    ],
)
def test_config_rejects(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        make_config(**overrides)
    assert message in str(info.value)


def test_config_scopes_and_defaults() -> None:
    config = make_config(scope=f"subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ml(prod)/")
    assert config.scope == f"subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ml(prod)"
    assert config.scope_kind == "resource group"
    assert config.query_url == (
        f"{BASE}/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ml(prod)"
        "/providers/Microsoft.CostManagement/query"
    )
    account = make_config(
        scope="/providers/Microsoft.Billing/billingAccounts/1234abcd-0000-1111-2222-333344445555:"
        "aaaa0000-bbbb-1111-cccc-2222dddd3333_2019-05-31"
    )
    assert account.scope_kind == "billing account"
    assert make_config(base_url="http://127.0.0.1:8080/").base_url == "http://127.0.0.1:8080"
    assert make_config(base_url="https://management.azure.com").oauth_scope == (
        "https://management.azure.com/.default"
    )
    assert make_config(token_scope="https://management.azure.com/.default").oauth_scope == (
        "https://management.azure.com/.default"
    )
    managed = make_config(
        auth="managed_identity", client_secret=None, tenant_id=None, authority=None
    )
    assert managed.client_id == CLIENT_ID


def test_config_file_reads_secret_file_and_registers_it(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    path = source_file(
        tmp_path, f"tenant_id: {TENANT}", f"client_id: {CLIENT_ID}", "client_secret_file: secret"
    )
    config = load_config(path)
    assert config.sources[0].client_secret == SECRET
    assert SECRET in config.secrets


def test_config_error_is_one_line_without_the_secret(tmp_path: Path) -> None:
    path = source_file(tmp_path, "auth: managed_identity", f"client_secret: {SECRET}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "sources[0]" in str(info.value)
    assert SECRET not in str(info.value)
    assert "\n" not in str(info.value)


def test_query_body_matches_the_api() -> None:
    body = make_config(cost_type="AmortizedCost", group_by=["ResourceGroup", "SubscriptionId"])
    assert body.query_body() == {
        "type": "AmortizedCost",
        "timeframe": "MonthToDate",
        "dataset": {
            "granularity": "None",
            "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
            "grouping": [
                {"type": "Dimension", "name": "ResourceGroup"},
                {"type": "Dimension", "name": "SubscriptionId"},
            ],
        },
    }


# -- parsing ---------------------------------------------------------------------------


def test_parse_reads_rows_through_columns() -> None:
    page = query_page(
        [
            ["USD", "rg-ml", Decimal("12.5"), SUBSCRIPTION],
            ["USD", None, Decimal("0.25"), SUBSCRIPTION],
        ],
        columns=[
            ("Currency", "String"),
            ("ResourceGroupName", "String"),
            ("PreTaxCost", "Number"),
            ("SubscriptionId", "String"),
        ],
    )
    rows = parse_query_result(page, ["ResourceGroup", "SubscriptionId"])
    assert rows == [
        (
            {"x_resource_group_name": "rg-ml", "sub_account_id": SUBSCRIPTION},
            Decimal("12.5"),
            "USD",
        ),
        ({"x_resource_group_name": "", "sub_account_id": SUBSCRIPTION}, Decimal("0.25"), "USD"),
    ]


def test_parse_cost_usd_is_in_usd_whatever_the_currency_column() -> None:
    page = query_page(
        [[Decimal("3.75"), "Virtual Machines", "EUR"]],
        columns=[("CostUSD", "Number"), ("ServiceName", "String"), ("Currency", "String")],
    )
    assert parse_query_result(page, ["ServiceName"], "CostUSD") == [
        ({"service_name": "Virtual Machines"}, Decimal("3.75"), "USD")
    ]


def test_parse_prefers_the_requested_cost_column() -> None:
    page = query_page(
        [[Decimal("3.75"), Decimal("4.10"), "Storage", "EUR"]],
        columns=[("CostUSD", "Number"), *cost_columns("ServiceName")],
    )
    assert parse_query_result(page, ["ServiceName"]) == [
        ({"service_name": "Storage"}, Decimal("4.10"), "EUR")
    ]


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (
            query_page([["Storage", "USD"]], [("ServiceName", "String"), ("Currency", "String")]),
            "no cost column",
        ),
        (
            query_page([[1, "Storage"]], [("Cost", "Number"), ("ServiceName", "String")]),
            "no Currency",
        ),
        (
            query_page([[1, "USD"]], [("Cost", "Number"), ("Currency", "String")]),
            "no ServiceName column",
        ),
        (query_page([[1, "Storage"]]), "does not match the columns"),
        (query_page([["n/a", "Storage", "USD"]]), "not a number"),
        (query_page([[1, "Storage", "US Dollar"]]), "3-letter currency"),
        ([], "not a JSON object"),
    ],
)
def test_parse_rejects_malformed_answers(page: Any, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_query_result(page, ["ServiceName"])


def test_parse_empty_month() -> None:
    assert parse_query_result(query_page([]), ["ServiceName"]) == []
    assert parse_query_result({"properties": None}, ["ServiceName"]) == []


# -- polling -----------------------------------------------------------------------------


def test_poll_follows_next_link_with_the_same_body(rs: Any) -> None:
    mock_login(rs)
    second = f"{QUERY_URL}?api-version=2023-11-01&$skiptoken=AQAAAA%3D%3D"
    rs.post(
        QUERY_URL,
        json=query_page([[19.54, "Storage", "USD"], [0.1, "Bandwidth", "USD"]], next_link=second),
    )
    rs.post(
        second,
        json=query_page([[120.0, "Virtual Machines", "USD"], [0.2, "Bandwidth", "USD"]]),
    )
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


def test_two_groupings_and_currencies(rs: Any) -> None:
    mock_login(rs)
    rs.post(
        QUERY_URL,
        json=query_page(
            [
                [10, "Storage", SUBSCRIPTION, "EUR"],
                [2.5, "Storage", "99999999-1111-2222-3333-444444444444", "EUR"],
                [7, "Storage", SUBSCRIPTION, "USD"],
            ],
            columns=cost_columns("ServiceName", "SubscriptionId"),
        ),
    )
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


def test_no_content_means_no_spend_yet(rs: Any) -> None:
    mock_login(rs)
    rs.post(QUERY_URL, status=204)
    requests: Counter[str] = Counter()
    result = make_provider(requests).poll(monthly())
    assert result.lines == ()
    assert requests == Counter({"ok": 3})


def test_only_monthly_windows_are_queried(rs: Any) -> None:
    result = make_provider().poll(())
    assert result.lines == ()
    assert len(rs.calls) == 0


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


def test_max_pages_stops_a_runaway_next_link(rs: Any) -> None:
    mock_login(rs)
    rs.post(QUERY_URL, json=query_page([[1, "Storage", "USD"]], next_link=QUERY_URL))
    with pytest.raises(SourceError, match=r"max_pages \(3\)"):
        make_provider(max_pages=3).poll(monthly())
    assert len(query_calls(rs)) == 3


# -- throttling ------------------------------------------------------------------------------


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


# -- errors ---------------------------------------------------------------------------------


def test_forbidden_names_the_role(rs: Any) -> None:
    mock_login(rs)
    refuse_query(
        rs,
        403,
        "AuthorizationFailed",
        f"The client '{CLIENT_ID}' with object id '1c3e8f0a-0000-4444-8888-aaaaaaaaaaaa' "
        "does not have authorization to perform action "
        "'Microsoft.CostManagement/query/action' over scope "
        f"'/subscriptions/{SUBSCRIPTION}' or the scope is invalid.",
    )
    requests: Counter[str] = Counter()
    message = poll_error(requests)
    assert "Cost Management Reader" in message
    assert "Microsoft.CostManagement/query/read" in message
    assert "AuthorizationFailed" in message
    assert f"subscription scope subscriptions/{SUBSCRIPTION}" in message
    assert SECRET not in message and ACCESS_TOKEN not in message
    assert requests == Counter({"ok": 2, "client_error": 1})


def test_forbidden_at_billing_account_names_a_billing_role(rs: Any) -> None:
    mock_login(rs)
    scope = "providers/Microsoft.Billing/billingAccounts/12345678"
    url = f"{BASE}/{scope}/providers/Microsoft.CostManagement/query"
    refuse_query(rs, 403, "RBACAccessDenied", "The user does not have authorization.", url=url)
    assert "Billing account reader" in poll_error(scope=scope)


@pytest.mark.parametrize(
    ("status", "code", "upstream", "overrides", "expected"),
    [
        pytest.param(
            # Cost Management often answers a missing role with 401, not 403.
            401,
            "RBACAccessDenied",
            "The client does not have authorization to perform action. "
            "Request ID: aefe2d4c-3134-4658-b9d1-f6a1b5c96cb2",
            {},
            ["HTTP 401 RBACAccessDenied", "Cost Management Reader"],
            id="rbac_access_denied_401_names_the_role",
        ),
        pytest.param(
            400,
            "AccountCostDisabled",
            "Access to cost data has been disabled for account admins.",
            {},
            ["AO view charges"],
            id="ea_cost_view_disabled_is_explained",
        ),
        pytest.param(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
            {},
            ["HTTP 401", "tenant_id"],
            id="unauthorized_token_is_explained",
        ),
        pytest.param(
            404,
            "SubscriptionNotFound",
            f"The subscription '{SUBSCRIPTION}' could not be found.",
            {},
            [r"was not found .*check scope"],
            id="unknown_scope_is_explained",
        ),
        pytest.param(
            400,
            "BadRequest",
            "Invalid dataset grouping: 'ResourceLocation'.",
            {"group_by": ["ResourceLocation"]},
            [r"refused the query.*Invalid dataset grouping"],
            id="bad_request_shows_the_upstream_reason",
        ),
    ],
)
def test_refused_query_is_explained(
    rs: Any,
    status: int,
    code: str,
    upstream: str,
    overrides: dict[str, Any],
    expected: list[str],
) -> None:
    """Each refusal is a SourceError that matches every ``expected`` pattern and leaks nothing."""
    mock_login(rs)
    refuse_query(rs, status, code, upstream)
    message = poll_error(**overrides)
    for pattern in expected:
        assert re.search(pattern, message), pattern
    assert SECRET not in message and ACCESS_TOKEN not in message


def test_wrong_client_secret(rs: Any) -> None:
    mock_login(
        rs,
        status=401,
        body={
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
            "secret being sent in the request is the client secret value, not the client "
            f"secret ID, for a secret added to app '{CLIENT_ID}'. Trace ID: "
            "0b7c1b8e-2a4c-4d5e-9f00-1a2b3c4d5e6f Correlation ID: "
            "6e5d4c3b-2a19-4f8e-8d7c-6b5a49382716 Timestamp: 2024-05-01 10:00:00Z",
            "error_codes": [7000215],
            "timestamp": "2024-05-01 10:00:00Z",
            "trace_id": "0b7c1b8e-2a4c-4d5e-9f00-1a2b3c4d5e6f",
            "correlation_id": "6e5d4c3b-2a19-4f8e-8d7c-6b5a49382716",
        },
    )
    requests: Counter[str] = Counter()
    message = poll_error(requests)
    assert "Microsoft Entra ID refused" in message
    assert "AADSTS7000215" in message
    assert "Trace ID" not in message
    assert SECRET not in message
    assert query_calls(rs) == []
    assert requests == Counter({"ok": 1, "client_error": 1})


def test_unknown_tenant(rs: Any) -> None:
    rs.get(
        f"{AUTHORITY}/{TENANT}/v2.0/.well-known/openid-configuration",
        status=400,
        json={
            "error": "invalid_tenant",
            "error_description": f"AADSTS90002: Tenant '{TENANT}' not found.",
        },
    )
    with pytest.raises(SourceError, match=r"Microsoft Entra ID refused.*authority configuration"):
        make_provider().poll(monthly())


def test_login_unreachable_is_counted_as_network(rs: Any) -> None:
    requests: Counter[str] = Counter()  # nothing registered: responses refuses every call
    with pytest.raises(SourceError, match=f"could not reach Microsoft Entra ID at {AUTHORITY}"):
        make_provider(requests, ctx={"retries": 0}).poll(monthly())
    assert requests == Counter({"network": 1})


def test_missing_azure_identity_fails_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "azure.identity", None)  # as if not installed
    path = source_file(tmp_path, "auth: managed_identity")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).endswith(
        "sources[0]: provider azure_cost_management needs azure-identity: "
        "install the azure extra: pip install 'budget-exporter[azure]'"
    )


def test_configuration_check_imports_no_azure_sdk(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = source_file(tmp_path, "auth: managed_identity")
    code = (
        "import sys\n"
        "from budget_exporter.config import load_config\n"
        f"assert load_config({str(path)!r}).sources[0].auth == 'managed_identity'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('azure.', 'msal'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_azure_identity_broken_after_loading_fails_the_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    provider = make_provider()  # the configuration was fine
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # import now fails
    with pytest.raises(SourceError, match=r"cannot be imported.*budget-exporter\[azure\]'"):
        provider.poll(monthly())


# -- other credentials --------------------------------------------------------------------


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


def test_workload_identity_without_settings(rs: Any) -> None:
    provider = make_provider(
        auth="workload_identity", client_secret=None, tenant_id=None, client_id=None
    )
    with pytest.raises(SourceError, match="cannot set up Azure workload identity credentials"):
        provider.poll(monthly())
    assert len(rs.calls) == 0


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


# -- the whole exporter ------------------------------------------------------------------------


def _write_config(tmp_path: Path) -> Path:
    (tmp_path / "azure-secret").write_text(SECRET)
    path = tmp_path / "budget-exporter.yml"
    path.write_text(
        f"""
global:
  retries: 1
  retry_backoff: 10ms
  timeout: 5s
sources:
  - name: azure-prod
    provider: azure_cost_management
    scope: /subscriptions/{SUBSCRIPTION}
    group_by: [ServiceName]
    tenant_id: {TENANT}
    client_id: {CLIENT_ID}
    client_secret_file: azure-secret
    authority: {AUTHORITY}
    base_url: {BASE}
budgets:
  - name: azure
    limit: 500
    currency: USD
    sources: [azure-prod]
"""
    )
    return path


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_whole_exporter_exports_azure_spend(
    rs: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mock_login(rs)
    second = f"{QUERY_URL}?api-version=2023-11-01&$skiptoken=AQAAAA%3D%3D"
    rs.post(
        QUERY_URL,
        json=query_page(
            [[19.54, "Storage", "USD"], [100.46, "Virtual Machines", "USD"]], next_link=second
        ),
    )
    rs.post(second, json=query_page([[30, "Azure OpenAI", "USD"]]))
    engine = Engine(load_config(_write_config(tmp_path)))
    assert engine.poll_all_once()
    text = engine.snapshot.rendered.text
    samples = _samples(text)
    source = (("provider", "azure_cost_management"), ("source", "azure-prod"))

    assert (
        samples[
            (
                "budget_spend_amount",
                (("budget", "azure"), ("currency", "USD"), ("period", "monthly")),
            )
        ]
        == 150.0
    )
    assert (
        samples[
            (
                "budget_limit_amount",
                (("budget", "azure"), ("currency", "USD"), ("period", "monthly")),
            )
        ]
        == 500.0
    )
    for service, amount in (
        ("Storage", 19.54),
        ("Virtual Machines", 100.46),
        ("Azure OpenAI", 30.0),
    ):
        labels = tuple(sorted((*source, ("currency", "USD"), ("service_name", service))))
        assert samples[("budget_source_cost_amount", labels)] == amount
    assert samples[("budget_source_up", source)] == 1
    assert samples[("budget_source_api_requests_total", (*source, ("status", "ok")))] == 4
    assert samples[("budget_source_api_requests_total", (*source, ("status", "throttled")))] == 0
    assert samples[("budget_source_poll_interval_seconds", source)] == 4 * 3600
    assert SECRET.encode() not in text and ACCESS_TOKEN.encode() not in text
    assert SECRET not in caplog.text


def test_whole_exporter_keeps_running_when_azure_refuses(
    rs: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mock_login(rs)
    refuse_query(
        rs,
        403,
        "AuthorizationFailed",
        f"The client '{CLIENT_ID}' does not have authorization to perform action "
        "'Microsoft.CostManagement/query/action'.",
    )
    engine = Engine(load_config(_write_config(tmp_path)))
    with caplog.at_level(logging.WARNING):
        assert not engine.poll_all_once()
    samples = _samples(engine.snapshot.rendered.text)
    source = (("provider", "azure_cost_management"), ("source", "azure-prod"))
    assert samples[("budget_source_up", source)] == 0
    assert samples[("budget_source_api_requests_total", (*source, ("status", "client_error")))] == 1
    assert not any(name == "budget_spend_amount" for name, _ in samples)  # no fake zero
    error = engine.live_states()["azure-prod"].last_error or ""
    assert "Cost Management Reader" in error
    assert "Cost Management Reader" in caplog.text
    assert SECRET not in caplog.text and SECRET not in error


def test_example_config_runs_against_mocked_azure(rs: Any, tmp_path: Path) -> None:
    """examples/azure.yml, on the real Azure endpoints (mocked), gives the documented budgets."""
    prod, dev = SUBSCRIPTION, "55555555-6666-7777-8888-999999999999"
    (tmp_path / "secret").write_text(SECRET)
    example = Path(__file__).resolve().parent.parent / "examples" / "azure.yml"
    config = load_config(
        example,
        env={
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_PROD_SUBSCRIPTION_ID": prod,
            "AZURE_DEV_SUBSCRIPTION_ID": dev,
            "AZURE_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
        },
    )
    login = "https://login.microsoftonline.com"
    rs.get(
        f"{login}/{TENANT}/v2.0/.well-known/openid-configuration",
        json={
            "token_endpoint": f"{login}/{TENANT}/oauth2/v2.0/token",
            "authorization_endpoint": f"{login}/{TENANT}/oauth2/v2.0/authorize",
            "issuer": f"{login}/{TENANT}/v2.0",
        },
    )
    rs.post(
        f"{login}/{TENANT}/oauth2/v2.0/token",
        json={"token_type": "Bearer", "expires_in": 3599, "access_token": ACCESS_TOKEN},
    )
    arm = "https://management.azure.com/subscriptions"
    rs.post(
        f"{arm}/{prod}/providers/Microsoft.CostManagement/query",
        json=query_page(
            [
                [1200, "Virtual Machines", "rg-web", "USD"],
                [150.25, "Azure OpenAI", "rg-ml", "USD"],
                [80, "Storage", "rg-ml-data", "USD"],
                [12.5, "Azure Monitor", None, "USD"],
            ],
            columns=cost_columns("ServiceName", "ResourceGroup"),
        ),
    )
    rs.post(
        f"{arm}/{dev}/providers/Microsoft.CostManagement/query",
        json=query_page([[40, "Azure OpenAI", "USD"], [9.75, "Storage", "USD"]]),
    )
    engine = Engine(config)
    assert engine.poll_all_once()
    samples = _samples(engine.snapshot.rendered.text)

    spends = {
        dict(labels)["budget"]: value
        for (name, labels), value in samples.items()
        if name == "budget_spend_amount"
    }
    assert spends == {
        "azure-prod": 1442.75,
        "azure-ml": 230.25,
        "azure-openai": 190.25,
        "azure-total": 1492.5,
    }
    bodies = {
        call.request.url.split("/subscriptions/")[1].split("/")[0]: json.loads(call.request.body)
        for call in query_calls(rs)
    }
    assert bodies[prod]["type"] == "ActualCost"
    assert bodies[dev]["type"] == "AmortizedCost"
