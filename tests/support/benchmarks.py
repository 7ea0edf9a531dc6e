"""Run a benchmark script in quick mode, as its smoke tests do, and read its JSON; and
``harness``, the benchmarks' shared module (configurations of many budgets, the
connections that attack the exporter), for tests that measure the same way."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent.parent / "benchmarks"


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_harness", BENCHMARKS / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = sys.modules.get("benchmarks_harness") or _load_harness()


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
