"""End to end: real-time budgets with a real Prometheus.

A small application (tests/support/spender.py) spends $2 a second through the
metering helper and exports LiteLLM- and OpenTelemetry-GenAI-shaped metrics;
Prometheus scrapes it and the exporter every second and evaluates a copy of
``BudgetStop`` with a short ``for``.  The exporter polls a ``prometheus`` source
every 2 s, joined to an OpenAI Costs API fake that says $400 of a $500 budget is
billed (and to an Anthropic cost-report fake for the OpenTelemetry recipe).

Checked, in one run: the check API denies within 30 s of spend crossing the stop
ratio and BudgetStop fires; when the bill's horizon advances over metered time the
budget's spend changes only by the bill/meter difference for the moved part (the
meter over-counting, then under-counting); the shipped LiteLLM and OpenTelemetry
example sources produce the spend the application recorded; with Prometheus down
the meter is down, the bill still counts, and the check follows ``on_stale``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from budget_exporter.pricing import default_table
from tests.support import (
    PROMETHEUS,
    Service,
    ServiceSet,
    free_port,
    get_json,
    http_get,
    prom_alerts,
    prom_query,
    wait_until,
)
from tests.support.tools import APT_PROMETHEUS, needs_tool

pytestmark = [
    pytest.mark.e2e,
    needs_tool(PROMETHEUS, install=APT_PROMETHEUS),
]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "budget-exporter.rules.yml"
SPENDER = ROOT / "tests" / "support" / "spender.py"
EXAMPLES = ROOT / "examples"
RATE = 2.0  # $ per second through the metering helper
LITELLM = {("gpt-4o", "search"): 0.03, ("claude-sonnet-4", "ads"): 0.02}
"""Per operation (ten a second), as in tests/support/spender.py."""
TOLERANCE = 6.0  # $: a scrape, a poll and PromQL's extrapolation at $2/s


class Billing:
    """OpenAI Costs API and Anthropic cost report fakes, answering from mutable buckets.

    OpenAI: ``{"object": "page", "data": [{"object": "bucket", "start_time",
    "end_time", "results": [{"object": "organization.costs.result", "amount":
    {"value", "currency": "usd"}, "line_item", "project_id"}]}], "has_more",
    "next_page"}``.  Anthropic: ``{"data": [{"starting_at", "ending_at",
    "results": [{"currency", "amount" (cents, a string), ...}]}], "has_more",
    "next_page"}``.  The last bucket is still open (it ends tomorrow); the
    closed ones end where the test says the bill has caught up to.
    """

    def __init__(self) -> None:
        self.openai: list[tuple[datetime, datetime, float]] = []
        self.anthropic: list[tuple[datetime, datetime, float]] = []
        billing = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/v1/organization/costs"):
                    body = billing.openai_page()
                elif self.path.startswith("/v1/organizations/cost_report"):
                    body = billing.anthropic_page()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def openai_page(self) -> dict[str, Any]:
        buckets = [
            {
                "object": "bucket",
                "start_time": int(start.timestamp()),
                "end_time": int(end.timestamp()),
                "results": [
                    {
                        "object": "organization.costs.result",
                        "amount": {"value": amount, "currency": "usd"},
                        "line_item": None,
                        "project_id": "proj_agents",
                    }
                ]
                if amount
                else [],
            }
            for start, end, amount in self.openai
        ]
        return {"object": "page", "data": buckets, "has_more": False, "next_page": None}

    def anthropic_page(self) -> dict[str, Any]:
        def rfc3339(moment: datetime) -> str:
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

        buckets = [
            {
                "starting_at": rfc3339(start),
                "ending_at": rfc3339(end),
                "results": [{"currency": "USD", "amount": f"{amount * 100:.2f}"}] if amount else [],
            }
            for start, end, amount in self.anthropic
        ]
        return {"data": buckets, "has_more": False, "next_page": None}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def example_source(file: str, name: str, url: str) -> dict[str, Any]:
    """A source of a shipped example, pointed at the test's Prometheus."""
    doc = yaml.safe_load((EXAMPLES / file).read_text())
    source = next(s for s in doc["sources"] if s["name"] == name)
    return {**source, "url": url, "poll_interval": "2s"}


def stop_rule(path: Path) -> Path:
    """The shipped BudgetStop rule alone, with `for:` cut to a second."""
    doc = yaml.safe_load(RULES.read_text())
    rule = next(r for g in doc["groups"] for r in g["rules"] if r.get("alert") == "BudgetStop")
    rule["for"] = "1s"
    path.write_text(yaml.safe_dump({"groups": [{"name": "stop", "rules": [rule]}]}))
    return path


