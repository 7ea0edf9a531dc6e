"""The Grafana dashboards: generated, well-formed, and every panel query answers.

The live test starts the real exporter (on the demo config, and on a config
with several budgets, currencies and every FOCUS dimension), a real Prometheus
scraping it with the project's rules loaded, resolves the template variables
the way Grafana would, and sends every panel query to Prometheus: none may
fail and each must return series.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import (
    PROMETHEUS,
    Service,
    ServiceSet,
    find_binary,
    get_json,
    prom_query,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "grafana" / "generate.py"
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
DEMO_CONFIG = ROOT / "examples" / "demo.yml"

EXPECTED = {
    "budget-overview.json": "budget-exporter-overview",
    "budget-breakdown.json": "budget-exporter-breakdown",
}
MONEY_METRICS = re.compile(r"\bbudget_(?:spend|limit|forecast|source_cost)_amount\b")
RECORDED = re.compile(r"\b[a-z_]+:[a-z_]+:[a-z_]+\b")
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
MERGED = "max without (job, instance, namespace, service, endpoint, pod, container)"
"""How the breakdown merges the copies of a cost line from replicas and scrape jobs."""
SPEND_BY = re.compile(
    r"sum by \((\w+), currency\) \(max without \([^)]*\) \(budget_source_cost_amount"
)

# Several budgets in two currencies, periods and teams, with sources carrying
# every FOCUS dimension the breakdown dashboard groups by.
MULTI_CONFIG = textwrap.dedent(
    """\
    global:
      poll_interval: 1h
      warning_ratio: 0.8
      stop_ratio: 0.95
    sources:
      - {name: openai, provider: demo, monthly_spend: 900, dimension: model,
         values: [gpt-4o, gpt-4o-mini, o3], seed: 1}
      - {name: aws, provider: demo, monthly_spend: 3000, dimension: service_name,
         values: [Amazon EC2, Amazon S3, AWS Lambda], seed: 2}
      - {name: aws-accounts, provider: demo, monthly_spend: 1200, dimension: sub_account_id,
         values: ["111111111111", "222222222222"], seed: 3}
      - {name: azure, provider: demo, monthly_spend: 800, dimension: region_id,
         values: [westeurope, eastus], seed: 4}
      - {name: saas, provider: demo, monthly_spend: 400, dimension: charge_category,
         values: [usage, subscription], seed: 5}
      - {name: eu-saas, provider: demo, monthly_spend: 300, currency: EUR,
         dimension: charge_category, values: [usage, tax], seed: 6}
    budgets:
      - {name: everything, limit: 9000, currency: USD, labels: {team: finops}}
      - {name: llm, limit: 400, currency: USD, sources: [openai], labels: {team: ml}}
      - {name: cloud, limit: 5000, currency: USD, sources: [aws, aws-accounts, azure],
         warning_ratio: 0.6, stop_ratio: 0.9, labels: {team: platform}}
      - {name: llm-quarterly, limit: 2500, currency: USD, period: quarterly, sources: [openai],
         labels: {team: ml}}
      - {name: saas-daily, limit: 30, currency: USD, period: daily, sources: [saas],
         labels: {team: growth}}
      - {name: eu, limit: 350, currency: EUR, sources: [eu-saas], labels: {team: growth}}
    """
)


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARD_DIR / name).read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel, target


# -- generated and well-formed ---------------------------------------------------


def test_committed_json_is_what_the_generator_writes(tmp_path: Path) -> None:
    check = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted(EXPECTED)

    # The check really compares: a stale file in another directory fails it.
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], check=True)
    stale = tmp_path / "budget-overview.json"
    stale.write_text(stale.read_text().replace("Budget overview", "Budget overview (edited)"))
    again = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 1
    assert "budget-overview.json: stale" in again.stderr


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_metadata(name: str) -> None:
    board = load(name)
    assert board["uid"] == EXPECTED[name]
    assert "budget-exporter" in board["tags"]
    assert board["time"]["from"].startswith("now-") and board["time"]["to"] == "now"
    assert board["refresh"] == "5m"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["currency"]["multi"] is False, "currencies must never be mixed"
    assert variables["currency"]["includeAll"] is False

    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)) and 0 not in ids
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["title"] and panel.get("description"), panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("min") == 0, f"{panel['title']}: min must be 0"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        money = any(MONEY_METRICS.search(t["expr"]) for t in panel["targets"])
        if money:
            # Money panels take their unit from the selected currency.
            assert "UNIT" in refs, panel["title"]
            steps = [t["id"] for t in panel.get("transformations", [])]
            assert steps[0] == "configFromData", panel["title"]
        elif re.search(r"_ratio\b", panel["targets"][0]["expr"]):
            assert defaults["unit"] == "percentunit", panel["title"]
        else:
            assert defaults.get("unit") or defaults.get("mappings"), panel["title"]
        if panel["type"] == "timeseries":
            assert panel["options"]["legend"]["showLegend"] is True
            for target in panel["targets"]:
                assert target["refId"] == "UNIT" or target.get("legendFormat"), panel["title"]


def test_overview_has_the_budget_views() -> None:
    board = load("budget-overview.json")
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "team", "budget", "currency"} <= variables
    by_type: dict[str, list[dict[str, Any]]] = {}
    for panel in panels(board):
        by_type.setdefault(panel["type"], []).append(panel)

    repeated = [p for p in by_type["row"] if p.get("repeat") == "budget"]
    assert len(repeated) == 1

    # Bar gauges: usage coloured at each budget's own warning and stop ratios.
    for gauge in by_type["bargauge"]:
        exprs = [t["expr"] for t in gauge["targets"]]
        assert any("budget_usage_ratio" in e for e in exprs)
        assert any("budget_warning_threshold_ratio" in e for e in exprs)
        assert any("budget_stop_threshold_ratio" in e for e in exprs)
        rows_to_fields = next(t for t in gauge["transformations"] if t["id"] == "rowsToFields")
        colours = [
            m["handlerArguments"]["threshold"]["color"]
            for m in rows_to_fields["options"]["mappings"]
            if m["handlerKey"] == "threshold1"
        ]
        assert colours == ["green", "orange", "red"]

    (budgets_table,) = by_type["table"]
    organize = next(t for t in budgets_table["transformations"] if t["id"] == "organize")
    columns = set(organize["options"]["renameByName"].values())
    assert {"Spend", "Limit", "Usage", "Forecast", "Days left", "State"} <= columns
    sort = next(t for t in budgets_table["transformations"] if t["id"] == "sortBy")
    assert sort["options"]["sort"] == [{"field": "Usage", "desc": True}]

    (spend,) = [p for p in by_type["timeseries"] if p["title"] == "Spend over the period"]
    per_budget = {"Spend ({{budget}})", "Limit ({{budget}})", "Forecast ({{budget}})"}
    assert per_budget <= {t.get("legendFormat") for t in spend["targets"]}
    (stats,) = by_type["stat"]
    assert per_budget <= {t.get("legendFormat") for t in stats["targets"]}
    # The limit is drawn as a dashed line.
    limit = next(o for o in spend["fieldConfig"]["overrides"] if "Limit" in o["matcher"]["options"])
    assert {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}} in limit[
        "properties"
    ]


def test_breakdown_covers_every_dimension_and_health() -> None:
    board = load("budget-breakdown.json")
    exprs = " ".join(t["expr"] for _, t in targets(board))
    for dimension in ("provider", "service_name", "sub_account_id", "model"):
        assert f"sum by ({dimension}, currency) ({MERGED} (budget_source_cost_amount" in exprs
    # The cost amount is a gauge: its change over the range is delta(), never increase().
    assert f"topk($topn, {MERGED} (delta(budget_source_cost_amount" in exprs
    assert "increase(budget_source_cost_amount" not in exprs
    for health in (
        "budget_source_up",
        "budget_source_last_success_timestamp_seconds",
        "budget_source_api_requests_total",
    ):
        assert health in exprs


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_money_is_never_summed_across_currencies(name: str) -> None:
    for panel, target in targets(load(name)):
        expr = target["expr"]
        if MONEY_METRICS.search(expr):
            assert 'currency="$currency"' in expr, (panel["title"], expr)
        for grouping in re.findall(r"\bsum by \(([^)]*)\)", expr):
            if MONEY_METRICS.search(expr):
                assert "currency" in grouping, (panel["title"], expr)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_rules_used_exist(name: str) -> None:
    recorded = {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    for panel, target in targets(load(name)):
        for used in RECORDED.findall(target["expr"]):
            assert used in recorded, (panel["title"], used)


# -- every panel query against a real Prometheus ---------------------------------

needs_prometheus = pytest.mark.skipif(
    find_binary(*PROMETHEUS) is None, reason="needs the prometheus binary"
)


class Stack:
    """An exporter on one config and the Prometheus scraping it."""

    def __init__(self, services: ServiceSet, config: Path) -> None:
        self.exporter = services.exporter(config)
        self.prometheus = services.prometheus(
            {"budget-exporter": [f"127.0.0.1:{self.exporter.port}"]},
            rule_files=RULE_FILES,
            interval="1s",
        )

    def wait_for_data(self) -> None:
        """Until the rules were evaluated and every series has two samples (for increase())."""
        wait_until(
            lambda: (
                prom_query(self.prometheus, "budget:budget_state:thresholds")
                and prom_query(
                    self.prometheus, "count_over_time(budget_source_cost_amount[1m]) >= 2"
                )
            ),
            timeout=30,
            what="scraped samples and evaluated rules",
        )


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Stack]]:
    multi = tmp_path_factory.mktemp("multi-config") / "budget-exporter.yml"
    multi.write_text(MULTI_CONFIG)
    with (
        ServiceSet(tmp_path_factory.mktemp("demo")) as demo_services,
        ServiceSet(tmp_path_factory.mktemp("multi")) as multi_services,
    ):
        started = {
            "demo": Stack(demo_services, DEMO_CONFIG),
            "multi": Stack(multi_services, multi),
        }
        for stack in started.values():
            stack.wait_for_data()
        yield started


ONE_COPY = 'job="budget-exporter", instance=~"127\\\\..*"'
"""Selects one of the three copies the ``copies`` Prometheus holds."""


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A Prometheus holding three copies of every series of one exporter: two targets of
    one job (``127.0.0.1`` and ``localhost``: different ``instance``, like two replicas)
    and a second job (like a second ServiceMonitor on the same pods), with no rules."""
    config = tmp_path_factory.mktemp("copies-config") / "budget-exporter.yml"
    config.write_text(MULTI_CONFIG)
    with ServiceSet(tmp_path_factory.mktemp("copies")) as services:
        exporter = services.exporter(config)
        prometheus = services.prometheus(
            {
                "budget-exporter": [f"127.0.0.1:{exporter.port}", f"localhost:{exporter.port}"],
                "budget-exporter-again": [f"127.0.0.1:{exporter.port}"],
            },
            interval="1s",
        )

        def count(expr: str) -> int:
            return len(prom_query(prometheus, expr))

        wait_until(
            lambda: (
                count(f"budget_source_cost_amount{{{ONE_COPY}}}") > 0
                and count("count_over_time(budget_source_cost_amount[1m]) >= 2")
                == 3 * count(f"budget_source_cost_amount{{{ONE_COPY}}}")
            ),
            timeout=30,
            what="three scraped copies of every cost line",
        )
        yield prometheus


