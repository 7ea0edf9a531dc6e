"""gcp_billing_export: the real google-cloud-bigquery client against `responses` mocks.

Credentials are a service-account key generated for the test (its token
endpoint is mocked too), so the real auth path runs and nothing reaches Google.

BigQuery's answers are recorded in ``fixtures/`` as its REST reference describes them
(``jobs.query``, ``jobs.get``, ``jobs.getQueryResults``): the columns the provider's query
selects, rows as ``{"f": [{"v": ...}]}`` with every value a string, ``totalRows`` as an
int64 string, TIMESTAMPs in microseconds (the client asks for ``useInt64Timestamp``).
The month's rows: shop-prod's Compute Engine 812.4312 and Cloud Storage 40.01 (exported an
hour earlier), data-lake's BigQuery 377.5, and an account-level Support credit of -12.25.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import responses

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.core.model import Period, Window
from budget_exporter.core.periods import window_at
from budget_exporter.providers.gcp_billing_export import (
    GcpBillingExportConfig,
    GcpBillingExportProvider,
    build_query,
    invoice_month,
    partition_start,
)
from budget_exporter.runtime.engine import Engine
from tests.support import gcp
from tests.support.fixtures import load_fixture
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture)
from tests.support.paths import ROOT

ACCESS_TOKEN = "ya29.test-access-token"
TABLE = "billing-admin.billing_export.gcp_billing_export_v1_0A1B2C_3D4E5F_6A7B8C"
BQ = "https://bigquery.googleapis.com/bigquery/v2/projects/billing-admin"
NOW = datetime(2025, 9, 15, 12, 0, tzinfo=UTC)


def answer(name):
    """The recorded BigQuery answer ``name`` (``fixtures/<name>.json``)."""
    return load_fixture("gcp_billing_export", name)


def error_body(code, status, reason, message):
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }
    }


def refuse_query(rsps, code, status, reason, message):
    """BigQuery answers the next jobs.query with HTTP ``code`` and its error body."""
    rsps.add(
        responses.POST, f"{BQ}/queries", status=code, json=error_body(code, status, reason, message)
    )


@pytest.fixture
def key_info():
    return gcp.service_account_info()


@pytest.fixture
def key_file(tmp_path, key_info) -> Path:
    return gcp.write_key_file(tmp_path, key_info)


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        gcp.add_token_endpoint(rsps, ACCESS_TOKEN)
        yield rsps


def api_calls(rsps):
    return [c for c in rsps.calls if not c.request.url.startswith(gcp.TOKEN_URI)]


def make(key_file, retries=0, **options):
    options = {"table": TABLE, "location": "US", **options}
    return gcp.make_provider(
        GcpBillingExportProvider, "gcp-billing", key_file, retries, NOW, **options
    )


def september():
    return [window_at(Period.MONTHLY, NOW)]


# -- pure parts ------------------------------------------------------------------------


def test_invoice_month_follows_the_utc_window():
    assert invoice_month(window_at(Period.MONTHLY, NOW)) == "202509"
    first_hours = datetime(2025, 10, 1, 3, 0, tzinfo=UTC)  # still Sep 30 in Pacific time
    assert invoice_month(window_at(Period.MONTHLY, first_hours)) == "202510"
    assert invoice_month(window_at(Period.MONTHLY, datetime(2026, 1, 31, tzinfo=UTC))) == "202601"


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        # 2025-09-01 00:00 PDT is 07:00 UTC: the UTC day is Sep 1, minus a day of margin.
        ("America/Los_Angeles", datetime(2025, 8, 31, tzinfo=UTC)),
        ("UTC", datetime(2025, 8, 31, tzinfo=UTC)),
        # 2025-09-01 00:00 JST is Aug 31 15:00 UTC.
        ("Asia/Tokyo", datetime(2025, 8, 30, tzinfo=UTC)),
    ],
)
def test_partition_start_uses_the_account_time_zone(zone, expected):
    assert partition_start("202509", zone) == expected


@pytest.mark.extra("gcp")
def test_query_shape_follows_the_options():
    config = GcpBillingExportConfig(name="g", provider="gcp_billing_export", table=TABLE)
    sql = build_query(config)
    assert f"FROM `{TABLE}`" in sql
    assert "invoice.month = @invoice_month" in sql
    assert "_PARTITIONTIME >= @partition_start" in sql
    assert "UNNEST(credits)" in sql
    assert "GROUP BY project_id, service_description, currency" in sql
    assert "cost_type" not in sql  # every cost type counts, as on the invoice
    bare = build_query(
        config.model_copy(update={"include_credits": False, "partition_filter": False})
    )
    assert "UNNEST(credits)" not in bare
    assert "_PARTITIONTIME" not in bare


@pytest.mark.extra("gcp")
@pytest.mark.parametrize(
    ("table", "normalised"),
    [
        (f"`{TABLE}`", TABLE),
        (
            "example.com:billing-admin.billing.gcp_billing_export_v1_X",
            "example.com:billing-admin.billing.gcp_billing_export_v1_X",
        ),
        (
            "billing-admin:billing.gcp_billing_export_v1_X",
            "billing-admin.billing.gcp_billing_export_v1_X",
        ),
    ],
)
def test_table_forms(table, normalised):
    config = GcpBillingExportConfig(name="g", provider="gcp_billing_export", table=table)
    assert config.table == normalised


def billing_source(key_file) -> str:
    """The gcp-billing source of the whole-exporter tests, as a YAML list item."""
    return textwrap.dedent(
        f"""\
        - name: gcp-billing
          provider: gcp_billing_export
          table: {TABLE}
          credentials_file: {key_file}
        """
    )


def write_config(tmp_path, source: str, extra: str = "") -> Path:
    path = tmp_path / "config.yml"
    path.write_text(
        textwrap.dedent(
            """\
            global:
              retries: 0
              retry_backoff: 1s
            sources:
            """
        )
        + textwrap.indent(textwrap.dedent(source), "  ")
        + extra
    )
    return path


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ("table: billing.gcp_billing_export_v1_X", "table", "project.dataset.table"),
        ("table: bad!project.ds.t", "table", "not a valid project ID"),
        ("time_zone: Pacific/Nowhere", "time_zone", "unknown time zone"),
        ("maximum_bytes_billed: 1000", "maximum_bytes_billed", "greater than or equal"),
        ("endpoint_url: ftp://x", "endpoint_url", "URL starting with http:// or https://"),
        # The bearer token goes with every request: plain http only to loopback.
        ("endpoint_url: http://bigquery.example.com", "endpoint_url", "must use https"),
        ("endpoint_url: http://10.0.0.7:9050", "endpoint_url", "must use https"),
    ],
)
def test_config_errors_are_one_line(tmp_path, line, field, words):
    base = {"table": f"table: {TABLE}"}
    key = line.split(":", 1)[0]
    body = {**base, key: line}
    source = "- name: gcp\n  provider: gcp_billing_export\n" + "".join(
        f"  {v}\n" for v in body.values()
    )
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, source))
    message = str(err.value)
    assert "\n" not in message
    assert f"sources[0].{field}" in message
    assert words in message


@pytest.mark.extra("gcp")
def test_loopback_and_https_endpoints_are_accepted():
    for url in ("https://bigquery.example.com", "http://127.0.0.1:9050", "http://localhost:9050"):
        config = GcpBillingExportConfig(
            name="g", provider="gcp_billing_export", table=TABLE, endpoint_url=url
        )
        assert config.endpoint_url == url


@pytest.mark.extra("gcp")
def test_sdk_is_not_imported_to_check_a_configuration(tmp_path):
    """Loading a configuration with both GCP providers checks the SDK is there, importing
    none of it (google.cloud.billing's package alone would load the whole client)."""
    path = write_config(
        tmp_path,
        f"""\
        - name: gcp-billing
          provider: gcp_billing_export
          table: {TABLE}
        - name: gcp-budgets
          provider: gcp_budgets
          billing_account_id: 012345-6789AB-CDEF01
        """,
    )
    code = (
        "import sys\n"
        "from budget_exporter.config.loader import load_config\n"
        f"config = load_config({str(path)!r})\n"
        "assert [s.provider for s in config.sources] == ['gcp_billing_export', 'gcp_budgets']\n"
        "print(sorted(m for m in sys.modules if m.startswith(('google.cloud', 'google.auth', "
        "'google.api_core'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.extra("gcp")
def test_missing_sdk_fails_the_configuration_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        load_config(
            write_config(
                tmp_path, f"- name: gcp\n  provider: gcp_billing_export\n  table: {TABLE}\n"
            )
        )
    assert str(err.value).endswith(
        "config.yml: sources[0]: provider gcp_billing_export needs google-cloud-bigquery: "
        "install the gcp extra: pip install 'budget-exporter[gcp]' (source 'gcp', line 5)"
    )


@pytest.mark.extra("gcp")
def test_sdk_broken_after_loading_fails_the_poll_not_the_exporter(key_file, monkeypatch):
    provider, counts = make(key_file)  # the configuration was fine
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)  # import now fails
    with pytest.raises(
        SourceError, match=r"needs google-cloud-bigquery, which cannot be imported.*\[gcp\]"
    ):
        provider.poll(september())
    assert not counts


# -- polls against the mocked API ---------------------------------------------------------


@pytest.mark.extra("gcp")
def test_poll_sums_net_spend_by_project_and_service(mock, key_file):
    mock.add(responses.POST, f"{BQ}/queries", json=answer("jobs_query"))
    provider, counts = make(key_file)
    result = provider.poll(september())
    provider.close()

    lines = {(ln.dims["sub_account_id"], ln.dims["service_name"]): ln for ln in result.lines}
    assert lines[("shop-prod", "Compute Engine")].amount == Decimal("812.4312")
    assert lines[("data-lake", "BigQuery")].amount == Decimal("377.5")
    assert lines[("", "Support")].amount == Decimal("-12.25")  # account-level row: no project
    assert all(ln.currency == "USD" and ln.period is Period.MONTHLY for ln in result.lines)
    assert sum(ln.amount for ln in result.lines) == Decimal("1217.6912")

    samples = {s.name: s.value for s in result.samples}
    assert samples["budget_source_data_timestamp_seconds"] == 1757928600.0
    assert samples["budget_source_query_processed_bytes"] == 52428800.0
    assert counts == Counter({"ok": 1})

    (call,) = api_calls(mock)
    assert call.request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert "budget-exporter/" in call.request.headers["User-Agent"]
    body = json.loads(call.request.body)
    params = {p["name"]: p["parameterValue"]["value"] for p in body["queryParameters"]}
    assert params == {"invoice_month": "202509", "partition_start": "2025-08-31 00:00:00+00:00"}
    assert body["maximumBytesBilled"] == str(10 * 1024**3)
    assert body["labels"] == {"app": "budget-exporter", "source": "gcp-billing"}
    assert body["location"] == "US"
    assert body["useLegacySql"] is False
    assert "SUM(CAST(cost AS NUMERIC))" in body["query"]


@pytest.mark.extra("gcp")
def test_poll_follows_every_page(mock, key_file):
    first = answer("jobs_query_page1")  # two rows of four, and a pageToken
    mock.add(responses.POST, f"{BQ}/queries", json=first)
    mock.add(responses.GET, f"{BQ}/jobs/job_Qx7f2", json=answer("job_done"))
    mock.add(
        responses.GET,
        f"{BQ}/queries/job_Qx7f2",
        match=[
            responses.matchers.query_param_matcher(
                {"pageToken": first["pageToken"]}, strict_match=False
            )
        ],
        json=answer("get_query_results_page2"),
    )
    provider, counts = make(key_file)
    result = provider.poll(september())
    assert len(result.lines) == 4
    assert sum(ln.amount for ln in result.lines) == Decimal("1217.6912")
    assert counts == Counter({"ok": 3})  # jobs.query, jobs.get, getQueryResults page 2


@pytest.mark.extra("gcp")
def test_slow_query_is_waited_for(mock, key_file):
    # jobs.query gives up waiting after timeoutMs: the client polls the job, then reads rows.
    mock.add(responses.POST, f"{BQ}/queries", json=answer("jobs_query_not_complete"))
    mock.add(responses.GET, f"{BQ}/jobs/job_Qx7f2", json=answer("job_running"))
    mock.add(responses.GET, f"{BQ}/jobs/job_Qx7f2", json=answer("job_done"))
    mock.add(responses.GET, f"{BQ}/queries/job_Qx7f2", json=answer("get_query_results"))
    provider, counts = make(key_file)
    result = provider.poll(september())
    assert sum(ln.amount for ln in result.lines) == Decimal("1217.6912")
    assert counts["ok"] == len(api_calls(mock)) >= 3


@pytest.mark.extra("gcp")
def test_empty_month_gives_no_lines_and_no_freshness(mock, key_file):
    mock.add(responses.POST, f"{BQ}/queries", json=answer("jobs_query_empty"))  # no rows key
    provider, _ = make(key_file)
    result = provider.poll(september())
    assert result.lines == ()
    assert [s.name for s in result.samples] == ["budget_source_query_processed_bytes"]


@pytest.mark.extra("gcp")
def test_permission_denied_names_the_roles(mock, key_file):
    message = (
        "Access Denied: Project billing-admin: User does not have bigquery.jobs.create "
        "permission in project billing-admin."
    )
    refuse_query(mock, 403, "PERMISSION_DENIED", "accessDenied", message)
    provider, counts = make(key_file, retries=3)
    text = gcp.poll_error(provider, september())
    assert "BigQuery answered HTTP 403 PERMISSION_DENIED" in text
    assert "bigquery.jobs.create" in text
    assert "roles/bigquery.jobUser" in text and "roles/bigquery.dataViewer" in text
    assert "https://" not in text
    assert counts == Counter({"client_error": 1})  # not retried


@pytest.mark.extra("gcp")
def test_table_not_found_is_a_clear_source_error(mock, key_file):
    message = (
        "Not found: Table billing-admin:billing_export.gcp_billing_export_v1_0A1B2C_3D4E5F_6A7B8C "
        "was not found in location US"
    )
    refuse_query(mock, 404, "NOT_FOUND", "notFound", message)
    provider, counts = make(key_file)
    text = gcp.poll_error(provider, september())
    assert "HTTP 404" in text and "was not found in location US" in text
    assert "check table" in text
    assert counts == Counter({"client_error": 1})


@pytest.mark.extra("gcp")
def test_bytes_billed_cap_explains_itself(mock, key_file):
    message = "Query exceeded limit for bytes billed: 10485760. 20971520 or higher required."
    refuse_query(mock, 400, "INVALID_ARGUMENT", "bytesBilledLimitExceeded", message)
    provider, _ = make(key_file, maximum_bytes_billed=10 * 1024**2)
    with pytest.raises(SourceError, match="raise maximum_bytes_billed"):
        provider.poll(september())


@pytest.mark.extra("gcp")
def test_transient_errors_are_retried_and_counted(mock, key_file):
    refuse_query(mock, 403, "PERMISSION_DENIED", "rateLimitExceeded", "Exceeded rate limits")
    refuse_query(mock, 503, "UNAVAILABLE", "backendError", "Backend error")
    mock.add(responses.POST, f"{BQ}/queries", json=answer("jobs_query"))
    provider, counts = make(key_file, retries=2)
    result = provider.poll(september())
    assert len(result.lines) == 4
    assert counts == Counter({"throttled": 1, "server_error": 1, "ok": 1})


@pytest.mark.extra("gcp")
def test_rate_limit_after_the_retries_is_not_called_a_permission_problem(mock, key_file):
    refuse_query(mock, 403, "PERMISSION_DENIED", "rateLimitExceeded", "Exceeded rate limits")
    provider, counts = make(key_file, retries=0)
    text = gcp.poll_error(provider, september())
    assert "still rate-limited" in text
    assert "roles/" not in text
    assert counts == Counter({"throttled": 1})


@pytest.mark.extra("gcp")
def test_unreachable_endpoint_fails_fast(mock, key_file):
    # Nothing is mocked at this endpoint: responses refuses the connection.
    provider, counts = make(key_file, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(SourceError, match="BigQuery could not be reached"):
        provider.poll(september())
    assert counts == Counter({"network": 1})


@pytest.mark.extra("gcp")
@pytest.mark.parametrize(
    ("options", "url"),
    [
        pytest.param(
            {"endpoint_url": "http://127.0.0.1:9050"},
            "http://127.0.0.1:9050/bigquery/v2/projects/billing-admin/queries",
            id="endpoint_override",
        ),
        pytest.param(
            {"project": "finops-jobs"},
            "https://bigquery.googleapis.com/bigquery/v2/projects/finops-jobs/queries",
            id="job_project_can_differ_from_the_table_project",
        ),
    ],
)
def test_query_goes_where_configured(mock, key_file, options, url):
    mock.add(responses.POST, url, json=answer("jobs_query"))
    provider, counts = make(key_file, **options)
    assert len(provider.poll(september()).lines) == 4
    assert counts == Counter({"ok": 1})


@pytest.mark.extra("gcp")
def test_rejected_credentials_never_leak_the_key(mock, key_file, key_info):
    mock.replace(
        responses.POST,
        gcp.TOKEN_URI,
        status=400,
        json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
    )
    provider, _ = make(key_file)
    text = gcp.poll_error(provider, september())
    assert "rejected the credentials" in text and "invalid_grant" in text
    assert key_info["private_key"].splitlines()[1] not in text
    assert not api_calls(mock)


@pytest.mark.extra("gcp")
def test_unreadable_credentials_file(tmp_path):
    provider, _ = make(tmp_path / "missing.json")
    with pytest.raises(SourceError, match=r"cannot read credentials_file .*missing\.json"):
        provider.poll(september())


@pytest.mark.extra("gcp")
@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not json", "is not JSON"),
        ('{"type": "authorized_user", "refresh_token": "1//0secret"}', "not a service-account key"),
        (None, "not a usable service-account key"),
    ],
)
def test_unusable_credentials_file(tmp_path, key_info, content, words):
    if content is None:  # a service-account key whose private key is damaged
        broken = dict(key_info, private_key=key_info["private_key"].replace("M", "!"))
        content = json.dumps(broken)
    path = tmp_path / "key.json"
    path.write_text(content)
    provider, _ = make(path)
    with pytest.raises(SourceError, match=words) as err:
        provider.poll(september())
    assert "1//0secret" not in str(err.value)
    assert "PRIVATE KEY" not in str(err.value)


