"""The README's promises stay true: its test command is what CI runs, and
every metric the exporter serves is documented."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.config import load_config
from budget_exporter.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


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


def test_every_served_metric_is_documented() -> None:
    engine = Engine(load_config(ROOT / "examples" / "demo.yml"))
    engine.poll_all_once()
    names = {f.name for f in text_string_to_metric_families(engine.snapshot.rendered.text.decode())}
    names = {
        n + "_total" if n in ("budget_source_api_requests", "budget_currency_mismatch_lines") else n
        for n in names
    }
    assert len(names) >= 20
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert missing == []


def test_every_provider_gauge_is_documented() -> None:
    providers = ROOT / "exporter" / "budget_exporter" / "providers"
    names = {
        name
        for path in providers.glob("*.py")
        for name in re.findall(r'"(budget_source_[a-z_]+)"', path.read_text())
    }
    assert len(names) >= 10
    assert sorted(n for n in names if f"`{n}`" not in README) == []
