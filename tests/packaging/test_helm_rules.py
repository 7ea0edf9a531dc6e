"""The chart's PrometheusRule: the release's job selector, and tuning without forking.

The rules in rules/ select the exporter's own scrape job with one default
selector, ``job="budget-exporter"``; the chart replaces it with the job and
namespace Prometheus Operator gives the release's targets (or
``prometheusRule.selector``). Rendered alerts are run through promtool against
series labelled as the Operator labels them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python.chart import Chart
from helm_python.errors import HelmError

from tests.support.helm import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    RULE_FILES,
    chart,
    one,
    render,
    run_promtool_tests,
)

DEFAULT_SELECTOR = 'job="budget-exporter"'
RULES_DIR = CHART_DIR.parent.parent / "rules"


def rule_groups(values: dict[str, Any]) -> list[dict[str, Any]]:
    rule_values = {"enabled": True} | values.get("prometheusRule", {})
    docs = render(values | {"prometheusRule": rule_values})
    groups: list[dict[str, Any]] = one(docs, "PrometheusRule")["spec"]["groups"]
    return groups


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def repository_alerts() -> dict[str, dict[str, Any]]:
    return alerts([g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]])


def exporter_down(values: dict[str, Any]) -> str:
    return str(alerts(rule_groups(values))["BudgetExporterDown"]["expr"])


# -- the selector of the release ----------------------------------------------------


def test_the_default_selector_is_written_once_per_use_in_the_rules() -> None:
    """Only the exporter's own job is selected; budget_* series carry no job selector."""
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                expr = str(rule["expr"])
                without = expr.replace(DEFAULT_SELECTOR, "")
                assert "job=" not in without and "job =" not in without, (rule, path)
    down = repository_alerts()["BudgetExporterDown"]["expr"]
    assert f"up{{{DEFAULT_SELECTOR}}} == 0" in down
    assert f"absent(budget_exporter_build_info{{{DEFAULT_SELECTOR}}})" in down


@pytest.mark.parametrize(
    ("values", "job"),
    [
        # jobLabel app.kubernetes.io/name (the default): the chart name, or nameOverride.
        ({}, "budget-exporter"),
        ({"nameOverride": "finops"}, "finops"),
        # No jobLabel: the Operator names the job after the Service.
        ({"serviceMonitor": {"jobLabel": ""}}, FULLNAME),
        ({"serviceMonitor": {"jobLabel": ""}, "fullnameOverride": "costs"}, "costs"),
        # A label of the Service's own.
        (
            {"serviceMonitor": {"jobLabel": "team"}, "service": {"labels": {"team": "finops"}}},
            "finops",
        ),
        # A jobLabel the Service does not carry: the Operator falls back to the Service name.
        ({"serviceMonitor": {"jobLabel": "missing"}}, FULLNAME),
    ],
)
def test_selector_follows_the_job_prometheus_operator_sets(
    values: dict[str, Any], job: str
) -> None:
    docs = render(
        {"prometheusRule": {"enabled": True}}
        | values
        | {"serviceMonitor": {"enabled": True} | values.get("serviceMonitor", {})}
    )
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    # What the Operator's relabelling gives: the jobLabel's value on the Service, else its name.
    operator_job = service["metadata"]["labels"].get(
        monitor["spec"].get("jobLabel", ""), service["metadata"]["name"]
    )
    assert operator_job == job
    expr = str(alerts(one(docs, "PrometheusRule")["spec"]["groups"])["BudgetExporterDown"]["expr"])
    selector = f'job="{job}",namespace="{NAMESPACE}"'
    assert f"up{{{selector}}} == 0" in expr
    assert f"absent(budget_exporter_build_info{{{selector}}})" in expr
    assert DEFAULT_SELECTOR + "}" not in expr


def test_namespace_override_moves_the_selector() -> None:
    expr = exporter_down({"namespaceOverride": "finops"})
    assert 'up{job="budget-exporter",namespace="finops"}' in expr


def test_selector_value_wins() -> None:
    selector = 'job="kubernetes-pods",app="budget-exporter"'
    expr = exporter_down({"nameOverride": "ignored", "prometheusRule": {"selector": selector}})
    assert f"up{{{selector}}} == 0" in expr
    assert f"absent(budget_exporter_build_info{{{selector}}})" in expr
    with pytest.raises(HelmError, match="selector"):
        render({"prometheusRule": {"enabled": True, "selector": "job=budget-exporter"}})


def promtool_test(
    tmp_path: Path, groups: list[dict[str, Any]], tests: list[dict[str, Any]]
) -> None:
    spec = {"rule_files": ["chart.rules.yml"], "evaluation_interval": "1m", "tests": tests}
    assert run_promtool_tests(tmp_path, groups, spec) == ""


def annotations(first_sentence: str) -> dict[str, str]:
    """BudgetExporterDown's annotations as Prometheus renders them."""
    original = repository_alerts()["BudgetExporterDown"]["annotations"]
    return {
        "summary": original["summary"],
        "description": first_sentence + " Budget and source alerts cannot fire until it is back.",
        "runbook_url": original["runbook_url"],
    }


