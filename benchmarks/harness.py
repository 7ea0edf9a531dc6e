"""What the benchmark scripts share: children that die with them, a clean stop on
SIGTERM, and the report (printed, and optionally written as JSON); starting the exporter,
its configurations of many budgets, percentiles, and the connections that attack it
(also used by tests/web through tests/support/benchmarks.py).

Imported by the scripts as ``harness`` (Python puts a script's own folder first on
``sys.path``), so every benchmark still runs as ``python benchmarks/<name>.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
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


# -- the exporter under test, and what the scripts measure it with ---------------------

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (for a server about to be started)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exporter_env() -> dict[str, str]:
    """This environment, with the checkout's package first on ``PYTHONPATH``."""
    path = f"{ROOT / 'exporter'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return {**os.environ, "PYTHONPATH": path}


def exporter_argv(config: Path, port: int, *flags: str) -> list[str]:
    """``python -m budget_exporter`` on ``config``, listening on 127.0.0.1:``port``, run so
    that it ends with this script."""
    argv = [
        sys.executable,
        "-m",
        "budget_exporter",
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    return dying_with_parent(argv)


def percentiles_ms(times: list[float]) -> dict[str, float]:
    """p50 and p99 of ``times`` (seconds, at least two) in milliseconds."""
    cuts = statistics.quantiles(times, n=100)
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


def labelled_budgets(count: int, limit: int) -> dict[str, Any]:
    """A configuration of ``count`` static sources, each with a budget of ``limit`` USD
    carrying two labels (written as JSON, which is YAML and quicker to load)."""
    return {
        "global": {"poll_interval": "1h"},
        "sources": [
            {"name": f"src-{i}", "provider": "static", "amount": i % 97 + 1, "currency": "USD"}
            for i in range(count)
        ],
        "budgets": [
            {
                "name": f"budget-{i}-with-a-longer-name",
                "limit": limit,
                "currency": "USD",
                "sources": [f"src-{i}"],
                "labels": {"team": f"team-{i % 50}", "cost_center": f"cc-{i % 200}"},
            }
            for i in range(count)
        ],
    }


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def threads_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0])


NEVER_READ = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n"


def never_reader(port: int, request: bytes = NEVER_READ) -> socket.socket:
    """A connection (with a small receive buffer) that sends ``request`` -- by default
    /metrics uncompressed, the largest answer -- and never reads the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


HEADER_LINE = b"X-Pad: " + b"a" * (64 * 1024 - 9) + b"\r\n"


def unfinished_headers(port: int) -> socket.socket:
    """Sends up to 98 headers of 64 KiB, never the blank line that ends them."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    sock.setblocking(False)
    with contextlib.suppress(OSError):  # the server stops reading (431) long before the end
        for _ in range(98):
            sock.send(HEADER_LINE)
    return sock


class Attack:
    """Keeps ``count`` connections from ``open_one`` open (one the server closed is
    made again) and samples the exporter's RSS and threads every 0.1 s, until stopped."""

    def __init__(self, pid: int, count: int, open_one: Callable[[], socket.socket]) -> None:
        self.pid, self.count, self.open_one = pid, count, open_one
        self.peak_rss = 0.0
        self.peak_threads = 0
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Attack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
        self.peak_threads = max(self.peak_threads, threads_of(self.pid))

    def _run(self) -> None:
        live: list[socket.socket] = []
        try:
            while not self._stop.is_set():
                while len(live) < self.count and not self._stop.is_set():
                    try:
                        live.append(self.open_one())
                        self.connections += 1
                    except OSError:
                        break
                self.sample()
                if self._stop.wait(0.1):
                    break
                kept = []
                for sock in live:
                    try:
                        sock.setblocking(False)
                        gone = sock.recv(1, socket.MSG_PEEK) == b""
                    except BlockingIOError:
                        gone = False
                    except OSError:
                        gone = True
                    if gone:
                        sock.close()
                    else:
                        kept.append(sock)
                live = kept
        finally:
            for sock in live:
                sock.close()
