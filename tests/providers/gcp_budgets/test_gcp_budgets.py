"""gcp_budgets: the real Budget and Cloud Billing clients (REST transport) against `responses`.

The Budget and Cloud Billing APIs' answers are recorded in ``fixtures/`` as their REST
references document them (camelCase, ``units`` as an int64 string, ``nanos``,
``nextPageToken``); tests that need other budgets derive them from the recorded ones in
code.  One test uses the integer enums the server sends back when the client asks for
``enum-encoding=int``.  Credentials are a service-account key generated for the test.
"""

from __future__ import annotations

import copy
import logging
import sys
import textwrap
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import responses

from budget_exporter.accounting.budgets import limit_from_problems
from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.core.model import Period, PollResult
from budget_exporter.core.periods import window_at
from budget_exporter.providers.gcp_budgets import (
    GcpBudgetsConfig,
    GcpBudgetsProvider,
    money,
)
from budget_exporter.runtime.engine import Engine
from tests.support import gcp
from tests.support.fixtures import load_fixture
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture)

ACCOUNT = "01A2B3-C4D5E6-F7A8B9"
BUDGETS = f"https://billingbudgets.googleapis.com/v1/billingAccounts/{ACCOUNT}/budgets"
BILLING = f"https://cloudbilling.googleapis.com/v1/billingAccounts/{ACCOUNT}"
ENUM_INT = {"$alt": "json;enum-encoding=int"}
NOW = datetime(2025, 9, 15, 12, 0, tzinfo=UTC)
TABLE = "billing-admin.billing_export.gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9"


def answer(name):
    """The recorded Budget or Cloud Billing API answer ``name`` (``fixtures/<name>.json``)."""
    return load_fixture("gcp_budgets", name)


# Team A: monthly, 1000.5 USD (units and nanos), one project, thresholds 50 % and 100 % on
# current spend, 90 % without a spend basis, 120 % on forecast.
(TEAM_A,) = answer("budgets_page1")["budgets"]
# Platform: quarterly, 25000 USD, 80 % on current spend.
(PLATFORM,) = answer("budgets_page2")["budgets"]
# Follow last month: monthly, the amount is last period's spend (no figure in the answer).
(LAST_PERIOD,) = answer("budgets_follow_last_period")["budgets"]
ACCOUNT_BODY = answer("billing_account")


def variant(base, **changes):
    """A copy of the recorded budget ``base`` with top-level fields replaced."""
    return {**copy.deepcopy(base), **changes}


def budget_name(budget_id):
    return f"billingAccounts/{ACCOUNT}/budgets/{budget_id}"


def refuse(rsps, url, code, status, message, details=()):
    """The API answers the next GET of ``url`` with a Google error: HTTP ``code``, ``status``."""
    error = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    rsps.add(responses.GET, url, status=code, json={"error": error})


def page_matcher(token=None, size="100"):
    params = {"pageSize": size, **ENUM_INT}
    if token:
        params["pageToken"] = token
    return [responses.matchers.query_param_matcher(params)]


@pytest.fixture
def key_file(tmp_path) -> Path:
    return gcp.write_key_file(tmp_path)


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        # The GAPIC clients sign their own JWTs for service accounts: a token
        # request is possible but not required.
        gcp.add_token_endpoint(rsps, "ya29.test")
        yield rsps
        rsps.remove(responses.POST, gcp.TOKEN_URI)


def add_account(rsps, **changes):
    rsps.add(
        responses.GET,
        BILLING,
        match=[responses.matchers.query_param_matcher(ENUM_INT)],
        json={**ACCOUNT_BODY, **changes},
    )


def add_budget_pages(rsps, *pages):
    """The budgets list answered over ``pages`` (lists of budgets), paged as the recorded
    ``budgets_page1`` and ``budgets_page2``: ``nextPageToken`` ``page-2``, ``page-3``..."""
    for index, items in enumerate(pages):
        body = {"budgets": items}
        if index + 1 < len(pages):
            body["nextPageToken"] = f"page-{index + 2}"
        token = f"page-{index + 1}" if index else None
        rsps.add(responses.GET, BUDGETS, match=page_matcher(token), json=body)


