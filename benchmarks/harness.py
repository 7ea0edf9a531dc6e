"""What the benchmark scripts share: children that die with them, a clean stop on
SIGTERM, and the report (printed, and optionally written as JSON).

Imported by the scripts as ``harness`` (Python puts a script's own folder first on
``sys.path``), so every benchmark still runs as ``python benchmarks/<name>.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# On Linux a child gets SIGTERM if the script dies without stopping it (e.g. SIGKILL
# from a test timeout): set the parent-death signal, then exec the real command line,
# so the process is still exactly ``argv[0] argv[1:]``.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "  # PR_SET_PDEATHSIG
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def dying_with_parent(argv: list[str]) -> list[str]:
    """``argv``, run so that it ends when this script does (where the OS allows)."""
    if sys.platform == "linux":
        return [sys.executable, "-c", _DIE_WITH_PARENT, *argv]
    return argv


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers a benchmark started are always stopped."""
    signal.signal(signal.SIGTERM, _terminate)


def finish(
    measure: Callable[[], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
    json_path: str | None,
) -> int:
    """Run ``measure``, print its report and write the JSON: exit status 0, or 2 (with
    the reason on stderr) if the run itself failed."""
    try:
        result = measure()
    except (RuntimeError, OSError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0
