#!/usr/bin/env python3
"""Copy the rules and dashboards into the Helm chart, or check the copies.

Helm's ``.Files`` cannot read outside the chart, so the chart carries copies:

    rules/*.yml                  -> helm/budget-exporter/files/rules/
    grafana/dashboards/*.json    -> helm/budget-exporter/files/dashboards/

    python helm/sync.py           # refresh the copies
    python helm/sync.py --check   # exit 1 if a copy is missing, stale or orphaned
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "budget-exporter"

# (source directory, glob, destination directory inside the chart)
COPIES = (
    (ROOT / "rules", "*.yml", CHART / "files" / "rules"),
    (ROOT / "grafana" / "dashboards", "*.json", CHART / "files" / "dashboards"),
)


def problems() -> list[str]:
    """Every difference between the sources and the chart's copies."""
    found: list[str] = []
    for source_dir, pattern, dest_dir in COPIES:
        sources = {p.name: p for p in sorted(source_dir.glob(pattern))}
        copies = {p.name: p for p in sorted(dest_dir.glob(pattern))} if dest_dir.is_dir() else {}
        if not sources:
            found.append(f"{source_dir.relative_to(ROOT)}: no {pattern} files to copy")
        for name, path in sources.items():
            copy = copies.get(name)
            if copy is None:
                found.append(f"{(dest_dir / name).relative_to(ROOT)}: missing")
            elif copy.read_bytes() != path.read_bytes():
                found.append(f"{copy.relative_to(ROOT)}: differs from {path.relative_to(ROOT)}")
        for name in sorted(set(copies) - set(sources)):
            found.append(
                f"{(dest_dir / name).relative_to(ROOT)}: no longer in {source_dir.relative_to(ROOT)}"
            )
    return found


def sync() -> None:
    for source_dir, pattern, dest_dir in COPIES:
        dest_dir.mkdir(parents=True, exist_ok=True)
        sources = {p.name for p in source_dir.glob(pattern)}
        for stale in dest_dir.glob(pattern):
            if stale.name not in sources:
                stale.unlink()
        for name in sorted(sources):
            shutil.copyfile(source_dir / name, dest_dir / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift instead of copying")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        for line in found:
            print(f"{line} (run python helm/sync.py)", file=sys.stderr)
        return 1 if found else 0
    sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