def test_rendered_exporter_down_fires_for_the_release_under_name_override(tmp_path: Path) -> None:
    """With nameOverride, the down target of this release fires; the absent() half names it."""
    groups = rule_groups({"nameOverride": "finops", "serviceMonitor": {"enabled": True}})
    target = (
        f'job="finops",namespace="{NAMESPACE}",service="{RELEASE}-finops",instance="10.0.0.7:9820"'
    )
    down = {
        "interval": "1m",
        "input_series": [
            {"series": f"up{{{target}}}", "values": "1x4 0x40"},
            {"series": f'budget_exporter_build_info{{{target},version="0.1.0"}}', "values": "1x4"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "BudgetExporterDown", "exp_alerts": []},
            {
                "eval_time": "25m",
                "alertname": "BudgetExporterDown",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "job": "finops",
                            "namespace": NAMESPACE,
                            "service": f"{RELEASE}-finops",
                            "instance": "10.0.0.7:9820",
                        },
                        "exp_annotations": annotations(
                            "Prometheus cannot scrape the budget exporter at 10.0.0.7:9820."
                        ),
                    }
                ],
            },
        ],
    }
    # Another release's exporter (default job, other namespace) does not hide this one's absence.
    other = 'job="budget-exporter",namespace="staging",instance="10.0.1.2:9820"'
    absent = {
        "interval": "1m",
        "input_series": [
            {"series": f"up{{{other}}}", "values": "1x30"},
            {"series": f'budget_exporter_build_info{{{other},version="0.1.0"}}', "values": "1x30"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "20m",
                "alertname": "BudgetExporterDown",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "job": "finops",
                            "namespace": NAMESPACE,
                        },
                        "exp_annotations": annotations(
                            "Prometheus has no budget_exporter_build_info series from job finops,"
                            " so that budget exporter is not being scraped."
                        ),
                    }
                ],
            }
        ],
    }
    promtool_test(tmp_path, groups, [down, absent])


# -- tuning without forking -------------------------------------------------------


def test_alerts_can_be_disabled_retimed_relabelled_and_pointed_at_a_runbook(tmp_path: Path) -> None:
    values = {
        "prometheusRule": {
            "disabled": {"BudgetForecastOverrun": True, "BudgetDataStale": False},
            "overrides": {
                "BudgetWarning": {"for": "2h", "severity": "info"},
                "BudgetStop": {"severity": "page"},
            },
            "additionalRuleLabels": {"team": "finops", "severity": "ignored"},
            "runbookUrl": "https://wiki.example.com/runbooks/budget/",
        }
    }
    groups = rule_groups(values)
    got, original = alerts(groups), repository_alerts()
    assert set(got) == set(original) - {"BudgetForecastOverrun"}
    assert (
        got["BudgetWarning"]["for"] == "2h" and got["BudgetWarning"]["labels"]["severity"] == "info"
    )
    assert got["BudgetStop"]["for"] == original["BudgetStop"]["for"]
    assert got["BudgetStop"]["labels"]["severity"] == "page"
    for name, rule in got.items():
        assert rule["labels"]["team"] == "finops"
        if name not in ("BudgetWarning", "BudgetStop"):
            assert rule["labels"]["severity"] == original[name]["labels"]["severity"], name
            assert rule["for"] == original[name]["for"]
        anchor = original[name]["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert rule["annotations"]["runbook_url"] == (
            f"https://wiki.example.com/runbooks/budget#{anchor}"
        )
        assert rule["annotations"]["summary"] == original[name]["annotations"]["summary"]
    records = [r for g in groups for r in g["rules"] if "record" in r]
    assert records and all("labels" not in r for r in records), "recording rules stay as written"
    promtool_test(tmp_path, groups, [])


def test_disabling_every_alert_of_a_group_drops_the_group() -> None:
    quota = [
        r["alert"]
        for r in yaml.safe_load((CHART_DIR / "files/rules/quota.rules.yml").read_text())["groups"][
            0
        ]["rules"]
    ]
    groups = rule_groups({"prometheusRule": {"disabled": dict.fromkeys(quota, True)}})
    assert "budget-exporter.quota.alerts" not in [g["name"] for g in groups]
    assert all(g["rules"] for g in groups)


@pytest.mark.parametrize(
    "values",
    [
        {"disabled": {"BudgetWarnings": True}},
        {"overrides": {"budgetwarning": {"for": "1h"}}},
    ],
)
def test_unknown_alert_names_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(
        HelmError, match=r"no alert named \S+ in the rules \(alerts: .*BudgetWarning\)"
    ):
        render({"prometheusRule": {"enabled": True} | values})


