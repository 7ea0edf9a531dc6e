"""Reloads: one at a time and coalesced, behind --web.enable-lifecycle; SIGHUP
is caught from the start."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from budget_exporter.runtime.reload import Reloader
from tests.support.exporter import ExporterProcess, exporters, run

SMALL = (
    "sources: [{name: a, provider: static, amount: 1, currency: USD}]\n"
    "budgets: [{name: b, limit: 10, currency: USD}]\n"
)


@pytest.fixture
def running() -> Iterator[Callable[..., ExporterProcess]]:
    yield from exporters()


def test_reloads_run_one_at_a_time_and_requests_meanwhile_share_one() -> None:
    active, most, started = 0, 0, []
    lock = threading.Lock()

    def slow_reload() -> tuple[bool, str]:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
            started.append(time.monotonic())
        time.sleep(0.3)
        with lock:
            active -= 1
        return True, f"run {len(started)}"

    reloader = Reloader(slow_reload)
    results: list[tuple[float, tuple[bool, str]]] = []

    def ask() -> None:
        asked = time.monotonic()
        results.append((asked, reloader.reload()))

    first = threading.Thread(target=ask)
    first.start()
    time.sleep(0.1)  # the first reload is running: these twenty wait for one more
    others = [threading.Thread(target=ask) for _ in range(20)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    assert most == 1
    assert reloader.runs == 2
    assert sorted(message for _, (_, message) in results) == ["run 1"] + ["run 2"] * 20
    # every caller was answered by a reload that started after it asked
    for asked, (_, message) in results:
        assert started[int(message.split()[1]) - 1] >= asked


def test_a_failing_reload_function_is_reported_not_raised() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("bug")

    reloader = Reloader(broken)
    assert reloader.reload() == (False, "reload failed: RuntimeError")
    assert reloader.reload() == (False, "reload failed: RuntimeError")  # not stuck


def test_the_reload_endpoint_needs_the_lifecycle_flag(write_config, running) -> None:
    path = write_config(SMALL)
    closed, opened = running(path, lifecycle=False), running(path)
    for exporter in (closed, opened):
        exporter.wait_ready()
    refused = requests.post(f"{closed.url}/-/reload", timeout=5)
    assert refused.status_code == 403 and "Lifecycle API is not enabled" in refused.text
    path.write_text(SMALL.replace("limit: 10", "limit: 25"))
    assert requests.post(f"{opened.url}/-/reload", timeout=5).status_code == 200
    assert 'period="monthly"} 25.0' in requests.get(f"{opened.url}/metrics", timeout=5).text
    closed.proc.send_signal(signal.SIGHUP)  # SIGHUP works without the flag
    deadline = time.monotonic() + 10
    while 'period="monthly"} 25.0' not in requests.get(f"{closed.url}/metrics", timeout=5).text:
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        time.sleep(0.05)


def _catches_sighup(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught & (1 << (signal.SIGHUP - 1)))


def test_a_sighup_while_the_configuration_loads_does_not_kill(write_config, running) -> None:
    sources = "\n".join(
        f"  - {{name: s{i}, provider: static, amount: 1, currency: USD}}" for i in range(50)
    )
    path = write_config(f"sources:\n{sources}\nbudgets: [{{name: b, limit: 10, currency: USD}}]\n")
    exporter = running(path)
    deadline = time.monotonic() + 20
    while not _catches_sighup(exporter.proc.pid):  # the first thing the exporter does
        assert time.monotonic() < deadline and exporter.proc.poll() is None
        time.sleep(0.001)
    exporter.proc.send_signal(signal.SIGHUP)
    with pytest.raises(requests.ConnectionError):  # not even listening yet
        requests.get(f"{exporter.url}/-/healthy", timeout=1)
    exporter.wait_ready()
    code, err = exporter.stop()
    assert code == 0
    assert "configuration reloaded" in err  # the early SIGHUP was served once running
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--web.read-timeout=soon", "--web.read-timeout: invalid duration"),
        ("--web.read-timeout=1h", "--web.read-timeout: must be at most 5m"),
        ("--web.max-connections=1", "--web.max-connections: must be at least 2"),
    ],
)
def test_bad_web_limits_are_one_line_errors(write_config, flag: str, message: str) -> None:
    done = run("--config.file", str(write_config(SMALL)), "--web.listen-address=127.0.0.1:0", flag)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith(f"budget-exporter: {message}")