@pytest.mark.extra("gcp")
def test_application_default_credentials(mock, key_file, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    mock.add(responses.POST, f"{BQ}/queries", json=answer("jobs_query"))
    provider, _ = make(key_file)
    provider.config = provider.config.model_copy(update={"credentials_file": None})
    assert len(provider.poll(september()).lines) == 4
    assert api_calls(mock)[0].request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"


@pytest.mark.extra("gcp")
def test_no_credentials_at_all(mock, key_file, monkeypatch, tmp_path):
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # never probe a metadata server
    provider, _ = make(key_file)
    provider.config = provider.config.model_copy(update={"credentials_file": None})
    with pytest.raises(SourceError, match="no Google credentials found"):
        provider.poll(september())


@pytest.mark.extra("gcp")
def test_other_periods_are_not_polled(key_file):
    provider, counts = make(key_file)
    daily = Window(Period.DAILY, NOW.replace(hour=0), NOW.replace(hour=0) + timedelta(days=1))
    assert provider.poll([daily]).lines == ()
    assert not counts


@pytest.mark.extra("gcp")
def test_fiscal_and_weekly_windows_select_their_months_and_days(mock, key_file):
    for _ in range(4):
        mock.add(responses.POST, f"{BQ}/queries", json=answer("jobs_query"))
    provider, counts = make(key_file)
    # Monday 15 September 2025: fiscal quarter from February (August to October), the
    # ISO week from 15 September, a range of days over, and one not begun.
    windows = [
        window_at(Period(p), NOW)
        for p in ("quarterly-february", "weekly", "2025-08-10/2025-08-20", "2025-10-01/2025-10-31")
    ]
    result = provider.poll(windows)
    provider.close()
    bodies = [json.loads(c.request.body) for c in api_calls(mock)]
    assert len(bodies) == 3  # the range not begun asks nothing
    params = [
        {p["name"]: p["parameterValue"]["value"] for p in body["queryParameters"]}
        for body in bodies
    ]
    assert params[0] == {
        "first_month": "202508",
        "last_month": "202510",
        "partition_start": "2025-07-31 00:00:00+00:00",
    }
    assert "invoice.month BETWEEN @first_month AND @last_month" in bodies[0]["query"]
    assert params[1] == {
        "usage_start": "2025-09-15 00:00:00+00:00",
        "usage_end": "2025-09-15 12:00:00+00:00",  # up to now
        "partition_start": "2025-09-14 00:00:00+00:00",
    }
    assert params[2] == {
        "usage_start": "2025-08-10 00:00:00+00:00",
        "usage_end": "2025-08-21 00:00:00+00:00",  # the last day counts
        "partition_start": "2025-08-09 00:00:00+00:00",
    }
    usage = "usage_start_time >= @usage_start AND usage_start_time < @usage_end"
    assert usage in bodies[1]["query"]
    totals = {
        str(period): sum(ln.amount for ln in result.lines if ln.period == period)
        for period in {ln.period for ln in result.lines}
    }
    assert totals == {
        "quarterly-february": Decimal("1217.6912"),
        "weekly": Decimal("1217.6912"),
        "2025-08-10/2025-08-20": Decimal("1217.6912"),
    }
    samples = {s.name: s.value for s in result.samples}
    assert samples["budget_source_query_processed_bytes"] == 3 * 52428800.0  # all three
    assert counts == Counter({"ok": 3})


# -- the whole exporter --------------------------------------------------------------------


@pytest.mark.extra("gcp")
def test_whole_exporter_exports_gcp_spend(mock, key_file, tmp_path):
    mock.add(responses.POST, f"{BQ}/queries", json=answer("jobs_query"))
    path = write_config(
        tmp_path,
        billing_source(key_file),
        textwrap.dedent(
            """\
            budgets:
              - name: gcp
                limit: 2000
                currency: USD
                sources: [gcp-billing]
              - name: shop
                limit: 1000
                currency: USD
                sources: [gcp-billing]
                match: {sub_account_id: shop-prod}
            """
        ),
    )
    engine = Engine(load_config(path), clock=NOW.timestamp)
    assert engine.poll_all_once()
    samples = gcp.engine_samples(engine)

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value(
        "budget_spend_amount", budget="gcp", currency="USD", period="monthly"
    ) == pytest.approx(1217.6912)
    assert value(
        "budget_spend_amount", budget="shop", currency="USD", period="monthly"
    ) == pytest.approx(852.4412)
    assert value(
        "budget_source_cost_amount",
        source="gcp-billing",
        provider="gcp_billing_export",
        currency="USD",
        period="monthly",
        sub_account_id="data-lake",
        service_name="BigQuery",
    ) == pytest.approx(377.5)
    assert value("budget_source_up", source="gcp-billing", provider="gcp_billing_export") == 1
    assert (
        value(
            "budget_source_api_requests_total",
            source="gcp-billing",
            provider="gcp_billing_export",
            status="ok",
        )
        == 1
    )
    assert (
        value(
            "budget_source_data_timestamp_seconds",
            source="gcp-billing",
            provider="gcp_billing_export",
        )
        == 1757928600.0
    )
    assert (
        value(
            "budget_source_poll_interval_seconds",
            source="gcp-billing",
            provider="gcp_billing_export",
        )
        == 4 * 3600
    )


@pytest.mark.extra("gcp")
def test_whole_exporter_survives_a_failing_gcp_source(mock, key_file, tmp_path):
    refuse_query(
        mock, 404, "NOT_FOUND", "notFound", "Not found: Dataset billing-admin:billing_export"
    )
    path = write_config(
        tmp_path,
        billing_source(key_file)
        + textwrap.dedent(
            """\
            - name: invoices
              provider: static
              amount: 10
              currency: USD
            """
        ),
    )
    engine = Engine(load_config(path), clock=NOW.timestamp)
    assert not engine.poll_all_once()
    text = engine.snapshot.rendered.text.decode()
    assert 'budget_source_up{provider="gcp_billing_export",source="gcp-billing"} 0.0' in text
    assert 'budget_source_up{provider="static",source="invoices"} 1.0' in text
    state = engine.live_states()["gcp-billing"]
    assert "HTTP 404" in state.last_error and "check table" in state.last_error


@pytest.mark.extra("gcp")
def test_example_config_is_valid():
    env = {
        "GCP_BILLING_ACCOUNT": "01A2B3-C4D5E6-F7A8B9",
        "GCP_BILLING_ACCOUNT_UNDERSCORED": "01A2B3_C4D5E6_F7A8B9",
        "GCP_KEY_FILE": "/run/secrets/gcp-key.json",
    }
    example = ROOT / "examples" / "gcp.yml"
    config = load_config(example, env=env)
    providers = {s.name: s.provider for s in config.sources}
    assert providers == {"gcp-billing": "gcp_billing_export", "gcp-budgets": "gcp_budgets"}
    billing = config.sources[0]
    assert billing.table.endswith("gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9")
    assert config.poll_interval(billing) == timedelta(hours=4)
    shop = next(b for b in config.budgets if b.name == "gcp-shop")
    assert shop.limit_from is not None and shop.limit_from.source == "gcp-budgets"