def test_wrong_overrides_are_refused_by_the_schema() -> None:
    for wrong, problem in (
        ({"overrides": {"BudgetWarning": {"for": "an hour"}}}, "for"),
        ({"overrides": {"BudgetWarning": {"severity": "info", "summary": "x"}}}, "summary"),
        ({"disabled": {"BudgetWarning": "yes"}}, "disabled"),
        ({"additionalRuleLabels": {"team-name": "finops"}}, "team-name"),
        ({"runbookUrl": "wiki/budget"}, "runbookUrl"),
    ):
        with pytest.raises(HelmError, match=problem):
            render({"prometheusRule": {"enabled": True} | wrong})


def test_new_rules_need_nothing_special(tmp_path: Path) -> None:
    """A rules file added later (as helm/sync.py copies it) is tuned like the others."""
    copy = tmp_path / "budget-exporter"
    shutil.copytree(CHART_DIR, copy)
    new_rules = {
        "groups": [
            {
                "name": "budget-exporter.new",
                "rules": [
                    {
                        "record": "budget:budget_spend_amount:rate1h",
                        "expr": "rate(budget_spend_amount[1h])",
                    },
                    {
                        "alert": "BudgetSomethingNew",
                        "expr": f"budget_usage_ratio > 2 or up{{{DEFAULT_SELECTOR}}} == 0",
                        "for": "5m",
                        "labels": {"severity": "warning"},
                        "annotations": {
                            "summary": "{{ $labels.budget }} is new.",
                            "description": f"{{{{ with query `up{{{DEFAULT_SELECTOR}}}` }}}}up{{{{ end }}}}",
                            "runbook_url": "https://github.com/budget-exporter/budget-exporter/blob/main/docs/runbook.md#budgetsomethingnew",
                        },
                    },
                ],
            }
        ]
    }
    (copy / "files/rules/new.rules.yml").write_text(yaml.safe_dump(new_rules))
    values = {
        "prometheusRule": {
            "enabled": True,
            "overrides": {"BudgetSomethingNew": {"for": "1h"}},
            "additionalRuleLabels": {"team": "finops"},
            "runbookUrl": "https://runbooks.example.com",
        }
    }
    manifests = Chart.load(copy).render(values, name=RELEASE, namespace=NAMESPACE)
    rule = yaml.safe_load(manifests["budget-exporter/templates/prometheusrule.yaml"])
    (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "budget-exporter.new"]
    record, alert = group["rules"]
    assert record == new_rules["groups"][0]["rules"][0]
    assert (
        alert["expr"]
        == f'budget_usage_ratio > 2 or up{{job="budget-exporter",namespace="{NAMESPACE}"}} == 0'
    )
    assert alert["for"] == "1h" and alert["labels"] == {"severity": "warning", "team": "finops"}
    assert alert["annotations"] == {
        "summary": "{{ $labels.budget }} is new.",
        "description": f'{{{{ with query `up{{job="budget-exporter",namespace="{NAMESPACE}"}}` }}}}up{{{{ end }}}}',
        "runbook_url": "https://runbooks.example.com#budgetsomethingnew",
    }


def test_rule_metadata_labels() -> None:
    rule = one(
        render(
            {
                "prometheusRule": {
                    "enabled": True,
                    "additionalLabels": {"release": "kube-prometheus-stack"},
                    "labels": {"role": "alert-rules"},
                },
                "commonLabels": {"cost-center": "42"},
            }
        ),
        "PrometheusRule",
    )
    labels = rule["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack" and labels["role"] == "alert-rules"
    assert labels["cost-center"] == "42" and labels["app.kubernetes.io/instance"] == RELEASE


def test_notes_name_the_selector() -> None:
    notes = chart().render(
        {"prometheusRule": {"enabled": True}, "nameOverride": "finops"},
        name=RELEASE,
        namespace=NAMESPACE,
    )["budget-exporter/templates/NOTES.txt"]
    assert f'BudgetExporterDown\nselects job="finops",namespace="{NAMESPACE}".' in notes


# -- the same without the chart ------------------------------------------------------


def test_rules_with_another_selector_match_the_chart(tmp_path: Path) -> None:
    """rules/with_selector.py gives plain-Prometheus users what the chart renders."""
    selector = 'job="finops",env="prod"'
    tool = RULES_DIR / "with_selector.py"
    subprocess.run([sys.executable, str(tool), selector, str(tmp_path / "out")], check=True)
    written = sorted((tmp_path / "out").glob("*.yml"))
    assert [p.name for p in written] == [p.name for p in RULE_FILES]
    groups = [g for path in written for g in yaml.safe_load(path.read_text())["groups"]]
    assert groups == rule_groups({"prometheusRule": {"selector": selector}})
    assert f"up{{{selector}}} == 0" in alerts(groups)["BudgetExporterDown"]["expr"]
    promtool_test(tmp_path, groups, [])
    for wrong in ("job=finops", "finops", 'job="a" or vector(1)'):
        result = subprocess.run(
            [sys.executable, str(tool), wrong, str(tmp_path / "bad")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2 and "not PromQL label matchers" in result.stderr, wrong
    assert not (tmp_path / "bad").exists()
