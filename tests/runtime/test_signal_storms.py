"""Storms of SIGHUP and SIGTERM: the handlers only set flags, the main loop does the
work, so the exporter stays alive, keeps reloading and stops when told to."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from budget_exporter.runtime.reload import Signals
from tests.support.exporter import ExporterProcess, exporters

CONFIG = (
    "sources: [{name: a, provider: static, amount: 1, currency: USD}]\n"
    "budgets: [{name: b, limit: 10, currency: USD}]\n"
)
STORM = 5000
QUIET = ("--log.level=warn",)
"""Thousands of reloads log thousands of lines: more than the pipe the test reads only at
the end holds, and a process writing to a full pipe waits."""


@pytest.fixture
def running() -> Iterator[Callable[..., ExporterProcess]]:
    yield from exporters()


@pytest.fixture
def restored_signals() -> Iterator[None]:
    """Put this process's handlers and wakeup fd back after a test installs its own."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    yield
    signal.set_wakeup_fd(-1)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def storm(
    proc: subprocess.Popen[str], count: int, gap: float = 0.001, stop_after: int | None = None
) -> int:
    """``count`` SIGHUPs ``gap`` seconds apart (a SIGTERM after ``stop_after`` of them);
    how many were sent before the process ended."""
    for sent in range(count):
        if sent == stop_after:
            proc.send_signal(signal.SIGTERM)
        if proc.poll() is not None:
            return sent
        proc.send_signal(signal.SIGHUP)
        time.sleep(gap)
    return count


def limit_in_metrics(url: str) -> str:
    text = requests.get(f"{url}/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith("budget_limit_amount{"))
    return line.rsplit(" ", 1)[1]


def test_the_handlers_only_set_flags_and_wake_the_loop(restored_signals) -> None:
    signals = Signals()
    signals.catch_reload()
    signals.catch_stop()
    assert signals.installed
    assert signal.getsignal(signal.SIGHUP) == signals._on_reload
    for _ in range(2000):  # far faster than any handler that did real work could keep up
        os.kill(os.getpid(), signal.SIGHUP)
    started = time.monotonic()
    signals.wait(5)  # the wakeup fd has bytes: no waiting
    assert time.monotonic() - started < 0.5
    assert signals.take_reload() and not signals.take_reload()  # merged into one request
    assert not signals.stop_requested
    os.kill(os.getpid(), signal.SIGTERM)
    signals.wait(5)
    assert signals.stop_requested
    quiet = time.monotonic()
    signals.wait(0.2)  # the pipe was emptied: this one waits
    assert time.monotonic() - quiet >= 0.15


def test_signals_from_another_thread_install_nothing() -> None:
    signals = Signals()
    thread = threading.Thread(target=signals.catch_reload)
    thread.start()
    thread.join()
    assert not signals.installed
    assert signal.getsignal(signal.SIGHUP) != signals._on_reload


def test_a_sighup_storm_leaves_the_exporter_alive_and_reloading(
    write_config, running, tmp_path: Path
) -> None:
    path = write_config(CONFIG)
    exporter = running(path, *QUIET)
    exporter.wait_ready()
    assert limit_in_metrics(exporter.url) == "10.0"
    pid = exporter.proc.pid
    assert storm(exporter.proc, STORM) == STORM
    assert exporter.proc.poll() is None, "the storm killed the exporter"
    assert requests.get(f"{exporter.url}/-/healthy", timeout=5).status_code == 200

    edited = tmp_path / "edited.yml"
    edited.write_text(CONFIG.replace("limit: 10", "limit: 25"))
    edited.replace(path)  # at once: a reload still running never reads half a file
    time.sleep(0.05)  # distinct from the storm's last signal
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while limit_in_metrics(exporter.url) != "25.0":
        assert time.monotonic() < deadline, "the SIGHUP after the storm did not reload"
        time.sleep(0.05)

    started = time.monotonic()
    exporter.proc.send_signal(signal.SIGTERM)
    exporter.proc.wait(10)  # raises if it does not end within 10 s
    assert time.monotonic() - started < 10
    code, err = exporter.stop()
    assert code == 0 and "Traceback" not in err and "level=error" not in err


def test_a_sigterm_in_the_middle_of_a_storm_stops_the_exporter(write_config, running) -> None:
    exporter = running(write_config(CONFIG), *QUIET)
    exporter.wait_ready()
    started = time.monotonic()
    sent = storm(exporter.proc, STORM, stop_after=STORM // 2)  # SIGHUPs go on after the SIGTERM
    exporter.proc.wait(10)
    stopped = time.monotonic() - started
    # The storm up to the SIGTERM takes some 3 s; the stop itself must not wait for its end.
    assert sent < STORM, "the exporter outlived a storm of 2,500 more SIGHUPs after SIGTERM"
    assert stopped < 10 + STORM / 2 * 0.0011
    code, err = exporter.stop()
    assert code == 0 and "Traceback" not in err and "level=error" not in err
