"""The Grafana dashboards: generated, well-formed, and every panel query answers.

The live test starts the real exporter (on the demo config, and on a config
with several budgets, periods, currencies converted at rates, and every FOCUS
dimension), a real Prometheus
scraping it with the project's rules loaded, resolves the template variables
the way Grafana would, and sends every panel query to Prometheus: none may
fail and each must return series.
"""

from __future__ import annotations

import ast
import json
import os
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
    get_json,
    prom_query,
    wait_until,
)
from tests.support.paths import ROOT
from tests.support.tools import APT_PROMETHEUS, needs_tool

GENERATOR = ROOT / "grafana" / "generate.py"
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
RULES = ROOT / "rules" / "budget-exporter.rules.yml"
DOCS = ROOT / "docs" / "dashboards.md"
DEMO_CONFIG = ROOT / "examples" / "demo.yml"

EXPECTED = {
    "budget-overview.json": "budget-exporter-overview",
    "budget-breakdown.json": "budget-exporter-breakdown",
}
MONEY_METRICS = re.compile(
    r"\bbudget_(?:spend|billed_spend|metered_spend|limit|forecast|source_cost"
    r"|converted_spend_native)_amount\b"
)
RECORDED = re.compile(r"\b[a-z0-9_]+:[a-z0-9_]+:[a-z0-9_]+\b")
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
MERGED = "max without (job, instance, namespace, service, endpoint, pod, container)"
"""How the breakdown merges the copies of a cost line from replicas and scrape jobs."""
WITH_EXPORTER = "label_replace(budget_source_cost_amount{"
SPEND_BY = re.compile(
    r"sum by \((\w+), currency, exporter\) \(max without \([^)]*\) "
    r"\(label_replace\(budget_source_cost_amount"
)
# The spend-rate recording rules of the contract with the anomaly rules (issue 11),
# which the burn-rate panels use.
CONTRACT_RULES = (
    "budget:budget_spend_amount:rate1h",
    "budget:budget_spend_amount:rate6h",
    "budget:budget_spend_amount:rate1d",
    "budget:budget_remaining_amount:rate_to_period_end",
)
SOURCE_STATE = "source:budget_source_state:up_and_age"
"""The state of each source (up, late, stale, down), recorded for the Sources columns."""
PERIOD_ENDS = "period:budget_period_end_timestamp_seconds:utc"
"""Where the top movers see a period start: the UTC calendar's days, months, quarters and
years, and every other period from the exporter's own end of it (rules/)."""
CONVERSION_METRICS = re.compile(r"\bbudget_(?:converted|unconverted)_spend_amount\b")
"""A budget's spend in other currencies: converted (in the budget's currency) or left out
(in its own)."""
PERIOD_SELECTED = re.compile(
    r"\bbudget_(?:source_cost|converted_spend|unconverted_spend)_amount\{([^}]*)\}"
)
"""The series of one period each: a cost line's, a budget's conversions."""
OTHER_CURRENCIES = "Spend in other currencies, counted in $currency"
RATES = "Exchange rates into $currency"
LONGEST_QUERY = 2200
"""The longest panel query, in characters: the top movers, which reads each cost line three
times per step (now, a step before, and now again for a line without an earlier value in its
period), once for the figures and once for the ranking.  Expressions longer or repeated
belong in a recording rule."""
NEGATIVE_ALLOWED = {"Top $topn movers over the time range"}
"""Panels whose figures may be negative (credits): no minimum of 0."""

