"""Under CI a missing tool fails its tests instead of skipping them (tests/support/tools.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.tools import find_tool, require_tool

ABSENT = "budget-exporter-no-such-tool"


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{ABSENT} is not installed \\(apt-get"):
        require_tool(ABSENT, install="apt-get install it")


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install step is broken"):
        require_tool(ABSENT, install="apt-get install it")


def test_the_first_name_found_is_used() -> None:
    assert require_tool(ABSENT, "sh", install="-") == find_tool("sh")


@pytest.mark.parametrize(("ci", "outcome"), [(None, "1 skipped"), ("true", "1 error")])
def test_the_mark_is_applied_before_the_test(tmp_path: Path, ci: str | None, outcome: str) -> None:
    """``needs_tool`` on a test, through the hook in tests/conftest.py, in a pytest of its own."""
    test = tmp_path / "test_marked.py"
    test.write_text(
        "from tests.support.tools import needs_tool\n\n\n"
        f"@needs_tool([{ABSENT!r}], install='apt-get install it')\n"
        "def test_needs_it():\n"
        "    raise AssertionError('must not run')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci:
        env["CI"] = ci
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            str(tmp_path),
            str(test),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "must not run" not in result.stdout
