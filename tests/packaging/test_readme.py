"""The README's and the docs' promises stay true: the README's test command is
what CI runs, its configuration loads, every alert is named in the README and
in docs/alerting.md, and every metric the exporter serves is in docs/metrics.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.config.loader import load_config
from budget_exporter.runtime.engine import Engine
from tests.support.paths import ROOT

README = (ROOT / "README.md").read_text()
METRICS_DOC = (ROOT / "docs" / "metrics.md").read_text()
ALERTING_DOC = (ROOT / "docs" / "alerting.md").read_text()


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", quick_start, flags=re.S)
    assert len(blocks) == 2 and all("\n" not in b for b in blocks)
    run_demo, run_tests = blocks
    assert "--config.file examples/demo.yml" in run_demo
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == run_tests
    assert "pytest" in run_tests and "prometheus-alertmanager" in run_tests
    assert "chromium chromium-driver" in run_tests and "python3-venv" in run_tests
    # The dashboards' oldest-Grafana check finds its SDK where the command puts it.
    assert "--target .venv/grafana-sdk-11.0 --no-deps 'grafana-foundation-sdk==" in run_tests
    # Both work where pip refuses to install outside a virtualenv (PEP 668, Debian 12):
    # they make their own and never call the interpreter's pip directly.
    for command in blocks:
        assert re.search(r"(^|&& )python3 -m venv (--clear )?\.venv && ", command)
        assert re.search(r"(^|&& )(python3? -m pip|pip3?) ", command) is None


def test_every_served_metric_is_documented() -> None:
    engine = Engine(load_config(ROOT / "examples" / "demo.yml"))
    engine.poll_all_once()
    body = engine.snapshot.rendered.select("text/plain", None)[0]  # with the process_* metrics
    families = list(text_string_to_metric_families(body.decode()))
    names = {f.name + "_total" if f.type == "counter" else f.name for f in families}
    assert len(names) >= 20
    missing = sorted(n for n in names if f"`{n}`" not in METRICS_DOC)
    assert missing == []


def test_every_provider_gauge_is_documented() -> None:
    providers = ROOT / "exporter" / "budget_exporter" / "providers"
    names = {
        name
        for path in providers.glob("*.py")
        for name in re.findall(r'"(budget_source_[a-z_]+)"', path.read_text())
    }
    assert len(names) >= 10
    assert sorted(n for n in names if f"`{n}`" not in METRICS_DOC) == []


def test_every_shipped_alert_is_named_in_the_readme_and_documented() -> None:
    alerts = {
        rule["alert"]
        for path in sorted((ROOT / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert len(alerts) >= 8
    assert sorted(a for a in alerts if f"`{a}`" not in README) == []
    assert sorted(a for a in alerts if f"`{a}`" not in ALERTING_DOC) == []


def test_readme_minimal_configuration_loads(tmp_path: Path) -> None:
    pytest.importorskip(
        "boto3", reason="the README's example uses aws_cost_explorer: needs the aws extra"
    )
    section = README.split("## A minimal configuration", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)\n```", section, flags=re.S)
    key = tmp_path / "openai-admin-key"
    key.write_text("sk-admin-example\n")
    config = tmp_path / "budget-exporter.yml"
    config.write_text(block.replace("/etc/budget-exporter/secrets/openai-admin-key", str(key)))
    loaded = load_config(config)
    assert [b.name for b in loaded.budgets] == ["platform", "llm"]
    assert {s.provider for s in loaded.sources} == {"aws_cost_explorer", "openai"}


def test_the_readmes_check_example_works_on_the_demo(make_engine) -> None:
    """The curl example of "Ask before spending", sent to the demo configuration."""
    from budget_exporter.web import api

    section = README.split("## Ask before spending", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)
    url, body = re.fullmatch(r"curl -s (localhost:9820\S+) -d '(.*)'", command).groups()
    assert url == "localhost:9820/api/v1/check"
    engine = make_engine((ROOT / "examples" / "demo.yml").read_text())
    engine.poll_all_once()
    status, payload, _ = api.handle(engine, "POST", "/api/v1/check", body.encode())
    answer = json.loads(payload)
    assert status == 200, answer
    assert answer["allowed"] is True and answer["state"] in {"ok", "warning"} and answer["reason"]