def make(key_file, retries=0, **options):
    options = {"billing_account_id": ACCOUNT, **options}
    return gcp.make_provider(GcpBudgetsProvider, "gcp-budgets", key_file, retries, NOW, **options)


def windows():
    return [window_at(p, NOW) for p in (Period.MONTHLY, Period.QUARTERLY)]


def by_key(result: PollResult):
    return {b.key: b for b in result.budgets}


# -- pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "nanos", "expected"),
    [
        (1000, 500_000_000, Decimal("1000.5")),
        (0, 10_000_000, Decimal("0.01")),
        (-5, -750_000_000, Decimal("-5.75")),
        (123456789012, 1, Decimal("123456789012.000000001")),
    ],
)
def test_money_is_exact(units, nanos, expected):
    assert money(units, nanos) == expected


@pytest.mark.extra("gcp")
def test_config_accepts_prefixed_ids_and_rejects_bad_ones(tmp_path):
    config = GcpBudgetsConfig(
        name="b",
        provider="gcp_budgets",
        billing_account_id=f"billingAccounts/{ACCOUNT.lower()}",
        projects=["projects/shop-prod", "data-lake"],
    )
    assert config.billing_account_id == ACCOUNT
    assert config.projects == ("shop-prod", "data-lake")
    path = tmp_path / "c.yml"
    path.write_text(
        'sources:\n  - name: b\n    provider: gcp_budgets\n    billing_account_id: "0123-ABCD"\n'
    )
    with pytest.raises(ConfigError, match=r"sources\[0\]\.billing_account_id: must look like"):
        load_config(path)


@pytest.mark.extra("gcp")
@pytest.mark.parametrize("field", ["endpoint_url", "billing_endpoint_url"])
def test_plain_http_endpoints_only_to_loopback(tmp_path, field):
    """Both APIs get the bearer token: plain http would send it in clear."""
    source = (
        f"sources:\n  - name: b\n    provider: gcp_budgets\n    billing_account_id: {ACCOUNT}\n"
    )
    path = tmp_path / "c.yml"
    path.write_text(source + f"    {field}: http://billing-proxy.internal:8080\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"sources[0].{field}: must use https (plain http only to a loopback address)" in str(
        err.value
    )
    for url in ("https://billing-proxy.internal:8443", "http://127.0.0.1:8081", "http://[::1]:81"):
        path.write_text(source + f"    {field}: {url}\n")
        assert getattr(load_config(path).sources[0], field) == url


@pytest.mark.extra("gcp")
@pytest.mark.parametrize(
    ("module", "package"),
    [
        ("google.cloud.billing.budgets_v1", "google-cloud-billing-budgets"),
        ("google.cloud.billing_v1", "google-cloud-billing"),
        ("google.auth", "google-auth"),
    ],
)
def test_missing_sdk_fails_the_configuration_naming_the_extra(
    tmp_path, monkeypatch, module, package
):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    path = tmp_path / "c.yml"
    path.write_text(
        f"sources:\n  - name: b\n    provider: gcp_budgets\n    billing_account_id: {ACCOUNT}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).endswith(
        f"sources[0]: provider gcp_budgets needs {package}: "
        "install the gcp extra: pip install 'budget-exporter[gcp]' (source 'b', line 2)"
    )


# -- polls against the mocked APIs --------------------------------------------------------


