#!/usr/bin/env python3
"""Write the rules files with another selector for the exporter's own scrape job.

The rules select the exporter's job with one default selector, written exactly
``job="budget-exporter"`` wherever a rule needs it; the Helm chart replaces it
with its release's. Without the chart, this does the same for your Prometheus:

    python rules/with_selector.py 'job="finops",namespace="monitoring"' /etc/prometheus/rules/

Every rules/*.yml is written to the output directory with the selector
replaced in expressions and annotations; nothing else changes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

RULES = Path(__file__).resolve().parent
DEFAULT_SELECTOR = 'job="budget-exporter"'
# One or more PromQL label matchers: name, operator, double-quoted value.
_MATCHERS = re.compile(
    r'^\s*[a-zA-Z_]\w*\s*(=|!=|=~|!~)\s*"[^"]*"(\s*,\s*[a-zA-Z_]\w*\s*(=|!=|=~|!~)\s*"[^"]*")*\s*,?\s*$'
)


def with_selector(text: str, selector: str) -> str:
    """A rules file's text with the exporter's job selector replaced (comments left as they are)."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            lines.append(line)
        else:
            lines.append(line.replace(DEFAULT_SELECTOR, selector))
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("selector", help='label matchers, e.g. job="finops",namespace="monitoring"')
    parser.add_argument("output", type=Path, help="directory to write the rules files to")
    args = parser.parse_args(argv)
    if not _MATCHERS.match(args.selector):
        print(
            f'selector {args.selector!r}: not PromQL label matchers such as job="finops"',
            file=sys.stderr,
        )
        return 2
    if args.output.resolve() == RULES:
        print("output: choose another directory than rules/ itself", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for path in sorted(RULES.glob("*.yml")):
        (args.output / path.name).write_text(with_selector(path.read_text(), args.selector))
    return 0


if __name__ == "__main__":
    sys.exit(main())
