"""The golden exposition: what the exporter serves for ``examples/demo.yml`` at a fixed time.

The file ``tests/exposition/fixtures/demo.prom`` is the metrics contract on file: every change to
a metric's name, labels, help text or type shows up in review as a change to it. Regenerate it
after an intended change with::

    .venv/bin/python -m tests.support.golden
"""

from __future__ import annotations

import difflib
import re
import sys

from budget_exporter import __version__
from budget_exporter.config.loader import load_config
from budget_exporter.runtime.engine import Engine
from tests.support.clock import Clock
from tests.support.paths import ROOT

DEMO = ROOT / "examples" / "demo.yml"
GOLDEN = ROOT / "tests" / "exposition" / "fixtures" / "demo.prom"
NOW = 1_794_312_000.0  # 2026-11-15 12:00:00 UTC: mid-month, so every gauge has a value
VOLATILE = ("budget_source_poll_duration_seconds",)  # wall-clock measurements
"""Series whose values change from run to run; the golden file keeps their labels only."""

_SAMPLE = re.compile(r"^(?P<series>[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?) (?P<value>\S+)$")


def demo_exposition() -> str:
    """The text exposition of the demo configuration after one poll, at :data:`NOW`."""
    engine = Engine(load_config(DEMO), clock=Clock(NOW))
    try:
        engine.poll_all_once()
        text = engine.snapshot.rendered.text.decode()
    finally:
        engine.stop(timeout=1)
    return normalised(text)


def normalised(text: str) -> str:
    """``text`` with volatile values and the package version replaced by placeholders."""
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["series"].startswith(VOLATILE):
            line = f"{match['series']} <volatile>"
        out.append(line.replace(f'version="{__version__}"', 'version="<version>"'))
    return "\n".join(out) + "\n"


def golden_diff(expected: str, actual: str) -> str:
    """A unified diff of the golden file against ``actual``; empty when they agree."""
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=str(GOLDEN.relative_to(ROOT)),
            tofile="served now",
        )
    )


def main() -> int:
    GOLDEN.write_text(demo_exposition())
    print(f"wrote {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
