"""``--storage.path``: each source's last good state saved and served again after a restart."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from budget_exporter.accounting.holds import Entry
from budget_exporter.config.loader import load_config
from budget_exporter.runtime import storage as storage_module
from budget_exporter.runtime.engine import FIRST_RETRY_SECONDS, Engine
from budget_exporter.runtime.holds import MemoryHolds
from budget_exporter.runtime.storage import State, Storage, decode_states
from budget_exporter.web.api import budgets_document
from tests.support.clock import Clock
from tests.support.fake_upstream import FakeUpstream, Reply

MID_MONTH = datetime(2026, 11, 10, 12, tzinfo=UTC).timestamp()
AMOUNT = "1234.567890123456789"  # more digits than a float keeps


def config_text(upstream: FakeUpstream, path: str = "/cost", interval: str = "1h") -> str:
    return textwrap.dedent(
        f"""
        global: {{poll_interval: {interval}, retries: 0}}
        sources:
          - {{name: bill, provider: http_json, url: "{upstream.url}{path}", amount: total,
              currency: USD, headers: {{Authorization: "Bearer s3cr3t-token"}}}}
          - {{name: fixed, provider: static, amount: 2, currency: USD}}
        budgets:
          - {{name: team, limit: 5000, currency: USD, sources: [bill]}}
          - {{name: flat, limit: 10, currency: USD, sources: [fixed]}}
        """
    )


@pytest.fixture
def engines() -> Callable[..., Engine]:
    made: list[Engine] = []

    def make(path: Path, clock: Clock, directory: Path) -> Engine:
        engine = Engine(load_config(path), clock=clock, storage=Storage(directory))
        made.append(engine)
        return engine

    make.made = made  # type: ignore[attr-defined]
    yield make  # type: ignore[misc]
    for engine in made:
        engine.stop(timeout=1)


def spend(engine: Engine, budget: str) -> Decimal | None:
    view = engine.snapshot.budget(budget)
    return None if view is None else view.spend


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("budget_exporter.runtime")
    ]


def polled_and_saved(engines, write_config, upstream, tmp_path) -> tuple[Path, Clock, Path]:
    upstream.default = Reply(json={"total": AMOUNT})
    path = write_config(config_text(upstream))
    clock = Clock(MID_MONTH)
    directory = tmp_path / "data"
    engine = engines(path, clock, directory)
    for runner in engine.runners.values():
        assert runner.poll()
    engine._save()
    return path, clock, directory


def test_a_restart_serves_the_saved_figures_with_their_real_age(
    engines, write_config, upstream, tmp_path
) -> None:
    path, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    saved = (directory / "state.json").read_text()
    assert "s3cr3t-token" not in saved and upstream.url not in saved  # no secrets stored
    assert oct((directory / "state.json").stat().st_mode & 0o777) == "0o600"
    seen = len(upstream.seen)

    clock.now = MID_MONTH + 600  # restarted ten minutes later
    engine = engines(path, clock, directory)
    assert engine.pending_sources() == []  # ready at once: every budget has figures
    assert spend(engine, "team") == Decimal(AMOUNT)  # every digit kept
    assert spend(engine, "flat") == Decimal(2)
    state = engine.live_states()["bill"]
    assert state.last_success == MID_MONTH  # its real age, not the restart's time
    document = budgets_document(engine.snapshot, clock.now)
    team = next(b for b in document["budgets"] if b["name"] == "team")
    assert team["data_age_seconds"] == 600 and team["state"] == "ok" and not team["stale"]
    assert b"budget_source_last_success_timestamp_seconds" in engine.snapshot.rendered.text
    # polled when its interval since the saved success runs out, not at once
    assert engine._first_delay(engine.runners["bill"]) == pytest.approx(3600 - 600)
    assert len(upstream.seen) == seen


def test_restored_figures_are_polled_again_at_the_period_boundary(
    engines, write_config, upstream, tmp_path
) -> None:
    upstream.default = Reply(json={"total": AMOUNT})
    path = write_config(config_text(upstream, interval="4h"))
    clock = Clock(datetime(2026, 11, 30, 23, 0, tzinfo=UTC).timestamp())
    directory = tmp_path / "data"
    assert engines(path, clock, directory).runners["bill"].poll()
    engines.made[-1]._save()  # type: ignore[attr-defined]
    clock.now += 1800  # restarted at 23:30, due at 03:00 by its interval
    engine = engines(path, clock, directory)
    assert spend(engine, "team") == Decimal(AMOUNT)
    assert engine._first_delay(engine.runners["bill"]) == pytest.approx(1800 + 5)


def test_a_source_that_was_failing_is_restored_down_and_polled_at_once(
    engines, write_config, upstream, tmp_path
) -> None:
    path, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    engine = engines(path, clock, directory)
    upstream.default = Reply(status=503, json={})
    clock.now += 3600
    assert not engine.runners["bill"].poll()
    engine._save()
    text = (directory / "state.json").read_text()
    assert "error" not in text and "HTTP" not in text  # no error text kept
    clock.now += 60
    again = engines(path, clock, directory)
    state = again.live_states()["bill"]
    assert (state.up, state.last_success, state.last_attempt) == (
        False,
        MID_MONTH,
        MID_MONTH + 3600,
    )
    assert state.last_error and "before the restart" in state.last_error
    assert spend(again, "team") == Decimal(AMOUNT)  # its last good figures, as before
    assert again._first_delay(again.runners["bill"]) == 0.0


def test_figures_of_a_previous_period_are_not_restored(
    engines, write_config, upstream, tmp_path, caplog
) -> None:
    path, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    clock.now = datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC).timestamp()  # December now
    caplog.set_level(logging.INFO)
    engine = engines(path, clock, directory)
    assert spend(engine, "team") is None  # unknown until polled, never November's figures
    assert engine._first_delay(engine.runners["bill"]) == 0.0
    assert any("2 polled for an earlier period" in m for m in caplog.messages)


def test_changed_and_removed_sources_do_not_reuse_saved_figures(
    engines, write_config, upstream, tmp_path, caplog
) -> None:
    _, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    text = config_text(upstream, path="/other-account")
    text = text.replace("  - {name: fixed, provider: static, amount: 2, currency: USD}\n", "")
    text = text.replace("  - {name: flat, limit: 10, currency: USD, sources: [fixed]}\n", "")
    changed = write_config(text, "changed.yml")
    caplog.set_level(logging.INFO)
    engine = engines(changed, clock, directory)
    assert spend(engine, "team") is None
    lines = [m for m in caplog.messages if m.startswith("storage:")]
    assert lines == [
        f"storage: restored the figures of 0 of 1 sources from {directory / 'state.json'} "
        "(dropped 1 no longer configured, 1 whose settings changed)"
    ]
    engine._save()
    assert (
        decode_states((directory / "state.json").read_bytes()).sources == {}
    )  # both left the file


def test_figures_kept_through_a_reload_are_not_saved_under_the_new_settings(
    engines, write_config, upstream, tmp_path
) -> None:
    path, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    engine = engines(path, clock, directory)
    path.write_text(config_text(upstream, path="/other-account"))
    assert engine.reload()[0]
    assert spend(engine, "team") == Decimal(AMOUNT)  # served until the new settings answer
    engine._save()
    assert set(decode_states((directory / "state.json").read_bytes()).sources) == {"fixed"}
    upstream.default = Reply(json={"total": "3"})
    assert engine.runners["bill"].poll()
    engine._save()
    saved = decode_states((directory / "state.json").read_bytes()).sources
    assert saved["bill"].result.lines[0].amount == Decimal(3)


def test_holds_in_memory_survive_a_restart_until_they_expire(
    engines, write_config, upstream, tmp_path, caplog
) -> None:
    path, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    engine = engines(path, clock, directory)
    assert isinstance(engine.holds, MemoryHolds)

    def entry(hold_id: str, ttl: float, recorded: float | None = None) -> Entry:
        return Entry(
            hold_id, "worker-7", f"job-{hold_id}", ("team",), Decimal("4.20"), "USD",
            clock.now, clock.now + ttl, recorded, ("bill",) if recorded else (),
        )  # fmt: skip

    engine.holds.restore([entry("a", 600), entry("b", 30), entry("c", 600, clock.now)], clock.now)
    engine._save()
    clock.now += 60  # restarted a minute later: "b" has expired meanwhile
    caplog.set_level(logging.INFO)
    again = engines(path, clock, directory)
    assert isinstance(again.holds, MemoryHolds)
    assert sorted(e.id for e in again.holds.entries()) == ["a", "c"]
    assert {e.id: e for e in again.holds.entries()} == {
        e.id: e for e in engine.holds.entries() if e.id != "b"
    }
    assert again.holds.in_flight() == 1  # "c" is a recorded cost, "a" still in flight
    assert "storage: restored 2 hold(s) of the check API not yet expired" in caplog.messages


def test_a_longer_poll_interval_keeps_the_saved_figures(
    engines, write_config, upstream, tmp_path
) -> None:
    _, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    slower = write_config(config_text(upstream, interval="2h"), "slower.yml")
    engine = engines(slower, clock, directory)
    assert spend(engine, "team") == Decimal(AMOUNT)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "the file is empty"),
        (b'{"format": "budget-exporter-state", "version": 1, "sour', "not valid JSON"),
        (b'{"hello": "world"}', "not a budget-exporter state file"),
        (b"\x00\xff\xfe garbage", "not valid JSON"),
        (
            b'{"format": "budget-exporter-state", "version": 99, "sources": {}}',
            "written by a newer budget-exporter (format 99; this one reads 1)",
        ),
        (
            b'{"format": "budget-exporter-state", "version": 1, "sources": '
            b'{"bill": {"fingerprint": "x", "provider": "http_json", "result": 7}}}',
            "source 'bill' is malformed",
        ),
    ],
    ids=["empty", "truncated", "foreign", "binary", "future-version", "malformed"],
)
def test_an_unusable_file_is_ignored_with_one_line(
    engines, write_config, upstream, tmp_path, caplog, content, said
) -> None:
    upstream.default = Reply(json={"total": "5"})
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "state.json").write_bytes(content)
    engine = engines(write_config(config_text(upstream)), Clock(MID_MONTH), directory)
    assert spend(engine, "team") is None
    assert engine.pending_sources() == ["bill", "fixed"]
    warnings = warnings_of(caplog)
    assert len(warnings) == 1, warnings
    assert said in warnings[0] and "starting without saved figures" in warnings[0]
    assert engine.runners["bill"].poll()  # and it goes on: polls, saves over the bad file
    engine._save()
    assert set(decode_states((directory / "state.json").read_bytes()).sources) == {"bill"}


def test_a_full_disk_logs_one_line_and_keeps_serving(
    engines, write_config, upstream, tmp_path, caplog, monkeypatch
) -> None:
    path, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    before = (directory / "state.json").read_bytes()
    engine = engines(path, clock, directory)

    def full(self, temporary: Path, data: bytes) -> None:
        temporary.write_bytes(data[: len(data) // 2])  # what fitted
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Storage, "_write", full)
    for _ in range(3):
        assert engine.runners["bill"].poll()
        engine._save()
    warnings = warnings_of(caplog)
    assert warnings == [
        f"storage: cannot save state in {directory}: No space left on device; still serving, "
        "but a restart will not find the latest figures"
    ]
    assert (directory / "state.json").read_bytes() == before  # the old state, whole
    assert not list(directory.glob(".state.json.*.tmp"))
    assert spend(engine, "team") == Decimal(AMOUNT)
    monkeypatch.undo()
    caplog.set_level(logging.INFO)
    engine._save()
    assert "storage: saving state to" in caplog.messages[-1]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_a_read_only_directory_logs_one_line(
    engines, write_config, upstream, tmp_path, caplog
) -> None:
    path, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    directory.chmod(0o500)
    try:
        engine = engines(path, clock, directory)
        assert spend(engine, "team") == Decimal(AMOUNT)  # still read
        engine._save()
        assert len(warnings_of(caplog)) == 1
    finally:
        directory.chmod(0o700)


def test_a_read_only_file_system_logs_one_line(
    engines, write_config, upstream, tmp_path, caplog, monkeypatch
) -> None:
    """As root (where a read-only directory is writable anyway), the error the kernel gives
    for a read-only mount, injected where the file is opened."""
    path, clock, directory = polled_and_saved(engines, write_config, upstream, tmp_path)
    real_open = os.open

    def read_only(file, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if flags & os.O_WRONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(storage_module.os, "open", read_only)
    engine = engines(path, clock, directory)
    assert spend(engine, "team") == Decimal(AMOUNT)
    engine._save()
    engine._save()
    assert warnings_of(caplog) == [
        f"storage: cannot save state in {directory}: Read-only file system; still serving, "
        "but a restart will not find the latest figures"
    ]


KILLER = """
import sys
from budget_exporter.runtime.storage import Storage
storage = Storage(sys.argv[1])
n = 0
while True:
    n += 1
    payload = ('{"format": "budget-exporter-state", "version": 1, "written_at": %d, "sources": {}, '
               '"padding": "%s"}' % (n, "x" * 4_000_000)).encode()
    storage.save(payload)
    print(n, flush=True)