@pytest.fixture
def billing() -> Iterator[Billing]:
    fake = Billing()
    yield fake
    fake.close()


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        return json.loads(response.read())


def budget(exporter: Service, name: str) -> dict[str, Any]:
    document = get_json(f"{exporter.url}/api/v1/budgets")
    return next(b for b in document["budgets"] if b["name"] == name)


def check(exporter: Service, name: str, cost: float = 0) -> dict[str, Any]:
    return post_json(f"{exporter.url}/api/v1/check", {"budget": name, "cost": cost})


def source_cost(exporter: Service, source: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    _, body = http_get(f"{exporter.url}/metrics")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "budget_source_cost_amount":
            continue
        for sample in family.samples:
            if sample.labels["source"] == source:
                dims = tuple(
                    sorted(
                        (k, v)
                        for k, v in sample.labels.items()
                        if k not in {"source", "provider", "currency", "period"} and v
                    )
                )
                out[dims] = sample.value
    return out


def app_metric(app: Service, name: str) -> dict[frozenset[tuple[str, str]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    _, body = http_get(f"{app.url}/metrics")
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name
    }


def gauge(exporter: Service, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` served by the exporter whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = http_get(f"{exporter.url}/metrics")
    found = [
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert len(found) <= 1, f"{name}{labels}: {found}"
    return found[0] if found else None


def check_blind_spots(exporter: Service, app: Service) -> None:
    """Where a meter goes wrong without failing (issue 19), against the real Prometheus: the
    bill has $400 settled and $3 in its open bucket, all for project proj_agents."""
    # Two series born in the middle of the meter's range, each first spending $50: the one
    # the metering helper declared at zero counts whole, the other is lost to increase().
    post_json(f"{app.url}/late", {})
    late = wait_until(
        lambda: (b := budget(exporter, "late"))["metered"] >= 49 and b, 20, "the late $50"
    )
    # increase() extrapolates to the range's end: up to a scrape's worth over a short series.
    assert late["metered"] == pytest.approx(50, abs=TOLERANCE)
    assert late["spend_by_source"][0]["meter_blind"] is None
    time.sleep(4)  # two more polls of the undeclared meter
    undeclared = budget(exporter, "undeclared")
    assert undeclared["metered"] == 0.0  # the $50 is not lost silently: flagged, bill counted
    assert undeclared["spend_by_source"][0]["meter_blind"] == "no_spend"
    assert undeclared["billed"] == 403.0
    # A match on the bill's project ids over a meter of LiteLLM team names: flagged.
    project = budget(exporter, "project")
    assert (project["billed"], project["metered"]) == (403.0, 0.0)  # not 400: nothing dropped
    assert project["spend_by_source"][0]["meter_blind"] == "no_spend"
    assert gauge(exporter, "budget_meter_blind", budget="project", source="openai") == 1
    assert gauge(exporter, "budget_meter_blind", budget="late", source="openai") == 0
    # A query matching nothing (the newer OpenTelemetry label): flagged, not a zero.
    renamed = budget(exporter, "renamed")
    assert (renamed["billed"], renamed["metered"]) == (403.0, 0.0)
    assert renamed["spend_by_source"][0]["meter_blind"] == "no_series"
    assert gauge(exporter, "budget_source_metered_series", source="renamed") == 0
    assert gauge(exporter, "budget_source_metered_series", source="by-team") == 2
    # An unknown model: the rest is priced, its tokens are counted apart.
    house = sum(
        value
        for labels, value in app_metric(app, "gen_ai_client_token_usage_sum").items()
        if dict(labels)["gen_ai_request_model"] == "house-model"
    )
    unpriced = gauge(
        exporter, "budget_source_unpriced_tokens", source="genai-strict", model="house-model"
    )
    assert unpriced is not None and unpriced == pytest.approx(house, abs=1_000 * 10 * 4)
    strict = budget(exporter, "strict")
    assert strict["metered"] > 1  # claude-sonnet-4 tokens priced
    assert next(s for s in strict["sources"] if s["name"] == "genai-strict")["up"] is True


def test_realtime_budget_end_to_end(tmp_path: Path, services: ServiceSet, billing: Billing) -> None:
    now = datetime.now(UTC)
    into_month = now - month_start(now)
    if into_month < timedelta(minutes=2):
        # The bill needs a minute of this month before its horizon: wait for it, never skip.
        time.sleep((timedelta(minutes=2) - into_month).total_seconds())
        now = datetime.now(UTC)
    # The bill: $400 through H0 (a minute ago), an open bucket from H0 with $3 so far.
    h0 = whole_second(now - timedelta(minutes=1))
    billing.openai = [(month_start(now), h0, 400.0), (h0, h0 + timedelta(days=1), 3.0)]
    billing.anthropic = [(h0, h0 + timedelta(days=1), 0.0)]

    app_port, exporter_port = free_port(), free_port()
    app = services.start("app", [sys.executable, str(SPENDER), str(app_port)], app_port, "/totals")
    prometheus = services.prometheus(
        {"app": [f"127.0.0.1:{app_port}"], "exporter": [f"127.0.0.1:{exporter_port}"]},
        rule_files=[stop_rule(tmp_path / "stop.rules.yml")],
    )
    token_file = tmp_path / "mimir-token"
    token_file.write_text("e2e-token\n")
    genai = example_source("realtime-opentelemetry.yml", "genai-tokens", prometheus.url)
    genai["bearer_token_file"] = str(token_file)
    url, joined = prometheus.url, {"poll_interval": "2s", "metered_after": "openai"}
    blind_spots = [
        # Series born in the middle of the range: declared at zero first, and not.
        {"name": "late-meter", "provider": "prometheus", "url": url, "currency": "USD", **joined,
         "query": 'sum(increase(budget_app_spend_amount_total{budget="late"}[{range}]))'},
        {"name": "undeclared-meter", "provider": "prometheus", "url": url, "currency": "USD",
         **joined,
         "query": 'sum(increase(budget_app_spend_amount_total{budget="undeclared"}[{range}]))'},
        # LiteLLM's team names where the OpenAI bill has project ids.
        {"name": "by-team", "provider": "prometheus", "url": url, "currency": "USD", **joined,
         "query": "sum by (team) (increase(litellm_spend_metric_total[{range}]))",
         "dimensions": {"sub_account_id": "team"}},
        # The newer OpenTelemetry attribute, against an instrumentation with the older one.
        {"name": "renamed", "provider": "prometheus", "url": url, "mode": "tokens", **joined,
         "query": "sum by (gen_ai_request_model, gen_ai_token_type) (increase("
         'gen_ai_client_token_usage_sum{gen_ai_provider_name="anthropic"}[{range}]))',
         "tokens": {"model_label": "gen_ai_request_model",
                    "token_type_label": "gen_ai_token_type"}},
        # Every model, no pricing.default: house-model cannot be priced.
        {**genai, "name": "genai-strict", "pricing": None,
         "query": "sum by (gen_ai_request_model, gen_ai_token_type) "
         "(increase(gen_ai_client_token_usage_sum[{range}]))"},
    ]  # fmt: skip
    del blind_spots[-1]["pricing"]
    config = {
        "global": {
            "poll_interval": "2s",
            "timeout": "1s",
            "retries": 0,
            # An hourly bill's allowance: only the meter's own (3 x 2s + 1s) can make the
            # budgets stale within seconds.
            "check": {"max_data_age": "1h", "on_stale": "fail_open"},
        },
        "sources": [
            {
                "name": "openai",
                "provider": "openai",
                "admin_key": "sk-admin-e2e",
                "base_url": f"{billing.url}/v1",
                "poll_interval": "2s",
                # The fake's buckets close seconds ago and are final at once.
                "settle_lag": "0",
            },
            {
                "name": "anthropic",
                "provider": "anthropic",
                "admin_key": "sk-ant-admin-e2e",
                "base_url": billing.url,
                "poll_interval": "2s",
                "settle_lag": "0",
            },
            example_source("realtime-app-counters.yml", "meter", prometheus.url),
            example_source("realtime-litellm.yml", "litellm", prometheus.url),
            genai,
            *blind_spots,
        ],
        "budgets": [
            {
                "name": "agent",
                "limit": 500,
                "currency": "USD",
                "sources": ["openai", "meter"],
                "warning_ratio": 0.81,
                "stop_ratio": 0.82,  # $410: crossed five seconds into spending
            },
            {"name": "roomy", "limit": 100000, "currency": "USD", "sources": ["openai", "meter"]},
            {
                "name": "claude",
                "limit": 800,
                "currency": "USD",
                "sources": ["anthropic", "genai-tokens"],
            },
            *(
                {"name": name, "limit": 100000, "currency": "USD", "sources": sources}
                for name, sources in [
                    ("late", ["openai", "late-meter"]),
                    ("undeclared", ["openai", "undeclared-meter"]),
                    ("renamed", ["openai", "renamed"]),
                    ("strict", ["anthropic", "genai-strict"]),
                ]
            ),
            {
                "name": "project",
                "limit": 100000,
                "currency": "USD",
                "sources": ["openai", "by-team"],
                "match": {"sub_account_id": "proj_agents"},
            },
        ],
    }
    config_file = tmp_path / "exporter.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    exporter = services.exporter(config_file, port=exporter_port, lifecycle=False)

    # Before any spending: the bill alone, and the meter joined at its horizon.
    agent = wait_until(
        lambda: (b := budget(exporter, "agent"))["spend_by_source"][0]["meters"] and b,
        15,
        "the meter joined to the bill",
    )
    # The open bucket's $3 is the meter's time, but the meter has seen nothing yet: the
    # budget counts the bill's open part rather than drop it, and says why.
    assert (agent["billed"], agent["metered"]) == (403.0, 0.0)
    assert agent["spend_by_source"][0]["meter_blind"] in {"no_series", "no_spend"}
    assert agent["spend_by_source"][0]["data_through"] == h0.isoformat().replace("+00:00", "Z")
    assert check(exporter, "agent")["allowed"] is True

    # Prometheus must have the counters (at zero) before spending starts: what it never
    # scraped, no meter can count.
    wait_until(
        lambda: prom_query(prometheus, "count_over_time(budget_app_spend_amount_total[1m]) >= 2"),
        15,
        "Prometheus to scrape the application",
    )
    # Spend $2/s; the budget crosses its stop ratio ($410) five seconds in.
    spending_since = datetime.now(UTC)
    post_json(f"{app.url}/start", {})

    def crossed() -> float | None:
        spent = sum(app_metric(app, "budget_app_spend_amount_total").values())
        return time.monotonic() if 400 + spent >= 410 else None

    crossed_at = wait_until(crossed, 30, "the application to spend $10", interval=0.1)
    denied = wait_until(
        lambda: check(exporter, "agent")["allowed"] is False, 30, "the check to deny"
    )
    assert denied and time.monotonic() - crossed_at < 30
    answer = check(exporter, "agent")
    assert answer["state"] in {"stop", "exceeded"} and answer["stale"] is False, str(answer)
    wait_until(
        lambda: any(a["labels"]["budget"] == "agent" for a in prom_alerts(prometheus)),
        20,
        "BudgetStop to fire for the agent budget",
    )
    agent = budget(exporter, "agent")
    assert agent["metered"] > 0 and agent["spend_by_source"][0]["meter_blind"] is None
    check_blind_spots(exporter, app)

    # The bill catches up over metered time.  First the meter over-counts: the bill says
    # $5 for the moved part, the meter about $2/s for it.  Then it under-counts: the
    # bill says $60 for a few seconds the meter counted at $2/s.
    expected_billed = 400.0
    for bill_amount in (5.0, 60.0):
        time.sleep(3)
        old = budget(exporter, "agent")
        old_horizon = datetime.fromisoformat(old["spend_by_source"][0]["data_through"])
        horizon = whole_second(datetime.now(UTC) - timedelta(seconds=1))
        billing.openai = [
            *billing.openai[:-1],
            (old_horizon, horizon, bill_amount),
            (horizon, horizon + timedelta(days=1), 1.0),
        ]
        expected_billed += bill_amount
        samples: list[float] = []

        def moved(
            expected: datetime = horizon, seen: list[float] = samples
        ) -> dict[str, Any] | None:
            current = budget(exporter, "agent")
            seen.append(current["spend"])
            part = current["spend_by_source"][0]
            wanted = expected.isoformat().replace("+00:00", "Z")
            return current if part["data_through"] == wanted and part["meters"] else None

        started = time.monotonic()
        new = wait_until(moved, 15, "the horizon to move", interval=0.1)
        elapsed = time.monotonic() - started
        assert new["billed"] == expected_billed  # the bill up to the new horizon, exactly
        seconds_metered = (datetime.now(UTC) - horizon).total_seconds()
        assert new["metered"] == pytest.approx(RATE * seconds_metered, abs=TOLERANCE)
        # The moved part counted once: spend moved by the bill/meter difference for it
        # (plus what was spent meanwhile), never by the meter's figure on top of the bill.
        moved_by_meter = RATE * (horizon - max(old_horizon, spending_since)).total_seconds()
        difference = bill_amount - moved_by_meter
        assert new["spend"] - old["spend"] == pytest.approx(
            difference + RATE * elapsed, abs=TOLERANCE + RATE * 1.5
        )
        low = min(old["spend"], new["spend"]) - TOLERANCE
        high = max(old["spend"], new["spend"]) + TOLERANCE
        assert all(low <= s <= high for s in samples), f"a transient jump: {samples}"

    # The shipped example sources: LiteLLM's counter and OpenTelemetry GenAI tokens.
    # LiteLLM's meter continues the OpenAI bill: it counts from the bill's horizon.
    through = datetime.fromisoformat(
        budget(exporter, "roomy")["spend_by_source"][0]["data_through"]
    )

    def litellm_caught_up() -> bool:
        # Re-polled at once when the horizon moved, but behind the other meters' polls.
        litellm = source_cost(exporter, "litellm")
        seconds = (datetime.now(UTC) - through).total_seconds()
        assert litellm.keys() == {
            (("model", "gpt-4o"), ("team", "search")),
            (("model", "claude-sonnet-4"), ("team", "ads")),
        }
        return all(
            litellm[(("model", model), ("team", team))]
            == pytest.approx(per_operation * 10 * seconds, abs=per_operation * 10 * 4)
            for (model, team), per_operation in LITELLM.items()
        )

    wait_until(litellm_caught_up, 10, "the LiteLLM meter to count from the new horizon")
    # The OpenTelemetry meter continues the Anthropic bill, whose horizon is before any
    # spending: it counts every token the application recorded, priced.
    tokens = app_metric(app, "gen_ai_client_token_usage_sum")
    price = default_table().lookup("claude-sonnet-4")
    expected_claude = sum(
        value * float(price.of(dict(labels)["gen_ai_token_type"])) / 1e6
        for labels, value in tokens.items()
        if dict(labels)["gen_ai_system"] == "anthropic"
    )
    claude = budget(exporter, "claude")
    assert claude["metered"] == pytest.approx(expected_claude, abs=0.09 * 10 * 4)
    assert claude["metered"] > 1  # tokens really were priced
    genai_lines = source_cost(exporter, "genai-tokens")
    assert {dict(d)["token_type"] for d in genai_lines} == {"input", "output"}
    assert {dict(d)["model"] for d in genai_lines} == {"claude-sonnet-4-20250514"}

    # Prometheus goes down: the meter is down, the bill still counts, and the check follows
    # on_stale as soon as the meter's figures are older than its own allowance (seconds),
    # though the bill's is an hour.
    prometheus.stop()
    stopped = time.monotonic()
    down = wait_until(
        lambda: (r := budget(exporter, "roomy"))["stale"] and r, 20, "stale data without Prometheus"
    )
    assert time.monotonic() - stopped < 3 * 2 + 1 + 2 * 2 + 1  # its allowance, two polls' slack
    assert down["stale_sources"] == ["meter"]
    meter = next(s for s in down["sources"] if s["name"] == "meter")
    assert meter["up"] is False and meter["last_error"]
    assert meter["max_data_age_seconds"] == 7 and meter["stale"] is True
    bill = next(s for s in down["sources"] if s["name"] == "openai")
    assert bill["max_data_age_seconds"] == 3600 and bill["stale"] is False
    assert down["billed"] == expected_billed
    answer = check(exporter, "roomy")
    assert answer["allowed"] is True and answer["stale"] is True
    assert answer["policy"] == "fail_open" and "source meter's data is" in answer["reason"]
    assert check(exporter, "agent")["allowed"] is False  # stale, but already past the stop
    # The bill's horizon moves while the meter is down: the whole new bill counts at
    # once (its open bucket too), the meter's figures for the old horizon no longer.
    outage_horizon = whole_second(datetime.now(UTC) - timedelta(seconds=1))
    billing.openai = [
        *billing.openai[:-1],
        (billing.openai[-1][0], outage_horizon, 7.0),
        (outage_horizon, outage_horizon + timedelta(days=1), 2.0),
    ]
    wanted = outage_horizon.isoformat().replace("+00:00", "Z")
    billed_only = wait_until(
        lambda: (
            (r := budget(exporter, "roomy"))["spend_by_source"][0]["data_through"] == wanted and r
        ),
        10,
        "the bill to move during the outage",
    )
    assert billed_only["billed"] == expected_billed + 7.0 + 2.0
    assert billed_only["metered"] == 0.0 and billed_only["spend"] == billed_only["billed"]
    assert billed_only["spend_by_source"][0]["meters_left_out"] == ["meter"]
    assert check(exporter, "roomy")["allowed"] is True