@pytest.mark.extra("gcp")
def test_budgets_from_every_page_become_provider_budgets(mock, key_file):
    add_account(mock)
    add_budget_pages(mock, [TEAM_A], [PLATFORM])
    provider, counts = make(key_file)
    result = provider.poll(windows())
    provider.close()

    found = by_key(result)
    assert set(found) == {"Team A", "Platform"}
    team = found["Team A"]
    assert (team.period, team.limit, team.currency) == (Period.MONTHLY, Decimal("1000.5"), "USD")
    # current-spend rules below 100 %: lowest warns, highest stops; forecast rules are ignored
    assert (team.warning_ratio, team.stop_ratio) == (0.5, 0.9)
    assert team.actual is None and team.forecast is None  # a GCP budget carries no spend
    platform = found["Platform"]
    assert (platform.period, platform.limit) == (Period.QUARTERLY, Decimal(25000))
    assert (platform.warning_ratio, platform.stop_ratio) == (0.8, None)

    (info,) = [s for s in result.samples if s.name == "budget_source_billing_account_info"]
    assert dict(info.labels) == {
        "billing_account_id": ACCOUNT,
        "billing_account_name": "Acme main billing",
        "currency": "USD",
    }
    assert counts == Counter({"ok": 3})  # account + two budget pages
    assert all("budget-exporter/" in c.request.headers["User-Agent"] for c in mock.calls)


@pytest.mark.extra("gcp")
def test_integer_enums_as_the_server_sends_them(mock, key_file):
    quarterly = dict(PLATFORM, budgetFilter={"calendarPeriod": 2, "creditTypesTreatment": 1})
    quarterly["thresholdRules"] = [
        {"thresholdPercent": 0.6, "spendBasis": 1},
        {"thresholdPercent": 0.7, "spendBasis": 2},
    ]
    add_account(mock)
    add_budget_pages(mock, [quarterly])
    provider, _ = make(key_file)
    (found,) = provider.poll(windows()).budgets
    assert (found.period, found.warning_ratio, found.stop_ratio) == (Period.QUARTERLY, 0.6, None)


@pytest.mark.extra("gcp")
def test_last_period_amount_is_reported_not_guessed(mock, key_file, caplog):
    add_account(mock)
    add_budget_pages(mock, [TEAM_A, LAST_PERIOD])
    provider, _ = make(key_file)
    with caplog.at_level(logging.WARNING, logger="test.gcp_budgets"):
        result = provider.poll(windows())
    follow = by_key(result)["Follow last month"]
    assert follow.limit == 0 and follow.currency == "USD"
    assert "lastPeriodAmount" in caplog.text and "Follow last month" in caplog.text

    # a budget-exporter budget pointing at it is refused with a reason
    config_path = Path(provider.config.credentials_file).parent / "c.yml"
    config_path.write_text(
        textwrap.dedent(
            """\
            sources:
              - name: gcp-budgets
                provider: gcp_budgets
                billing_account_id: 01A2B3-C4D5E6-F7A8B9
            budgets:
              - name: follow
                currency: USD
                limit_from: {source: gcp-budgets, budget: Follow last month}
            """
        )
    )
    problems = limit_from_problems(load_config(config_path), "gcp-budgets", result)
    assert problems == ["budget follow: provider budget 'Follow last month' has no limit"]


