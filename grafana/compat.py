#!/usr/bin/env python3
"""Check the generated dashboards against an older Grafana's dashboard schema.

The foundation SDK is published once per Grafana version; its models know the
fields of that version's dashboard schema (and of each panel's options).  This
reads every dashboard with the models of the SDK in ``SDK_DIR`` and lists the
fields they do not know, i.e. fields that Grafana version ignores:

    pip install --target /tmp/gf-sdk-11.0 --no-deps 'grafana-foundation-sdk==1769699734!11.0.0'
    python grafana/compat.py /tmp/gf-sdk-11.0

It exits 1 if a field outside ``IGNORED_BY_OLDER`` is unknown.  The oldest
version the dashboards claim is :data:`generate.MIN_GRAFANA` (docs/dashboards.md).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"

IGNORED_BY_OLDER = {
    ".templating.list[].allowCustomValue": "older versions always allow a custom value",
    ".templating.list[].definition": "the query's display text, not in the schema but always read",
    ".annotations.list[].placement": "Grafana 12's controls menu; older ones show them as usual",
    ".links[].placement": "Grafana 12's controls menu; older ones show them as usual",
    ".panels[].options.legend": "bar gauge legend (Grafana 11.1+): older versions draw no legend",
    ".panels[].options.percentChangeColorMode": "stat option of later versions; unused here",
    ".annotations.list[].step": "Prometheus annotation query option (data source field)",
    ".annotations.list[].tagKeys": "Prometheus annotation query option",
    ".annotations.list[].textFormat": "Prometheus annotation query option",
    ".annotations.list[].titleFormat": "Prometheus annotation query option",
    ".annotations.list[].useValueForTime": "Prometheus annotation query option",
}
"""Fields an older Grafana does not know, and why ignoring them is harmless: full paths,
list indices written ``[]`` (the same name elsewhere in a dashboard is still reported)."""

# Runs in a child interpreter whose path starts with the older SDK.
_READER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard
plugins.register_default_plugins()
data = json.load(open(sys.argv[2]))
print(JSONEncoder().encode(dashboard.Dashboard.from_json(data)))
"""


def unknown_fields(original: object, reread: object, path: str = "") -> list[str]:
    """Paths present in ``original`` but dropped when the older models read it."""
    found: list[str] = []
    if isinstance(original, dict):
        for key, value in original.items():
            if not isinstance(reread, dict) or key not in reread:
                found.append(f"{path}.{key}")
            else:
                found.extend(unknown_fields(value, reread[key], f"{path}.{key}"))
    elif isinstance(original, list) and isinstance(reread, list):
        for i, (a, b) in enumerate(zip(original, reread, strict=False)):
            found.extend(unknown_fields(a, b, f"{path}[{i}]"))
    return found


def check(sdk_dir: Path, dashboards: Path = DASHBOARDS) -> dict[str, list[str]]:
    """Per dashboard file, the unknown fields not in ``IGNORED_BY_OLDER``."""
    problems: dict[str, list[str]] = {}
    for path in sorted(dashboards.glob("*.json")):
        reread = subprocess.run(
            [sys.executable, "-c", _READER, str(sdk_dir), str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        fields = unknown_fields(json.loads(path.read_text()), json.loads(reread))
        bad = sorted({re.sub(r"\[\d+\]", "[]", f) for f in fields})
        bad = [f for f in bad if f not in IGNORED_BY_OLDER]
        if bad:
            problems[path.name] = bad
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdk_dir", type=Path, help="an older grafana-foundation-sdk (pip --target)")
    args = parser.parse_args(argv)
    problems = check(args.sdk_dir)
    for name, fields in problems.items():
        for field in fields:
            print(f"{name}: {field} is unknown to that Grafana version", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