"""


def test_a_sigkill_during_a_write_leaves_a_file_that_loads(tmp_path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLER, str(directory)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for _ in range(2 + attempt):  # a few whole writes, then killed in the middle of one
            proc.stdout.readline()
        time.sleep(0.01 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        document = json.loads((directory / "state.json").read_bytes())
        assert document["written_at"] >= 1
        assert Storage(directory).load() == State()  # loads: a whole state, old or new
    for leftover in directory.glob(".state.json.*.tmp"):  # killed writes' temporary files
        os.utime(leftover, (0, 0))
    in_progress = directory / ".state.json.1.cafe.tmp"  # a replica writing right now
    in_progress.write_bytes(b"{")
    Storage(directory).check_writable()
    assert list(directory.glob(".state.json.*.tmp")) == [in_progress]


def failing_at_the_boundary(write_config, upstream) -> tuple[Engine, Clock]:
    upstream.default = Reply(status=503, json={})
    clock = Clock(datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC).timestamp())  # 5 s into December
    engine = Engine(load_config(write_config(config_text(upstream, interval="4h"))), clock=clock)
    return engine, clock


def test_a_bill_failing_at_the_period_boundary_is_retried_within_two_minutes(
    write_config, upstream
) -> None:
    engine, clock = failing_at_the_boundary(write_config, upstream)
    runner = engine.runners["bill"]
    assert runner.next_delay() > 3 * 3600  # a good source waits its interval
    assert not runner.poll()
    retry = runner.next_delay()
    assert FIRST_RETRY_SECONDS * 0.9 <= retry <= FIRST_RETRY_SECONDS * 1.1 < 120
    upstream.default = Reply(json={"total": "7"})
    clock.now += retry
    assert runner.poll()
    assert spend(engine, "team") == Decimal(7)  # December's figures one retry later
    assert runner.next_delay() > 3 * 3600


def test_the_backoff_doubles_up_to_the_poll_interval(write_config, upstream) -> None:
    engine, _ = failing_at_the_boundary(write_config, upstream)
    runner = engine.runners["bill"]
    delays = []
    for _ in range(10):
        assert not runner.poll()
        delays.append(runner.next_delay())
    assert 54 <= delays[0] <= 66 and 108 <= delays[1] <= 132 and 216 <= delays[2] <= 264
    assert all(d <= 4 * 3600 * 1.1 for d in delays)
    assert delays[-1] >= 4 * 3600 * 0.9  # capped at the interval