@pytest.mark.extra("gcp")
def test_open_ended_custom_periods_are_skipped_and_duplicates_keyed_by_id(mock, key_file, caplog):
    custom = variant(
        PLATFORM,
        name=budget_name("c0ffee00-0000-4000-8000-000000000001"),
        displayName="Launch",
        budgetFilter={
            "creditTypesTreatment": "INCLUDE_ALL_CREDITS",
            "customPeriod": {"startDate": {"year": 2025, "month": 9, "day": 1}},
        },
        amount={"specifiedAmount": {"currencyCode": "USD", "units": "5000"}},
        thresholdRules=[],
    )
    twin = variant(TEAM_A, name=budget_name("1d2e3f40-5a6b-4c7d-8e9f-0a1b2c3d4e5f"))
    add_account(mock)
    add_budget_pages(mock, [TEAM_A, twin, custom])
    provider, _ = make(key_file)
    with caplog.at_level(logging.WARNING, logger="test.gcp_budgets"):
        result = provider.poll(windows())
    assert set(by_key(result)) == {
        "6f1c9e12-8a2b-4c3d-9e4f-5a6b7c8d9e0f",
        "1d2e3f40-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    }
    assert "custom period with no end date" in caplog.text
    assert "shares its display name" in caplog.text


@pytest.mark.extra("gcp")
def test_custom_period_budget_is_imported_with_its_days(mock, key_file, tmp_path):
    (launch,) = answer("budgets_custom_period")["budgets"]
    add_account(mock)
    add_budget_pages(mock, [TEAM_A, launch])
    provider, _ = make(key_file)
    found = by_key(provider.poll(windows()))["Launch campaign"]
    # 15 August to 14 November 2025, both days counted
    assert found.period == Period("2025-08-15/2025-11-14")
    assert found.period.days == (date(2025, 8, 15), date(2025, 11, 14))
    window = window_at(found.period, NOW)
    assert (window.start, window.end) == (
        datetime(2025, 8, 15, tzinfo=UTC),
        datetime(2025, 11, 15, tzinfo=UTC),
    )
    assert (found.limit, found.currency) == (Decimal("12000.25"), "USD")
    assert (found.warning_ratio, found.stop_ratio) == (0.5, 0.9)

    # a budget over the same days takes its limit; one over other days is told why not
    config_path = tmp_path / "c.yml"
    config_path.write_text(
        textwrap.dedent(
            f"""\
            sources:
              - name: gcp-budgets
                provider: gcp_budgets
                billing_account_id: {ACCOUNT}
                credentials_file: {key_file}
            budgets:
              - name: launch
                currency: USD
                period: custom
                start: 2025-08-15
                end: 2025-11-14
                limit_from: {{source: gcp-budgets, budget: Launch campaign}}
              - name: launch-late
                currency: USD
                start: 2025-08-16
                end: 2025-11-14
                limit_from: {{source: gcp-budgets, budget: Launch campaign}}
            """
        )
    )
    result = PollResult(budgets=(found,))
    assert limit_from_problems(load_config(config_path), "gcp-budgets", result) == [
        "budget launch-late: provider budget 'Launch campaign' is 2025-08-15/2025-11-14, "
        "not 2025-08-16/2025-11-14"
    ]


@pytest.mark.extra("gcp")
def test_missing_budget_currency_falls_back_to_the_account(mock, key_file):
    bare = variant(
        PLATFORM,
        name=budget_name("e1"),
        displayName="EU team",
        budgetFilter={"creditTypesTreatment": "INCLUDE_ALL_CREDITS", "calendarPeriod": "MONTH"},
        amount={"specifiedAmount": {"units": "800"}},  # no currencyCode
        thresholdRules=[],
    )
    add_account(mock, currencyCode="EUR")
    add_budget_pages(mock, [bare])
    provider, _ = make(key_file)
    (found,) = provider.poll(windows()).budgets
    assert (found.limit, found.currency) == (Decimal(800), "EUR")


@pytest.mark.extra("gcp")
def test_configured_projects_are_checked_against_the_account(mock, key_file, caplog):
    add_account(mock)
    add_budget_pages(mock, [TEAM_A])
    projects = f"{BILLING}/projects"
    # shop-prod billed, sandbox on the account with billing disabled; then data-lake billed.
    first = answer("projects_page1")
    mock.add(responses.GET, projects, match=page_matcher(), json=first)
    mock.add(
        responses.GET,
        projects,
        match=page_matcher(first["nextPageToken"]),
        json=answer("projects_page2"),
    )
    provider, counts = make(key_file, projects=["shop-prod", "data-lake", "sandbox", "elsewhere-1"])
    with caplog.at_level(logging.WARNING, logger="test.gcp_budgets"):
        result = provider.poll(windows())
    billed = {
        dict(s.labels)["sub_account_id"]: s.value
        for s in result.samples
        if s.name == "budget_source_project_billing_enabled"
    }
    assert billed == {"shop-prod": 1, "data-lake": 1, "sandbox": 0, "elsewhere-1": 0}
    assert "project elsewhere-1 is not billed" in caplog.text
    assert counts == Counter({"ok": 4})


@pytest.mark.extra("gcp")
def test_permission_denied_names_role_and_permission(mock, key_file):
    add_account(mock)
    refuse(mock, BUDGETS, 403, "PERMISSION_DENIED", "The caller does not have permission")
    provider, counts = make(key_file, retries=2)
    text = gcp.poll_error(provider, windows())
    assert "Cloud Billing Budget API answered HTTP 403 PERMISSION_DENIED" in text
    assert "The caller does not have permission" in text
    assert "roles/billing.viewer" in text and "billing.budgets.list" in text
    assert counts == Counter({"ok": 1, "client_error": 1})


@pytest.mark.extra("gcp")
def test_disabled_api_says_to_enable_it(mock, key_file):
    add_account(mock)
    message = (
        "Cloud Billing Budget API has not been used in project 271828182845 before or it is "
        "disabled. Enable it by visiting https://console.developers.google.com/apis/api/"
        "billingbudgets.googleapis.com/overview?project=271828182845 then retry."
    )
    disabled = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "SERVICE_DISABLED",
        "domain": "googleapis.com",
        "metadata": {
            "service": "billingbudgets.googleapis.com",
            "consumer": "projects/271828182845",
        },
    }
    refuse(mock, BUDGETS, 403, "PERMISSION_DENIED", message, [disabled])
    provider, _ = make(key_file)
    with pytest.raises(SourceError, match="enable the API") as err:
        provider.poll(windows())
    assert "has not been used in project 271828182845" in str(err.value)


