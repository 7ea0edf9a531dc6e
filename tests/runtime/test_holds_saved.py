"""Holds in memory reach ``--storage.path`` within about a second of a change (taken,
recorded, released), without waiting for a poll and without a write per check: an exporter
killed a little later still has them when it starts again."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from budget_exporter.config.loader import load_config
from budget_exporter.runtime.engine import Engine
from budget_exporter.runtime.storage import Storage, decode_states
from budget_exporter.web import api
from tests.support.exporter import ExporterProcess, exporters

CONFIG = """
global: {poll_interval: 1h}
sources:
  - {name: fixed, provider: static, amount: 100, currency: USD}
budgets:
  - {name: team, limit: 1000, currency: USD, sources: [fixed]}
"""
SAVED_WITHIN = 5.0
"""Seconds a change may take to reach the file (about one: the saves' coalescing delay)."""


@pytest.fixture
def engines(write_config: Callable[[str], Path]) -> Iterator[Callable[[Path], Engine]]:
    made: list[Engine] = []
    path = write_config(CONFIG)

    def make(directory: Path) -> Engine:
        engine = Engine(load_config(path), storage=Storage(directory))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.stop(timeout=1)


def call(engine: Engine, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, payload, _ = api.handle(engine, "POST", path, json.dumps(body).encode())
    answer = json.loads(payload)
    assert status == 200, answer
    return answer


def saved_holds(directory: Path) -> dict[str, Any]:
    """The holds in the state file as it is on disk now, by id."""
    try:
        data = (directory / "state.json").read_bytes()
    except FileNotFoundError:
        return {}
    return {entry.id: entry for entry in decode_states(data).holds}


def wait_until(condition: Callable[[], bool], timeout: float = SAVED_WITHIN) -> float:
    """Seconds until ``condition`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not saved within {timeout:g} s")
        time.sleep(0.02)
    return time.monotonic() - started


def started(engines: Callable[[Path], Engine], directory: Path) -> Engine:
    engine = engines(directory)
    engine.start()
    wait_until(lambda: engine.pending_sources() == [] and engine.storage.writes >= 1, 30)
    return engine


def test_a_hold_taken_recorded_and_released_is_saved_without_a_poll(
    engines, tmp_path: Path
) -> None:
    directory = tmp_path / "data"
    engine = started(engines, directory)
    answer = call(engine, "/api/v1/check", {"budget": "team", "cost": 5, "hold": True,
                                            "hold_seconds": 600, "client": "worker-1"})  # fmt: skip
    hold = answer["hold"]["id"]
    wait_until(lambda: hold in saved_holds(directory))
    # Killed now (no save on the way out): a new exporter on the same directory has it.
    again = engines(directory)
    assert [e.id for e in again.holds.entries()] == [hold]
    assert again.holds.held(time.time(), {}) == {"team": 5}

    call(engine, "/api/v1/release", {"hold": hold, "cost": 4.5})  # a recorded cost
    wait_until(lambda: saved_holds(directory).get(hold, None) is not None
               and saved_holds(directory)[hold].recorded_at is not None)  # fmt: skip
    assert saved_holds(directory)[hold].amount == 4.5

    second = call(engine, "/api/v1/check", {"budget": "team", "cost": 7, "hold": True})
    wait_until(lambda: second["hold"]["id"] in saved_holds(directory))
    call(engine, "/api/v1/release", {"hold": second["hold"]["id"]})  # released without cost
    wait_until(lambda: second["hold"]["id"] not in saved_holds(directory))
    assert list(saved_holds(directory)) == [hold]


def test_checks_write_nothing_and_a_burst_of_holds_is_one_write(engines, tmp_path: Path) -> None:
    engine = started(engines, tmp_path / "data")
    time.sleep(1.5)  # past the start's own save
    writes = engine.storage.writes
    for _ in range(200):
        assert call(engine, "/api/v1/check", {"budget": "team", "cost": 1})["allowed"]
    time.sleep(1.5)
    assert engine.storage.writes == writes  # a check without a hold changes nothing to save

    ids = [
        call(engine, "/api/v1/check", {"budget": "team", "cost": 1, "hold": True})["hold"]["id"]
        for _ in range(50)
    ]
    wait_until(lambda: set(ids) <= set(saved_holds(tmp_path / "data")))
    time.sleep(1.5)
    assert 1 <= engine.storage.writes - writes <= 2  # coalesced: not a write per hold


def test_the_sources_are_encoded_again_only_when_polled(engines, tmp_path: Path) -> None:
    engine = started(engines, tmp_path / "data")
    storage = engine.storage
    assert storage is not None
    state = engine.live_states()["fixed"]
    first = storage._encoded["fixed"]
    assert first[0] is state
    call(engine, "/api/v1/check", {"budget": "team", "cost": 1, "hold": True})
    wait_until(lambda: len(saved_holds(tmp_path / "data")) == 1)
    kept = storage._encoded["fixed"]
    assert kept[0] is state and kept[2] is first[2]  # a save for the holds reuses its JSON
    assert engine.runners["fixed"].poll()
    engine._save()
    now = storage._encoded["fixed"]
    assert now[0] is engine.live_states()["fixed"] is not state and now[2] is not first[2]


@pytest.fixture
def running() -> Iterator[Callable[..., ExporterProcess]]:
    yield from exporters()


def test_a_hold_survives_sigkill_of_the_exporter(running, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(CONFIG))
    directory = tmp_path / "data"
    first = running(path, f"--storage.path={directory}")
    first.wait_ready()
    wait_until(lambda: (directory / "state.json").exists(), 30)  # the first polls' save
    time.sleep(1.5)  # and no other save due: only the hold can cause the next one
    answer = requests.post(
        f"{first.url}/api/v1/check",
        json={"budget": "team", "cost": 5, "hold": True, "hold_seconds": 600},
        timeout=5,
    ).json()
    hold = answer["hold"]["id"]
    wait_until(lambda: hold in saved_holds(directory))
    first.proc.send_signal(signal.SIGKILL)  # no save on the way out
    first.proc.wait(10)

    second = running(path, f"--storage.path={directory}")
    second.wait_ready()
    document = requests.get(f"{second.url}/api/v1/budgets", timeout=5).json()
    team = next(b for b in document["budgets"] if b["name"] == "team")
    assert team["held"] == 5
    released = requests.post(f"{second.url}/api/v1/release", json={"hold": hold}, timeout=5)
    assert released.status_code == 200, released.text
