#!/usr/bin/env python3
"""Release checks for .github/workflows/release.yml (standard library only).

python .github/release.py check v1.2.3   # the tag, the package, the chart and CHANGELOG agree
python .github/release.py notes v1.2.3   # the tag's section of CHANGELOG.md, for the release
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = ROOT / "CHANGELOG.md"
CHART = ROOT / "helm" / "budget-exporter" / "Chart.yaml"
PACKAGE = ROOT / "exporter" / "budget_exporter" / "__init__.py"
_SECTION = re.compile(r"^## \[(?P<version>[^\]]+)\]", re.MULTILINE)


def package_version() -> str:
    return re.search(r'^__version__ = "([^"]+)"$', PACKAGE.read_text(), re.MULTILINE)[1]


def chart_field(name: str) -> str:
    return re.search(rf'^{name}: "?([^"\n]+)"?$', CHART.read_text(), re.MULTILINE)[1]


def notes(version: str) -> str:
    """The body of CHANGELOG.md's ``## [version]`` section; empty when there is none."""
    text = CHANGELOG.read_text()
    sections = list(_SECTION.finditer(text))
    for here, after in zip(sections, [*sections[1:], None], strict=True):
        if here["version"] == version:
            body = text[here.end() : after.start() if after else len(text)]
            return body.split("\n", 1)[1].strip() + "\n"
    return ""


def problems(tag: str) -> list[str]:
    version = tag.removeprefix("v")
    found = []
    if package_version() != version:
        found.append(f"the package is {package_version()}, the tag {tag}")
    if chart_field("appVersion") != version:
        found.append(f"the chart's appVersion is {chart_field('appVersion')}, the tag {tag}")
    if not notes(version).strip():
        found.append(f"CHANGELOG.md has no section for {version}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in {"check", "notes"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, tag = argv[1], argv[2]
    if command == "notes":
        sys.stdout.write(notes(tag.removeprefix("v")))
        return 0
    found = problems(tag)
    for problem in found:
        print(f"release: {problem}", file=sys.stderr)
    if not found:
        print(f"version={tag.removeprefix('v')}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