@pytest.mark.extra("gcp")
def test_unknown_billing_account(mock, key_file):
    refuse(mock, BILLING, 404, "NOT_FOUND", "Requested entity was not found.")
    provider, counts = make(key_file)
    text = gcp.poll_error(provider, windows())
    assert "Cloud Billing API answered HTTP 404 NOT_FOUND" in text
    assert "check billing_account_id" in text
    assert counts == Counter({"client_error": 1})


@pytest.mark.extra("gcp")
def test_server_errors_are_retried(mock, key_file):
    refuse(mock, BILLING, 503, "UNAVAILABLE", "The service is currently unavailable.")
    add_account(mock)
    add_budget_pages(mock, [TEAM_A])
    provider, counts = make(key_file, retries=1)
    assert [b.key for b in provider.poll(windows()).budgets] == ["Team A"]
    assert counts == Counter({"server_error": 1, "ok": 2})


@pytest.mark.extra("gcp")
def test_endpoint_overrides_for_both_apis(mock, key_file):
    mock.add(
        responses.GET,
        f"http://127.0.0.1:8081/v1/billingAccounts/{ACCOUNT}",
        json=ACCOUNT_BODY,
    )
    mock.add(
        responses.GET,
        f"http://127.0.0.1:8082/v1/billingAccounts/{ACCOUNT}/budgets",
        json={"budgets": [TEAM_A]},
    )
    provider, counts = make(
        key_file,
        billing_endpoint_url="http://127.0.0.1:8081",
        endpoint_url="http://127.0.0.1:8082/",
    )
    assert [b.key for b in provider.poll(windows()).budgets] == ["Team A"]
    assert counts == Counter({"ok": 2})


@pytest.mark.extra("gcp")
def test_quota_project_is_sent(mock, key_file):
    add_account(mock)
    add_budget_pages(mock, [TEAM_A])
    provider, _ = make(key_file, quota_project="finops-quota")
    provider.poll(windows())
    assert all(c.request.headers.get("x-goog-user-project") == "finops-quota" for c in mock.calls)


