"""``rules/quota.rules.yml`` under promtool, and proof its tests can fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.tools import APT_PROMETHEUS, needs_tool

RULES = ROOT / "rules" / "quota.rules.yml"
TESTS = ROOT / "rules" / "tests" / "quota.test.yml"
PROMTOOL = shutil.which("promtool")

pytestmark = needs_tool(["promtool"], install=APT_PROMETHEUS)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_are_valid() -> None:
    proc = promtool("check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = promtool("test", "rules", TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        (">=", ">"),  # the threshold must be inclusive (hunter-exact)
        (
            "or\n            0 * budget_source_quota_limit + 0.8",
            "or 0 * budget_source_quota_limit + 2",
        ),
        ("for: 15m", "for: 5m"),  # the quota reset case would fire
        ("(budget_source_quota_limit > 0)", "budget_source_quota_limit"),  # 0/0 and x/0
        # Just under the threshold must stay silent (hunter-under, 79.9 % of 0.8): a
        # tolerance or rounding to whole percents would make it fire.
        (">=\n          (\n", ">=\n          -0.005 + (\n"),
        (
            "budget_source_quota_used / (budget_source_quota_limit > 0)",
            "round(budget_source_quota_used / (budget_source_quota_limit > 0), 0.01)",
        ),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, original: str, broken: str) -> None:
    text = RULES.read_text()
    assert original in text
    (tmp_path / "quota.rules.yml").write_text(text.replace(original, broken, 1))
    (tmp_path / "tests").mkdir()
    shutil.copy(TESTS, tmp_path / "tests" / "quota.test.yml")
    proc = promtool("test", "rules", tmp_path / "tests" / "quota.test.yml")
    assert proc.returncode != 0, f"a rule with {broken!r} still passed its tests"
