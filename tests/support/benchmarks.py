"""Run a benchmark script in quick mode, as its smoke tests do, and read its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "benchmarks"


def run_quick(script: str, out: Path, timeout: float = 120) -> tuple[dict[str, Any], str]:
    """``benchmarks/<script> --quick --json out``: its result and its printed report.

    A run that overstays ``timeout`` is stopped with SIGTERM (the scripts stop the
    servers they started) and fails the test, as does a non-zero exit status."""
    process = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
        raise AssertionError(
            f"{script} did not finish in {timeout:g}s:\n{stdout}{stderr}"
        ) from None
    assert process.returncode == 0, stdout + stderr
    return json.loads(out.read_text(encoding="utf-8")), stdout