# Several budgets in two currencies, periods (calendar, ISO week, fiscal year) and teams,
# with sources carrying every FOCUS dimension the breakdown dashboard groups by, and sources
# in other currencies: EUR (converted into USD directly), GBP (across through EUR), USD
# into a EUR budget (the inverse), JPY (only a stale rate) and CHF (no rate at all).
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
      - {name: uk-saas, provider: demo, monthly_spend: 120, currency: GBP, seed: 7}
      - {name: jp-saas, provider: demo, monthly_spend: 90000, currency: JPY, seed: 8}
      - {name: chf-saas, provider: demo, monthly_spend: 100, currency: CHF, seed: 9}
      - {name: rates, provider: static_rates, rates: {EUR: {USD: 1.085, GBP: 0.842}}}
      - {name: old-rates, provider: static_rates, date: 2020-01-31, rates: {JPY: {USD: 0.0067}}}
    budgets:
      - {name: everything, limit: 9000, currency: USD, labels: {team: finops}}
      - {name: llm, limit: 400, currency: USD, sources: [openai], labels: {team: ml}}
      - {name: cloud, limit: 5000, currency: USD, sources: [aws, aws-accounts, azure],
         warning_ratio: 0.6, stop_ratio: 0.9, labels: {team: platform}}
      - {name: llm-quarterly, limit: 2500, currency: USD, period: quarterly, sources: [openai],
         labels: {team: ml}}
      - {name: saas-daily, limit: 30, currency: USD, period: daily, sources: [saas],
         labels: {team: growth}}
      - {name: eu, limit: 700, currency: EUR, sources: [eu-saas, saas, chf-saas],
         labels: {team: growth}}
      - {name: weekly, limit: 500, currency: USD, period: weekly,
         sources: [saas, eu-saas, openai, chf-saas], labels: {team: growth}}
      - {name: fy-cloud, limit: 60000, currency: USD, period: yearly-april,
         sources: [aws, azure, openai],
         labels: {team: platform}}
    """
)


def recorded_in_rules() -> set[str]:
    return {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


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
    # Grafana 11.0's schema, the oldest version claimed (docs/dashboards.md).
    assert board["schemaVersion"] == 39
    assert {p["type"] for p in panels(board)} <= {"row", "bargauge", "stat", "table", "timeseries"}
    assert "budget-exporter" in board["tags"]
    assert board["time"]["from"].startswith("now-") and board["time"]["to"] == "now"
    assert board["refresh"] == "5m"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # Job and instance: all by default; exporters kept apart unless merged.
    for name_ in ("job", "instance"):
        assert variables[name_]["multi"] and variables[name_]["current"]["value"] == "$__all"
    assert variables["exporters"]["current"]["value"] == "instance"
    assert {o["value"] for o in variables["exporters"]["options"]} == {"instance", "__merged__"}
    currency_rows = [p for p in board["panels"] if p.get("repeat") == "currency"]
    if currency_rows:
        # Every currency at once: a row of panels per currency, each in one currency.
        assert variables["currency"]["multi"] and variables["currency"]["includeAll"]
    else:
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
        if panel["title"] in NEGATIVE_ALLOWED:
            assert "min" not in defaults, f"{panel['title']}: must show negative values"
        else:
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
    assert {"datasource", "job", "instance", "exporters", "team", "budget", "currency"} <= variables
    by_type: dict[str, list[dict[str, Any]]] = {}
    for panel in panels(board):
        by_type.setdefault(panel["type"], []).append(panel)
    titled = {p["title"]: p for p in panels(board)}

    repeats = [p.get("repeat") for p in by_type["row"]]
    assert repeats.count("budget") == 1 and repeats.count("currency") == 1

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

    def columns(panel: dict[str, Any]) -> set[str]:
        organize = next(t for t in panel["transformations"] if t["id"] == "organize")
        return set(organize["options"]["renameByName"].values())

    def override(panel: dict[str, Any], name: str) -> dict[str, Any]:
        found = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == name]
        assert len(found) == 1, (panel["title"], name)
        return {p["id"]: p["value"] for p in found[0]["properties"]}

    budgets_table = titled["All budgets in $currency"]
    assert {
        "Spend", "Limit", "Usage", "Forecast", "Forecast ratio", "Days left", "State",
        "Sources", "Data age", "Currency", "Exporter",
    } <= columns(budgets_table)  # fmt: skip
    sort = next(t for t in budgets_table["transformations"] if t["id"] == "sortBy")
    assert sort["options"]["sort"] == [{"field": "Usage", "desc": True}]
    # Usage and forecast ratio are coloured; sources and state by their own mappings.
    usage = override(budgets_table, "Usage")
    assert usage["custom.cellOptions"]["type"] == "color-background"
    assert [s["color"] for s in usage["thresholds"]["steps"]] == [
        "green", "orange", "red", "dark-red"
    ]  # fmt: skip
    assert override(budgets_table, "Forecast ratio")["thresholds"]["steps"][-1] == {
        "color": "red",
        "value": 1,
    }
    states = override(budgets_table, "Sources")["mappings"][0]["options"]
    assert {v["text"]: v["color"] for v in states.values()} == {
        "Up": "green", "Late": "orange", "Stale": "red", "Down": "red"
    }  # fmt: skip
    exprs = {t["refId"]: t["expr"] for t in budgets_table["targets"]}
    assert "budget_source_info" in exprs["H"] and SOURCE_STATE in exprs["H"]
    assert "budget_source_last_success_timestamp_seconds" in exprs["I"]

    # Clicking a budget opens the breakdown for that budget's sources, period and currency.
    (link,) = override(budgets_table, "budget")["links"]
    assert link["url"].startswith("/d/budget-exporter-breakdown/")
    breakdown_variables = {v["name"] for v in load("budget-breakdown.json")["templating"]["list"]}
    passed = set(re.findall(r"var-(\w+)=", link["url"])) | set(
        re.findall(r"\$\{(\w+):queryparam\}", link["url"])
    )
    assert passed == {"budget", "currency", "period", "datasource", "job", "instance", "exporters"}
    assert passed <= breakdown_variables

    # Burn rate against the rate that would use up the budget by the end of the period.
    burn = titled["Burn rate in $currency"]
    burn_exprs = " ".join(t["expr"] for t in burn["targets"])
    for record in CONTRACT_RULES:
        assert record in burn_exprs
    assert "Burn ratio (6h)" in columns(burn)
    burn_series = " ".join(t["expr"] for t in titled["Burn rate vs sustainable rate"]["targets"])
    assert "rate_to_period_end" in burn_series and "rate6h" in burn_series

    # Firing budget alerts: a table of ALERTS and annotations.
    assert "ALERTS{" in titled["Budget alerts"]["targets"][0]["expr"]
    annotations = board["annotations"]["list"]
    assert any('ALERTS{alertname=~"Budget.*", alertstate="firing"' in a.get("expr", "")
               for a in annotations)  # fmt: skip

    (spend,) = [p for p in by_type["timeseries"] if p["title"] == "Spend over the period"]
    per_budget = {
        "Spend ({{budget}}{{exporter}})",
        "Limit ({{budget}}{{exporter}})",
        "Forecast ({{budget}}{{exporter}})",
    }
    assert per_budget <= {t.get("legendFormat") for t in spend["targets"]}
    (stats,) = by_type["stat"]
    assert per_budget <= {t.get("legendFormat") for t in stats["targets"]}
    # Billed and metered parts of the spend, stacked per budget.
    parts = titled["Billed and metered spend"]
    assert parts["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    part_exprs = {t["legendFormat"]: t["expr"] for t in parts["targets"] if t["refId"] != "UNIT"}
    assert "budget_billed_spend_amount{" in part_exprs["Billed ({{budget}}{{exporter}})"]
    assert "budget_metered_spend_amount{" in part_exprs["Metered ({{budget}}{{exporter}})"]
    # The limit is drawn as a dashed line.
    limit = next(o for o in spend["fieldConfig"]["overrides"] if "Limit" in o["matcher"]["options"])
    assert {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}} in limit[
        "properties"
    ]


def test_breakdown_covers_every_dimension_and_health() -> None:
    board = load("budget-breakdown.json")
    exprs = " ".join(t["expr"] for _, t in targets(board))
    for dimension in ("provider", "service_name", "sub_account_id", "model"):
        assert f"sum by ({dimension}, currency, exporter) ({MERGED} ({WITH_EXPORTER}" in exprs
    # Spend of one period at a time: the monthly and daily lines of a service overlap, and
    # so do a budget's conversions in two periods.
    selected = 0
    for _, target in targets(board):
        for selector in PERIOD_SELECTED.findall(target["expr"]):
            assert 'period="$period"' in selector, target["expr"]
            selected += 1
    assert selected > 10
    # The cost amount is a gauge that resets at each period start: neither delta() nor
    # increase() over the range, but step changes that restart at the period boundary.
    assert "delta(budget_source_cost_amount" not in exprs
    assert "increase(budget_source_cost_amount" not in exprs
    assert "sum_over_time(" in exprs and "topk($topn, abs(" in exprs
    for health in (
        "budget_source_up",
        "budget_source_last_success_timestamp_seconds",
        "budget_source_api_requests_total",
    ):
        assert health in exprs
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["period"]["current"]["value"] == "monthly"
    # Sources follow the chosen budgets; All means the sources offered, not ".*".
    assert "budget_source_info" in variables["source"]["definition"]
    assert variables["source"].get("allValue") is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_money_is_never_summed_across_currencies(name: str) -> None:
    for panel, target in targets(load(name)):
        expr = target["expr"]
        if MONEY_METRICS.search(expr) or CONVERSION_METRICS.search(expr):
            assert re.search(r'currency=~?"\$currency"', expr), (panel["title"], expr)
        for grouping in re.findall(r"\bsum by \(([^)]*)\)", expr):
            if MONEY_METRICS.search(expr):
                assert "currency" in re.split(r",\s*", grouping), (panel["title"], expr)
    # Conversions are only ever taken per budget, source and native currency (max of the
    # copies), never added up.
    for panel, target in targets(load(name)):
        for grouping in re.findall(r"\b(\w+) by \(([^)]*)\) \(label_replace\(budget_(?:un)?"
                                   r"converted_spend_amount\{", target["expr"]):  # fmt: skip
            assert grouping[0] == "max", (panel["title"], target["expr"])
            assert {"budget", "currency", "source", "native_currency"} <= set(
                re.split(r",\s*", grouping[1])
            ), (panel["title"], target["expr"])


def test_breakdown_shows_spend_in_other_currencies() -> None:
    """Native amounts in their own currency, the converted part in the budget's, what is
    left out and why, and the rates; the spend panels say they hold only $currency."""
    board = load("budget-breakdown.json")
    titled = {p["title"]: p for p in panels(board)}
    table, rates = titled[OTHER_CURRENCIES], titled[RATES]
    exprs = {t["refId"]: t["expr"] for t in table["targets"]}
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    names = organize["options"]["renameByName"]
    assert {names[f"Value #{ref}"] for ref in "ABCDE"} == {
        "Native spend", "Converted", "Rate applied", "Left out", "Status"
    }  # fmt: skip
    by_name = {names[f"Value #{ref}"]: exprs[ref] for ref in "ABCDE"}
    # Native: what the budget counts before conversion (its match applied), or leaves out.
    assert "budget_converted_spend_native_amount{" in by_name["Native spend"]
    assert "budget_unconverted_spend_amount{" in by_name["Native spend"]
    assert "budget_source_cost_amount" not in by_name["Native spend"]
    assert by_name["Rate applied"].index("budget_converted_spend_amount{") < by_name[
        "Rate applied"
    ].index(" / ")
    assert "budget_converted_spend_amount{" in by_name["Converted"]
    assert "budget_unconverted_spend_amount{" in by_name["Left out"]
    assert 'reason="no_rate"' in by_name["Status"] and 'reason="stale_rate"' in by_name["Status"]
    # The $currency unit is the converted column's: the native ones are in their own.
    overrides = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in table["fieldConfig"]["overrides"]
    }
    assert overrides["Native spend"]["unit"] == "none"
    assert overrides["Left out"]["unit"] == "none"
    assert overrides["Rate applied"] == {"unit": "none", "decimals": 4}
    assert "Converted" not in overrides
    states = overrides["Status"]["mappings"][0]["options"]
    assert {v["text"]: v["color"] for v in states.values()} == {
        "Converted": "green", "No rate": "red", "Stale rate": "orange"
    }  # fmt: skip
    (rate_expr,) = [t["expr"] for t in rates["targets"]]
    assert "and on (native_currency, exporter)" in rate_expr  # the table's currencies only
    for kind in ("direct", "inverse", "cross"):
        assert f'"kind", "{kind}"' in rate_expr
    assert "budget_exchange_rate{" in rate_expr
    # Every spend panel of the breakdown says where the other currencies are.
    spend_panels = [p for p in panels(board) if p["type"] == "timeseries" and
                    any(SPEND_BY.search(t["expr"]) for t in p["targets"])]  # fmt: skip
    assert len(spend_panels) == 7
    for panel in spend_panels:
        assert "Spend in other currencies" in panel["description"], panel["title"]
    # The breakdown offers the budgets' own currencies, also those of no source line.
    currency = next(v for v in board["templating"]["list"] if v["name"] == "currency")
    assert "budget_source_info" in currency["definition"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recording_rules_used_exist_and_are_documented(name: str) -> None:
    recorded = recorded_in_rules()
    assert set(CONTRACT_RULES) | {SOURCE_STATE, PERIOD_ENDS} <= recorded
    docs = DOCS.read_text()
    used = {rule for _, target in targets(load(name)) for rule in RECORDED.findall(target["expr"])}
    assert used, "the dashboards read recording rules"
    assert used <= recorded, sorted(used - recorded)
    # docs/dashboards.md names every rule a dashboard needs loaded.
    assert {rule for rule in used if f"`{rule}`" not in docs} == set()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_queries_stay_readable(name: str) -> None:
    for panel, target in targets(load(name)):
        assert len(target["expr"]) <= LONGEST_QUERY, (panel["title"], len(target["expr"]))
    for variable in load(name)["templating"]["list"]:
        assert len(variable.get("definition", "")) <= 200, variable["name"]


def test_generator_modules_keep_to_their_layer() -> None:
    """PromQL builders know nothing of Grafana; a dashboard module imports no other."""
    modules = {path.stem: path for path in GENERATOR.parent.glob("*.py")}
    assert {"promql", "panels", "overview", "breakdown", "generate"} <= set(modules)

    def imported(stem: str) -> set[str]:
        tree = ast.parse(modules[stem].read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}  # fmt: skip
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        return {name.split(".")[0] for name in names}

    assert not imported("promql") & {"grafana_foundation_sdk", *modules}
    assert not imported("panels") & (set(modules) - {"promql"})
    assert not imported("overview") & {"breakdown", "generate"}
    assert not imported("breakdown") & {"overview", "generate"}
    assert {"overview", "breakdown"} <= imported("generate")


OLDEST_SDK = Path(os.environ.get("GRAFANA_SDK_OLDEST") or ROOT / ".venv" / "grafana-sdk-11.0")
"""The foundation SDK for the oldest Grafana claimed (11.0), installed beside the project's
own by the README's test command (GRAFANA_SDK_OLDEST names another directory):
``pip install --target .venv/grafana-sdk-11.0 --no-deps 'grafana-foundation-sdk==1769699734!11.0.0'``."""


def oldest_sdk() -> Path:
    """The older SDK; in CI its absence fails the test (it checks a promise of the docs)."""
    if not (OLDEST_SDK / "grafana_foundation_sdk").is_dir():
        missing = f"no Grafana 11.0 foundation SDK in {OLDEST_SDK} (see the README's test command)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return OLDEST_SDK


def test_dashboards_fit_the_oldest_grafana_schema(tmp_path: Path) -> None:
    sdk = oldest_sdk()
    sys.path.insert(0, str(GENERATOR.parent))
    try:
        import compat  # grafana/compat.py
    finally:
        sys.path.pop(0)
    assert compat.check(sdk) == {}
    # The check notices a field Grafana 11.0 does not know, including one whose name is
    # harmless elsewhere (only bar gauges' options.legend is).
    board = load("budget-overview.json")
    board["panels"][0]["legend"] = {"show": True}
    (tmp_path / "x.json").write_text(json.dumps({**board, "somethingNew": True}))
    assert compat.check(sdk, tmp_path) == {"x.json": [".panels[].legend", ".somethingNew"]}


# -- every panel query against a real Prometheus ---------------------------------

needs_prometheus = needs_tool(PROMETHEUS, install=APT_PROMETHEUS)


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
                and prom_query(self.prometheus, "budget:budget_spend_amount:rate6h")
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


def regex_escape(value: str) -> str:
    """A value as Grafana puts it into a PromQL regex matcher (escaped for the string too)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]'])", r"\\\\\1", value)


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

    ``pick`` is "all" (multi-value variables on All: their ``allValue``, or the
    options offered) or "first" (one value each: the one in ``chosen``, else the
    first the variable's query offers; regex-escaped, in dependency order).
    ``currency`` "ALL" is the overview's All currencies; ``chosen`` may set a
    variable to "$__all" and sets custom variables (Exporters) too.
    """
    chosen = chosen or {}
    values = {
        "__range": "1m",
        "__rate_interval": "15s",
        "__interval": "1s",
        "__interval_ms": "1000",
    }
    for variable in board["templating"]["list"]:
        name, kind = variable["name"], variable["type"]
        if kind == "datasource":
            values[name] = "prometheus"
        elif kind == "custom":
            values[name] = chosen.get(name, variable["current"]["value"])
        elif kind == "query":
            definition = interpolate(variable["definition"], values)
            options = label_values(prometheus, definition)
            if name == "currency" and currency != "ALL":
                assert currency in options, (name, options)
                values[name] = currency
            elif (name in chosen and chosen[name] == "$__all") or (
                variable["multi"] and pick == "all" and name not in chosen
            ):
                # Grafana's own All value: the options offered, as a regex.
                assert options, f"variable {name}: {definition} offers no value"
                default = "(" + "|".join(regex_escape(o) for o in options) + ")"
                values[name] = variable.get("allValue") or default
            else:
                assert options, f"variable {name}: {definition} offers no value"
                saved = variable.get("current", {}).get("value")
                value = chosen.get(name, saved if saved in options else options[0])
                assert value in options, (name, value, options)
                values[name] = regex_escape(value)
        else:  # pragma: no cover - the generator makes no other kind
            raise AssertionError(f"unexpected variable type {kind}")
    return values


def annotation_targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for annotation in board["annotations"]["list"]:
        if annotation.get("expr"):
            yield (
                {"title": f"annotation {annotation['name']}"},
                {
                    "expr": annotation["expr"],
                    "refId": "annotation",
                },
            )


def run_target(prometheus: Service, target: dict[str, Any], values: dict[str, str]) -> list[Any]:
    expr = interpolate(target["expr"], values)
    assert "$" not in expr.replace("$1", ""), f"unresolved variable in {expr}"
    if target.get("instant"):
        return list(api(prometheus, "/api/v1/query", query=expr)["result"])
    end = time.time()
    data = api(prometheus, "/api/v1/query_range", query=expr, start=end - 60, end=end, step=1)
    return list(data["result"])


# One source selected: an LLM source, so that "LLM spend by model" has lines.
LLM_SOURCE = {"budget": "openai", "source": "openai", "period": "monthly"}
MULTI_LLM = {"budget": "llm", "source": "openai", "period": "monthly"}
# Opened from a quarterly budget: its period, its sources.
QUARTERLY = {"budget": "llm-quarterly", "period": "quarterly", "source": "$__all"}
# An ISO-weekly budget with spend in EUR, and a fiscal year from April.
WEEKLY = {"budget": "weekly", "period": "weekly", "source": "$__all"}
FISCAL = {"budget": "fy-cloud", "period": "yearly-april", "source": "$__all"}
MERGED_VIEW = {"exporters": "__merged__"}
CASES = [
    ("demo", "budget-overview.json", "all", "USD", {}),
    ("demo", "budget-overview.json", "first", "USD", {}),
    ("demo", "budget-breakdown.json", "all", "USD", {}),
    ("demo", "budget-breakdown.json", "first", "USD", LLM_SOURCE),
    ("multi", "budget-overview.json", "all", "USD", {}),
    ("multi", "budget-overview.json", "all", "ALL", MERGED_VIEW),
    ("multi", "budget-overview.json", "first", "USD", {"team": "platform"}),
    ("multi", "budget-overview.json", "all", "EUR", {}),
    ("multi", "budget-breakdown.json", "all", "USD", {}),
    ("multi", "budget-breakdown.json", "all", "USD", MERGED_VIEW),
    ("multi", "budget-breakdown.json", "all", "EUR", {}),
    ("multi", "budget-breakdown.json", "first", "USD", MULTI_LLM),
    ("multi", "budget-breakdown.json", "first", "USD", QUARTERLY),
    ("multi", "budget-breakdown.json", "first", "USD", WEEKLY),
    ("multi", "budget-breakdown.json", "first", "USD", FISCAL),
]
ALERTS_MAY_BE_EMPTY = {"Budget alerts", "annotation Budget alerts"}
"""No budget alert need be pending or firing in these stacks."""
IN_ONE_CURRENCY = {"llm", "llm-quarterly", "fy-cloud"}
"""The multi stack's budgets whose sources spend only in the budget's currency (and all of the
demo's): there the other currencies' panels are empty."""


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
    may_be_empty = set(ALERTS_MAY_BE_EMPTY)
    if config == "demo" or chosen.get("budget") in IN_ONE_CURRENCY:
        may_be_empty |= {OTHER_CURRENCIES, RATES}
    if (config, name, currency) == ("multi", "budget-breakdown.json", "EUR"):
        may_be_empty.add("LLM spend by model")  # no source reports EUR per model
    empty, answered = [], []
    for panel, target in [*targets(board), *annotation_targets(board)]:
        result = run_target(prometheus, target, values)
        if not result and panel["title"] not in may_be_empty:
            empty.append(f"{panel['title']} [{target['refId']}]: {target['expr']}")
        if result and panel["title"] in (OTHER_CURRENCIES, RATES):
            answered.append(panel["title"])
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    if OTHER_CURRENCIES in may_be_empty and name == "budget-breakdown.json":
        # Only the unit query answers there: budgets in one currency convert nothing.
        assert answered == [OTHER_CURRENCIES], answered


@needs_prometheus
@pytest.mark.e2e
def test_panels_show_each_budget_and_dimension(stacks: dict[str, Stack]) -> None:
    """The figures behind the panels: one bar per budget, one series per dimension value."""
    prometheus = stacks["multi"].prometheus
    overview = load("budget-overview.json")
    values = resolve_variables(prometheus, overview, "all", "USD")
    (gauge, *_) = [p for p in panels(overview) if p["type"] == "bargauge"]
    usage = run_target(prometheus, gauge["targets"][0], values)
    usd_budgets = {
        "everything", "llm", "cloud", "llm-quarterly", "saas-daily", "weekly", "fy-cloud"
    }  # fmt: skip
    assert {s["metric"]["budget"] for s in usage} == usd_budgets
    # Bars are named after the budget, and its exporter unless merged.
    port = stacks["multi"].exporter.port
    assert {s["metric"]["shown"] for s in usage} == {f"{b} @ 127.0.0.1:{port}" for b in usd_budgets}
    merged_view = resolve_variables(prometheus, overview, "all", "USD", {"exporters": "__merged__"})
    merged_usage = run_target(prometheus, gauge["targets"][0], merged_view)
    assert {s["metric"]["shown"] for s in merged_usage} == usd_budgets
    (budgets_table,) = [p for p in panels(overview) if p["title"] == "All budgets in $currency"]
    unit = next(t for t in budgets_table["targets"] if t["refId"] == "UNIT")
    assert [s["metric"]["unit"] for s in run_target(prometheus, unit, values)] == ["currencyUSD"]
    eur = resolve_variables(prometheus, overview, "all", "EUR")
    assert [s["metric"]["unit"] for s in run_target(prometheus, unit, eur)] == ["currencyEUR"]
    state = next(t for t in budgets_table["targets"] if "budget_state" in t["expr"])
    assert {float(s["value"][1]) for s in run_target(prometheus, state, values)} <= {0, 1, 2, 3}
    # Every USD budget's sources are up and fresh, its figures seconds old.
    sources = next(t for t in budgets_table["targets"] if t["refId"] == "H")
    ages = next(t for t in budgets_table["targets"] if t["refId"] == "I")
    up = {
        s["metric"]["budget"]: float(s["value"][1]) for s in run_target(prometheus, sources, values)
    }
    assert up == dict.fromkeys(usd_budgets, 0)
    for s in run_target(prometheus, ages, values):
        assert 0 <= float(s["value"][1]) < 60, s
    # All currencies at once: each repeated row shows its own currency's budgets only.
    everywhere = resolve_variables(prometheus, overview, "all", "ALL")
    assert {s["metric"]["currency"] for s in run_target(prometheus, sources, everywhere)} == {
        "USD",
        "EUR",
    }

    # The drill-down: the breakdown opened for a budget offers that budget's sources.
    breakdown = load("budget-breakdown.json")
    source_variable = next(v for v in breakdown["templating"]["list"] if v["name"] == "source")

    def sources_of(budget: str) -> list[str]:
        chosen = {"budget": budget} if budget != "All" else {}
        picked = resolve_variables(prometheus, breakdown, "all", "USD", chosen)
        return label_values(prometheus, interpolate(source_variable["definition"], picked))

    assert sources_of("llm") == ["openai"]
    assert sources_of("cloud") == ["aws", "aws-accounts", "azure"]
    assert sources_of("saas-daily") == ["saas"]
    assert sources_of("weekly") == ["chf-saas", "eu-saas", "openai", "saas"]
    # All: every source, rates sources too (their health is in the panels below).
    assert sources_of("All") == [
        "aws", "aws-accounts", "azure", "chf-saas", "eu-saas", "jp-saas", "old-rates", "openai",
        "rates", "saas", "uk-saas",
    ]  # fmt: skip

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
def test_other_currencies_show_native_and_converted_amounts(stacks: dict[str, Stack]) -> None:
    """Against the exporter's own figures: each budget's spend in another currency, per
    source and native currency, natively (the source's lines in that currency, never added
    to another currency) and converted (at the rate the rates table shows), or left out with
    its reason; the rates are direct, inverse or across as the configured rates allow."""
    prometheus = stacks["multi"].prometheus
    board = load("budget-breakdown.json")
    titled = {p["title"]: p for p in panels(board)}
    table, rates_panel = titled[OTHER_CURRENCIES], titled[RATES]
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    column = {
        t["refId"]: organize["options"]["renameByName"][f"Value #{t['refId']}"]
        for t in table["targets"]
        if t["refId"] != "UNIT"
    }
    at = time.time()

    def query(expr: str) -> list[dict[str, Any]]:
        return list(api(prometheus, "/api/v1/query", query=expr, time=at)["result"])

    def rows(currency: str) -> dict[tuple[str, str, str], dict[str, float]]:
        values = resolve_variables(prometheus, board, "all", currency)
        shown: dict[tuple[str, str, str], dict[str, float]] = {}
        for target in table["targets"]:
            if target["refId"] == "UNIT":
                continue
            for s in query(interpolate(target["expr"], values)):
                m = s["metric"]
                assert m["currency"] == currency and m["period"] == "monthly", m
                key = (m["budget"], m["source"], m["native_currency"])
                cells = shown.setdefault(key, {})
                assert column[target["refId"]] not in cells, ("one row per key", key)
                cells[column[target["refId"]]] = float(s["value"][1])
        return shown

    def rates(currency: str) -> dict[tuple[str, str], float]:
        values = resolve_variables(prometheus, board, "all", currency)
        (target,) = rates_panel["targets"]
        return {
            (s["metric"]["native_currency"], s["metric"]["kind"]): float(s["value"][1])
            for s in query(interpolate(target["expr"], values))
        }

    def native(source: str, currency: str) -> float:
        # The source's own lines, straight from the exporter's series.
        selector = f'source="{source}", currency="{currency}", period="monthly"'
        (total,) = query(f"sum(budget_source_cost_amount{{{selector}}})")
        return float(total["value"][1])

    eur, gbp = native("eu-saas", "EUR"), native("uk-saas", "GBP")
    jpy, chf = native("jp-saas", "JPY"), native("chf-saas", "CHF")
    usd = rows("USD")
    assert set(usd) == {
        ("everything", "eu-saas", "EUR"),
        ("everything", "uk-saas", "GBP"),
        ("everything", "jp-saas", "JPY"),
        ("everything", "chf-saas", "CHF"),
    }, "only the monthly USD budgets' spend in other currencies, nothing in USD"
    converted, no_rate, stale_rate = 0, 1, 2
    eur_usd, gbp_usd = 1.085, 1.085 / 0.842
    assert usd[("everything", "eu-saas", "EUR")] == pytest.approx(
        {
            "Native spend": eur,
            "Converted": eur * eur_usd,
            "Rate applied": eur_usd,
            "Status": converted,
        }
    )
    assert usd[("everything", "uk-saas", "GBP")] == pytest.approx(
        {
            "Native spend": gbp,
            "Converted": gbp * gbp_usd,
            "Rate applied": gbp_usd,
            "Status": converted,
        }
    )
    assert usd[("everything", "jp-saas", "JPY")] == pytest.approx(
        {"Native spend": jpy, "Left out": jpy, "Status": stale_rate}
    )
    assert usd[("everything", "chf-saas", "CHF")] == pytest.approx(
        {"Native spend": chf, "Left out": chf, "Status": no_rate}
    )
    # The converted column adds up to what the budget counts of other currencies.
    (counted,) = query('sum(budget_converted_spend_amount{budget="everything"})')
    assert float(counted["value"][1]) == pytest.approx(eur * eur_usd + gbp * gbp_usd)
    # The rates into USD: EUR's published, GBP's across through EUR; JPY's only rate is
    # stale but shown (with its date); CHF has none.
    assert rates("USD") == pytest.approx(
        {("EUR", "direct"): eur_usd, ("GBP", "cross"): gbp_usd, ("JPY", "direct"): 0.0067}
    )
    # A EUR budget counting a USD source: at the inverse of the EUR rate.
    usd_native = native("saas", "USD")
    assert rows("EUR") == {
        ("eu", "saas", "USD"): pytest.approx(
            {
                "Native spend": usd_native,
                "Converted": usd_native / eur_usd,
                "Rate applied": 1 / eur_usd,
                "Status": converted,
            }
        ),
        ("eu", "chf-saas", "CHF"): pytest.approx(
            {"Native spend": chf, "Left out": chf, "Status": no_rate}
        ),
    }
    assert rates("EUR") == pytest.approx({("USD", "inverse"): 1 / eur_usd})


@needs_prometheus
@pytest.mark.e2e
@pytest.mark.parametrize("exporters", ["__merged__", "instance"])
def test_copies_from_replicas_and_scrape_jobs_are_not_added_up(
    copies: Service, exporters: str
) -> None:
    """Spend panels and top movers show on three copies of every series what they show on
    one: merged, each cost line once with its own amount; apart, once per instance (the
    two scrape jobs of one instance still merged), never added up."""
    board = load("budget-breakdown.json")
    values = resolve_variables(copies, board, "all", "USD", {"exporters": exporters})
    at = time.time()

    def figures(expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        result = api(copies, "/api/v1/query", query=expr, time=at)["result"]
        shown = {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in result}
        assert len(shown) == len(result), "one series per cost line"
        return shown

    def without_exporter(labels: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in labels if k != "exporter")

    checked = []
    for panel, target in targets(board):
        other_currencies = panel["title"] in (OTHER_CURRENCIES, RATES)
        if (
            not (
                SPEND_BY.search(target["expr"])
                or "topk($topn" in target["expr"]
                or other_currencies
            )
            or target["refId"] == "UNIT"
        ):
            continue
        expr = interpolate(target["expr"].replace("$topn", "50"), values)
        on_one_copy = re.sub(
            r"\b(budget_(?:source_cost|converted_spend|converted_spend_native|unconverted_spend)"
            r"_amount|"
            r"budget_exchange_rate)\{",
            lambda m: f"{m.group(1)}{{{ONE_COPY}, ",
            expr,
        )
        shown, expected = figures(expr), figures(on_one_copy)
        assert expected, panel["title"]
        if exporters == "__merged__":
            assert shown.keys() == expected.keys(), panel["title"]
            for labels, value in expected.items():
                assert shown[labels] == pytest.approx(value), (panel["title"], labels)
        else:
            instances = {dict(labels).get("exporter") for labels in shown}
            assert len(instances) == 2, (panel["title"], instances)  # 127.0.0.1 and localhost
            for labels, value in shown.items():
                assert dict(labels)["exporter"].endswith(f":{dict(labels)['exporter'][-5:]}")
                one = {without_exporter(k): v for k, v in expected.items()}
                if "topk" not in expr:  # top N of twice as many lines is another set
                    assert value == pytest.approx(one[without_exporter(labels)]), labels
        checked.append(panel["title"])
    # The seven spend panels, the movers, the other currencies' five columns and the rates.
    assert len(checked) == 14, checked


# -- top movers across a period reset (promtool) ----------------------------------

LINE = (
    'budget_source_cost_amount{{job="budget-exporter", instance="127.0.0.1:9", source="aws", '
    'provider="demo", currency="USD", period="{period}", {dim}}}'
)


def movers_in_promtool(
    tmp_path: Path,
    period: str,
    series: list[tuple[str, str]],
    eval_time: str,
    expected: dict[str, float],
) -> None:
    """The breakdown's top movers query for ``period``, over the 24 hourly steps before
    ``eval_time``, run by promtool on ``series`` with the rules of rules/ evaluated as
    Prometheus would: each aws line named by its service must move by ``expected``."""
    board = load("budget-breakdown.json")
    (movers,) = [t for _, t in targets(board) if "topk($topn" in t["expr"]]
    values = {
        "job": ".*",
        "instance": ".*",
        "exporters": "__merged__",
        "provider": ".*",
        "source": ".*",
        "currency": "USD",
        "period": regex_escape(period),
        "topn": "10",
        "__range": "24h",
        "__interval": "1h",
        "__interval_ms": "3600000",
    }
    expr = interpolate(movers["expr"], values)
    assert "$" not in expr.replace("$1", "")
    assert PERIOD_ENDS in expr
    labels = f'currency="USD", period="{period}", provider="demo", source="aws"'
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1h",
        "tests": [
            {
                "interval": "1h",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": eval_time,
                        "exp_samples": [
                            {"labels": f'{{{labels}, service_name="{name}"}}', "value": value}
                            for name, value in expected.items()
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "movers.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    run = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


@needs_tool(["promtool"], install=APT_PROMETHEUS)
def test_top_movers_count_the_new_period_and_credits(tmp_path: Path) -> None:
    """Over a range that spans 1 February (1970, promtool's clock): the change of each
    line is its spend in the range, not the drop to the new month; a credit counts
    against its line; a line that appears counts in full; other periods stay out.  The
    period start comes from the rules' calendar (PERIOD_ENDS), evaluated as Prometheus
    would."""
    # January has 744 hours: samples at 0h..743h, then 1 February 00:00 is 744h.
    series = [
        # 1/h in January, reset to 0 at the start of February, then 2/h.
        (LINE.format(period="monthly", dim='service_name="EC2"'), "0+1x743 0+2x12"),
        # A credit of 5 at 740h (739 -> 734), then 1/h on both sides of the reset.
        (
            LINE.format(period="monthly", dim='service_name="S3"'),
            "0+1x739 734 735 736 737 0+1x12",
        ),
        # A line that first appears at 750h with 5 spent.
        (LINE.format(period="monthly", dim='service_name="Bedrock"'), "_x750 5+1x6"),
        # The same service's daily line: another period, left out.
        (LINE.format(period="daily", dim='service_name="EC2"'), "0+1x756"),
    ]
    # At 756h30m the range covers the steps at 733h..756h (24 steps, whether or not
    # the range includes its start): EC2 11 in January + 0 at the reset + 12 x 2
    # in February; S3 7 - 5 + 3 + 0 + 12; Bedrock 5 + 6.
    movers_in_promtool(tmp_path, "monthly", series, "756h30m", {"EC2": 35, "S3": 17, "Bedrock": 11})


END = 'budget_period_end_timestamp_seconds{{budget="b", currency="USD", period="{period}"}}'
"""A budget's own period end, as the exporter exports it."""


@needs_tool(["promtool"], install=APT_PROMETHEUS)
@pytest.mark.parametrize(
    ("period", "end", "line", "eval_time", "moved"),
    [
        # A week from Sunday: 1 February 1970 (744h) starts one; the exporter's end moves
        # from 744h to 912h there.  1/h, reset, 2/h: 11 + 0 + 24.
        ("weekly-sunday", "2678400x743 3283200x12", "0+1x743 0+2x12", "756h30m", 35),
        # An ISO week: Monday 2 February (768h); not the month's start.
        ("weekly", "2764800x767 3369600x12", "0+1x767 0+2x12", "780h30m", 35),
        # A fiscal year from April: 1 April 1970 (2160h).
        ("yearly-april", "7776000x2159 39312000x12", "0+1x2159 0+2x12", "2172h30m", 35),
        # A custom range that ended at 744h: late costs keep coming on the same line, no
        # new period starts (its end stays where it was), so 24 steps of 1, not the whole
        # line at the end.
        ("1970-01-20/1970-01-31", "2678400x756", "0+1x756", "756h30m", 24),
    ],
)
def test_top_movers_follow_each_periods_own_end(
    tmp_path: Path, period: str, end: str, line: str, eval_time: str, moved: float
) -> None:
    """Weeks, fiscal years and custom ranges start where the exporter says their windows
    do (its budget_period_end_timestamp_seconds, through PERIOD_ENDS), not at a calendar
    boundary: the reset at the period's own start counts as the new period's spend."""
    series = [
        (END.format(period=period), end),
        (LINE.format(period=period, dim='service_name="EC2"'), line),
        # The monthly line of the same service, which resets on 1 February: another period.
        (LINE.format(period="monthly", dim='service_name="EC2"'), "0+1x743 0+1x2000"),
    ]
    movers_in_promtool(tmp_path, period, series, eval_time, {"EC2": moved})
