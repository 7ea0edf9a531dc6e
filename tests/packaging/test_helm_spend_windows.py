"""The chart's values set the windows of the spend-rate alerts (prometheusRule.spendRateWindows).

Factors, floors and horizons are per budget (exporter configuration keys exported as
gauges); windows cannot differ per series in PromQL, so the chart rewrites them in the
rules it renders: which two recorded rates the burn-rate record takes the lower of, and
how far back the anomaly's baseline reaches. Rendered rules are run through promtool.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python.chart import Chart
from helm_python.errors import HelmError

from tests.support.helm import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    RULE_FILES,
    one,
    render,
    run_promtool_tests,
)

BURN_RECORD = "budget:budget_time_to_limit_seconds:burn_rate"
MEDIAN_RECORD = "budget:budget_spend_amount:rate1d_median"


def rules_by_name(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Recording rules by name; alerts by name and severity (BudgetBurnRateHigh has two)."""
    found = {}
    for group in groups:
        for rule in group["rules"]:
            key = rule.get("record") or f"{rule['alert']}/{rule['labels']['severity']}"
            found[key] = rule
    return found


def rendered(windows: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    values: dict[str, Any] = {"enabled": True}
    if windows is not None:
        values["spendRateWindows"] = windows
    groups: list[dict[str, Any]] = one(render({"prometheusRule": values}), "PrometheusRule")[
        "spec"
    ]["groups"]
    return groups


def repository() -> dict[str, dict[str, Any]]:
    return rules_by_name([g for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"]])


def test_the_defaults_render_the_rules_as_written() -> None:
    chart, shipped = rules_by_name(rendered()), repository()
    for name in (BURN_RECORD, MEDIAN_RECORD, "BudgetSpendAnomaly/warning"):
        assert chart[name]["expr"] == shipped[name]["expr"], name


def test_other_windows_change_only_the_windows() -> None:
    chart = rules_by_name(rendered({"burnRate": ["6h", "1d"], "anomalyBaseline": "4w"}))
    shipped = repository()
    burn = chart[BURN_RECORD]["expr"]
    assert "budget:budget_spend_amount:rate1h" not in burn
    assert burn == (
        shipped[BURN_RECORD]["expr"]
        .replace("budget_spend_amount:rate6h", "budget_spend_amount:rate1d")
        .replace("budget_spend_amount:rate1h", "budget_spend_amount:rate6h")
    )
    for name in (MEDIAN_RECORD, "BudgetSpendAnomaly/warning"):
        assert "[4w:1h] offset 1d" in chart[name]["expr"]
        assert chart[name]["expr"] == shipped[name]["expr"].replace("[14d:1h]", "[4w:1h]")
    # The names and everything else stay: the dashboards and the alerts rely on them.
    assert chart.keys() == shipped.keys()
    for name, rule in chart.items():
        if name not in (BURN_RECORD, MEDIAN_RECORD, "BudgetSpendAnomaly/warning"):
            assert rule["expr"] == shipped[name]["expr"].replace(
                'job="budget-exporter"', f'job="budget-exporter",namespace="{NAMESPACE}"'
            ), name


def promtool_expr(tmp_path: Path, groups: list[dict[str, Any]], check: dict[str, Any]) -> str:
    """Run one promql_expr_test against ``groups``; promtool's output if it failed, else ""."""
    labels = 'budget="billed",currency="USD",period="monthly"'
    spec = {
        "rule_files": ["chart.rules.yml"],
        "evaluation_interval": "10m",
        "tests": [
            {
                "interval": "10m",
                # A billing export updated every 4 hours: 144 USD a step (0.01 USD a second).
                "input_series": [
                    {
                        "series": f"budget_spend_amount{{{labels}}}",
                        "values": " ".join(f"{144 * step}x23" for step in range(8)),
                    },
                    {"series": f"budget_limit_amount{{{labels}}}", "values": "2008x191"},
                    {
                        "series": f"budget_period_start_timestamp_seconds{{{labels}}}",
                        "values": "0x191",
                    },
                ],
                "promql_expr_test": [check],
            }
        ],
    }
    return run_promtool_tests(tmp_path, groups, spec)


def test_longer_burn_rate_windows_see_data_that_moves_in_steps(tmp_path: Path) -> None:
    """At 30h the last step came at 28h: the 1h window saw none, the 6h and 1d windows did."""
    at_30h = {"expr": f"round({BURN_RECORD})", "eval_time": "30h"}
    # The shipped 1h and 6h windows: nothing spent in the last hour, so no time to the limit.
    (tmp_path / "default").mkdir()
    assert promtool_expr(tmp_path / "default", rendered(), at_30h | {"exp_samples": []}) == ""
    # 6h and 1d: 144 USD in 6 hours (0.00667/s) is the lower rate; 1000 USD left.
    (tmp_path / "slow").mkdir()
    expected = [{"labels": '{budget="billed",currency="USD",period="monthly"}', "value": 150000}]
    groups = rendered({"burnRate": ["6h", "1d"]})
    assert promtool_expr(tmp_path / "slow", groups, at_30h | {"exp_samples": expected}) == ""


@pytest.mark.parametrize(
    "windows",
    [
        {"burnRate": ["1h", "2h"]},
        {"burnRate": ["6h", "6h"]},
        {"burnRate": ["1h"]},
        {"anomalyBaseline": "two weeks"},
        {"anomalyBaseline": "0d"},
        {"baseline": "14d"},
    ],
)
def test_wrong_windows_are_refused_by_the_schema(windows: dict[str, Any]) -> None:
    with pytest.raises(HelmError, match="spendRateWindows"):
        rendered(windows)


def test_rules_without_the_windows_fail_the_rendering(tmp_path: Path) -> None:
    """If the rules are rewritten so the knobs no longer apply, say so instead of ignoring them."""
    copy = tmp_path / "budget-exporter"
    shutil.copytree(CHART_DIR, copy)
    rules = copy / "files/rules/budget-exporter.rules.yml"
    rules.write_text(rules.read_text().replace("[14d:1h] offset 1d", "[7d:1h] offset 1d"))
    with pytest.raises(HelmError, match="spendRateWindows"):
        Chart.load(copy).render({"prometheusRule": {"enabled": True}}, name=RELEASE)
