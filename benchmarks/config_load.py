"""How long a large configuration takes to load: the exporter's loader (libyaml's parser, with
line numbers kept for errors) against PyYAML's pure-Python safe loader, in the same run.

``python benchmarks/config_load.py`` writes a configuration of about 4 MB (sources with spend
lines, budgets with matches and labels) and loads it with each; ``--quick`` uses a small one.
Prints seconds (best of three) and the ratio to the pure-Python baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import yaml

from budget_exporter.config.loader import load_config


def write_config(path: Path, entries: int) -> int:
    """A configuration of ``entries`` sources and as many budgets; its size in bytes."""
    parts = ["sources:\n"]
    for i in range(entries):
        parts.append(
            f"  - name: s{i}\n    provider: static\n    currency: USD\n    lines:\n"
            f"      - {{amount: {i}.5, dimensions: {{service_name: svc{i}, team: team{i % 50}}}}}\n"
            f"      - {{amount: 1, dimensions: {{service_name: other{i}}}}}\n"
        )
    parts.append("budgets:\n")
    for i in range(entries):
        parts.append(
            f"  - name: b{i}\n    limit: 1000\n    currency: USD\n    sources: [s{i}]\n"
            f'    labels: {{team: team{i % 50}}}\n    match: {{service_name: "/svc.*/"}}\n'
        )
    path.write_text("".join(parts))
    return path.stat().st_size


def best_of(runs: int, action: Any) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(entries: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.yml"
        size = write_config(path, entries)
        text = path.read_text()
        baseline = best_of(runs, lambda: yaml.load(text, Loader=yaml.SafeLoader))
        parse_c = best_of(runs, lambda: yaml.load(text, Loader=yaml.CSafeLoader))
        exporter = best_of(runs, lambda: load_config(path))
    return {
        "bytes": size,
        "entries": entries,
        "libyaml": bool(getattr(yaml, "__with_libyaml__", False)),
        "pure_python_parse_s": baseline,
        "libyaml_parse_s": parse_c,
        "load_config_s": exporter,
        "parse_ratio": parse_c / baseline,
        "load_config_ratio": exporter / baseline,
    }


def report(result: dict[str, Any]) -> str:
    mb = result["bytes"] / 1e6
    return "\n".join(
        [
            f"Loading a {mb:.1f} MB configuration ({result['entries']} sources and budgets), "
            f"best of runs; libyaml {'available' if result['libyaml'] else 'MISSING'}",
            f"  PyYAML pure-Python parse (baseline)  {result['pure_python_parse_s']:8.3f} s  1.00x",
            f"  libyaml parse                        {result['libyaml_parse_s']:8.3f} s  "
            f"{result['parse_ratio']:.2f}x",
            f"  load_config (parse, validate, check) {result['load_config_s']:8.3f} s  "
            f"{result['load_config_ratio']:.2f}x",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small configuration, one run")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    entries, runs = (200, 1) if args.quick else (12_000, 3)
    return harness.finish(lambda: measure(entries, runs), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