def api(prometheus: Service, path: str, **params: Any) -> Any:
    url = f"{prometheus.url}{path}?" + urllib.parse.urlencode(params, doseq=True)
    answer = get_json(url)
    assert answer["status"] == "success", answer
    return answer["data"]


def label_values(prometheus: Service, definition: str) -> list[str]:
    """Grafana's ``label_values(selector, label)`` variable query."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition)
    assert match, definition
    selector, label = match.groups()
    return sorted(api(prometheus, f"/api/v1/label/{label}/values", **{"match[]": selector}))


def interpolate(text: str, values: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return VARIABLE.sub(sub, text)


def resolve_variables(
    prometheus: Service,
    board: dict[str, Any],
    pick: str,
    currency: str,
    chosen: dict[str, str] | None = None,
) -> dict[str, str]:
    """Variable values as Grafana would substitute them in PromQL.

    ``pick`` is "all" (multi-value variables on All, i.e. ``.*``) or "first"
    (one value each: the one in ``chosen``, else the first the variable's query
    offers; regex-escaped, in dependency order).
    """
    chosen = chosen or {}
    values = {"__range": "1m", "__rate_interval": "15s", "__interval": "1s"}
    for variable in board["templating"]["list"]:
        name, kind = variable["name"], variable["type"]
        if kind == "datasource":
            values[name] = "prometheus"
        elif kind == "custom":
            values[name] = variable["current"]["value"]
        elif kind == "query":
            definition = interpolate(variable["definition"], values)
            options = label_values(prometheus, definition)
            if name == "currency":
                assert currency in options, (name, options)
                values[name] = currency
            elif variable["multi"] and pick == "all":
                values[name] = variable["allValue"]
            else:
                assert options, f"variable {name}: {definition} offers no value"
                value = chosen.get(name, options[0])
                assert value in options, (name, value, options)
                values[name] = re.escape(value)
        else:  # pragma: no cover - the generator makes no other kind
            raise AssertionError(f"unexpected variable type {kind}")
    return values


def run_target(prometheus: Service, target: dict[str, Any], values: dict[str, str]) -> list[Any]:
    expr = interpolate(target["expr"], values)
    assert "$" not in expr.replace("$1", ""), f"unresolved variable in {expr}"
    if target.get("instant"):
        return list(api(prometheus, "/api/v1/query", query=expr)["result"])
    end = time.time()
    data = api(prometheus, "/api/v1/query_range", query=expr, start=end - 60, end=end, step=1)
    return list(data["result"])


# One source selected: an LLM source, so that "LLM spend by model" has lines.
LLM_SOURCE = {"source": "openai"}
CASES = [
    ("demo", "budget-overview.json", "all", "USD", {}),
    ("demo", "budget-overview.json", "first", "USD", {}),
    ("demo", "budget-breakdown.json", "all", "USD", {}),
    ("demo", "budget-breakdown.json", "first", "USD", LLM_SOURCE),
    ("multi", "budget-overview.json", "all", "USD", {}),
    ("multi", "budget-overview.json", "first", "USD", {"team": "platform"}),
    ("multi", "budget-overview.json", "all", "EUR", {}),
    ("multi", "budget-breakdown.json", "all", "USD", {}),
    ("multi", "budget-breakdown.json", "first", "USD", LLM_SOURCE),
]


@needs_prometheus
@pytest.mark.e2e
@pytest.mark.parametrize(("config", "name", "pick", "currency", "chosen"), CASES)
def test_every_panel_query_returns_data(
    stacks: dict[str, Stack],
    config: str,
    name: str,
    pick: str,
    currency: str,
    chosen: dict[str, str],
) -> None:
    prometheus = stacks[config].prometheus
    board = load(name)
    values = resolve_variables(prometheus, board, pick, currency, chosen)
    empty = []
    for panel, target in targets(board):
        result = run_target(prometheus, target, values)
        if not result:
            empty.append(f"{panel['title']} [{target['refId']}]: {target['expr']}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)


@needs_prometheus
@pytest.mark.e2e
def test_panels_show_each_budget_and_dimension(stacks: dict[str, Stack]) -> None:
    """The figures behind the panels: one bar per budget, one series per dimension value."""
    prometheus = stacks["multi"].prometheus
    overview = load("budget-overview.json")
    values = resolve_variables(prometheus, overview, "all", "USD")
    (gauge, *_) = [p for p in panels(overview) if p["type"] == "bargauge"]
    usage = run_target(prometheus, gauge["targets"][0], values)
    assert {s["metric"]["budget"] for s in usage} == {
        "everything",
        "llm",
        "cloud",
        "llm-quarterly",
        "saas-daily",
    }
    (budgets_table,) = [p for p in panels(overview) if p["type"] == "table"]
    unit = next(t for t in budgets_table["targets"] if t["refId"] == "UNIT")
    assert [s["metric"]["unit"] for s in run_target(prometheus, unit, values)] == ["currencyUSD"]
    eur = resolve_variables(prometheus, overview, "all", "EUR")
    assert [s["metric"]["unit"] for s in run_target(prometheus, unit, eur)] == ["currencyEUR"]
    state = next(t for t in budgets_table["targets"] if "budget_state" in t["expr"])
    assert {float(s["value"][1]) for s in run_target(prometheus, state, values)} <= {0, 1, 2, 3}

    breakdown = load("budget-breakdown.json")
    values = resolve_variables(prometheus, breakdown, "all", "USD")
    seen = {}
    for _panel, target in targets(breakdown):
        grouping = SPEND_BY.search(target["expr"])
        if grouping:
            dimension = grouping.group(1)
            seen[dimension] = {
                s["metric"].get(dimension) for s in run_target(prometheus, target, values)
            }
    assert seen["sub_account_id"] == {"111111111111", "222222222222", "(unattributed)"}
    assert seen["model"] == {"gpt-4o", "gpt-4o-mini", "o3"}
    assert {"Amazon EC2", "Amazon S3", "AWS Lambda"} < seen["service_name"]
    assert "eu-saas" not in seen["source"], "EUR spend must not show in the USD view"


@needs_prometheus
@pytest.mark.e2e
def test_copies_from_replicas_and_scrape_jobs_are_not_added_up(copies: Service) -> None:
    """Spend panels and top movers show on three copies of every series what they show on
    one: each cost line once, with its own amount."""
    board = load("budget-breakdown.json")
    values = resolve_variables(copies, board, "all", "USD")
    at = time.time()

    def figures(expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        result = api(copies, "/api/v1/query", query=expr, time=at)["result"]
        shown = {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in result}
        assert len(shown) == len(result), "one series per cost line"
        return shown

    checked = []
    for panel, target in targets(board):
        if not (SPEND_BY.search(target["expr"]) or "topk($topn" in target["expr"]):
            continue
        expr = interpolate(target["expr"].replace("$topn", "50"), values)
        on_one_copy = expr.replace(
            "budget_source_cost_amount{", f"budget_source_cost_amount{{{ONE_COPY}, "
        )
        shown, expected = figures(expr), figures(on_one_copy)
        assert expected, panel["title"]
        assert shown.keys() == expected.keys(), panel["title"]
        for labels, value in expected.items():
            assert shown[labels] == pytest.approx(value), (panel["title"], labels)
        checked.append(panel["title"])
    assert len(checked) == 8, checked