# -- the whole exporter --------------------------------------------------------------------


@pytest.mark.extra("gcp")
def test_whole_exporter_takes_the_limit_from_gcp_and_spend_from_the_export(
    mock, key_file, tmp_path
):
    add_account(mock)
    add_budget_pages(mock, [TEAM_A, PLATFORM])
    # The export's month: shop-prod's Compute Engine 600.25, data-lake's BigQuery 99.75.
    mock.add(
        responses.POST,
        "https://bigquery.googleapis.com/bigquery/v2/projects/billing-admin/queries",
        json=load_fixture("gcp_billing_export", "jobs_query_two_projects"),
    )
    path = tmp_path / "config.yml"
    path.write_text(
        textwrap.dedent(
            f"""\
            global:
              retries: 0
            sources:
              - name: gcp-billing
                provider: gcp_billing_export
                table: {TABLE}
                credentials_file: {key_file}
              - name: gcp-budgets
                provider: gcp_budgets
                billing_account_id: {ACCOUNT}
                credentials_file: {key_file}
            budgets:
              - name: team-a
                currency: USD
                limit_from: {{source: gcp-budgets, budget: Team A}}
                sources: [gcp-billing]
                match: {{sub_account_id: shop-prod}}
            """
        )
    )
    engine = Engine(load_config(path), clock=NOW.timestamp)
    assert engine.poll_all_once()
    samples = gcp.engine_samples(engine)
    team = (("budget", "team-a"), ("currency", "USD"), ("period", "monthly"))
    assert samples[("budget_limit_amount", team)] == 1000.5
    assert samples[("budget_spend_amount", team)] == 600.25
    assert samples[("budget_warning_threshold_ratio", team)] == 0.5
    assert samples[("budget_stop_threshold_ratio", team)] == 0.9
    assert samples[("budget_usage_ratio", team)] == pytest.approx(600.25 / 1000.5)
    assert (
        samples[
            (
                "budget_source_cost_amount",
                (
                    ("currency", "USD"),
                    ("period", "monthly"),
                    ("provider", "gcp_billing_export"),
                    ("service_name", "Compute Engine"),
                    ("source", "gcp-billing"),
                    ("sub_account_id", "shop-prod"),
                ),
            )
        ]
        == 600.25
    )
    # Both feed the budget: the export its spend (a line passes the match), the
    # provider budget its limit.
    feeds = {
        dict(labels)["source"]
        for (name, labels) in samples
        if name == "budget_source_info" and dict(labels)["budget"] == "team-a"
    }
    assert feeds == {"gcp-billing", "gcp-budgets"}
    for source, provider, requests in (
        ("gcp-budgets", "gcp_budgets", 2),
        ("gcp-billing", "gcp_billing_export", 1),
    ):
        labels = (("provider", provider), ("source", source))
        assert samples[("budget_source_up", labels)] == 1
        assert (
            samples[("budget_source_api_requests_total", (*labels, ("status", "ok")))] == requests
        )
    assert (
        samples[
            (
                "budget_source_billing_account_info",
                (
                    ("billing_account_id", ACCOUNT),
                    ("billing_account_name", "Acme main billing"),
                    ("currency", "USD"),
                    ("provider", "gcp_budgets"),
                    ("source", "gcp-budgets"),
                ),
            )
        ]
        == 1
    )


@pytest.mark.extra("gcp")
def test_a_budgets_source_does_not_block_daily_budgets_over_all_sources(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(
        textwrap.dedent(
            f"""\
            sources:
              - name: gcp-budgets
                provider: gcp_budgets
                billing_account_id: {ACCOUNT}
              - name: invoices
                provider: static
                amount: 5
                currency: USD
            budgets:
              - name: daily
                limit: 50
                currency: USD
                period: daily
                sources: ["*"]
            """
        )
    )
    config = load_config(path)
    assert Period.DAILY in config.periods(config.sources[0])
