from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.config import load_config
from budget_exporter.engine import Engine
from tests.conftest import Clock
from tests.test_exposition import samples

TWO_SOURCES = """
sources:
  - {name: a, provider: static, amount: 1, currency: USD}
  - {name: b, provider: static, amount: 2, currency: USD}
budgets:
  - {name: total, limit: 10, currency: USD}
"""


def spend(engine: Engine, budget: str) -> float | None:
    for labels, value in samples(engine.snapshot.rendered.text).get("budget_spend_amount", []):
        if labels["budget"] == budget:
            return value
    return None


def test_background_polling_and_readiness(make_engine) -> None:
    engine = make_engine(
        TWO_SOURCES.replace("sources:", "global: {poll_interval: 200ms}\nsources:", 1),
        clock=time.time,
    )
    assert engine.pending_sources() == ["a", "b"]
    engine.start()
    deadline = time.monotonic() + 5
    while engine.pending_sources() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.pending_sources() == []
    assert spend(engine, "total") == 3
    first = engine.snapshot_states()["a"].last_attempt
    deadline = time.monotonic() + 5
    while engine.snapshot_states()["a"].last_attempt == first:  # polled again on its interval
        assert time.monotonic() < deadline, "source was not polled again"
        time.sleep(0.02)


def test_next_poll_never_later_than_the_period_boundary(write_config) -> None:
    clock = Clock(datetime(2026, 11, 30, 23, 50, tzinfo=UTC).timestamp())
    path = write_config(TWO_SOURCES.replace("sources:", "global: {poll_interval: 4h}\nsources:", 1))
    engine = Engine(load_config(path), clock=clock)
    delay = engine.runners["a"].next_delay()
    assert 600 <= delay <= 610  # ten minutes to December, plus a few seconds' grace
    clock.now = datetime(2026, 11, 10, tzinfo=UTC).timestamp()
    assert 4 * 3600 * 0.9 <= engine.runners["a"].next_delay() <= 4 * 3600 * 1.1  # jittered


def test_snapshot_swap_is_atomic_under_concurrent_scrapes(make_engine) -> None:
    lines = ", ".join(f"{{amount: {i}, dimensions: {{model: m{i}}}}}" for i in range(300))
    engine = make_engine(
        f"""
        global: {{max_series_per_source: 1000}}
        sources: [{{name: a, provider: static, currency: USD, lines: [{lines}]}}]
        budgets: [{{name: total, limit: 100000, currency: USD}}]
        """
    )
    engine.poll_all_once()
    stop = threading.Event()
    problems: list[str] = []

    def scrape() -> None:
        while not stop.is_set():
            text = engine.snapshot.rendered.text.decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            if len(families["budget_source_cost_amount"].samples) != 300:
                problems.append("partial cost lines")
            if len(families["budget_spend_amount"].samples) != 1:
                problems.append("budget missing")

    readers = [threading.Thread(target=scrape) for _ in range(2)]
    for reader in readers:
        reader.start()
    for _ in range(30):
        engine.runners["a"].poll()
    stop.set()
    for reader in readers:
        reader.join()
    assert problems == []


def test_reload_keeps_unchanged_sources_and_replaces_changed_ones(
    make_engine, write_config
) -> None:
    engine = make_engine(TWO_SOURCES)
    engine.poll_all_once()
    runner_a, runner_b = engine.runners["a"], engine.runners["b"]
    write_config(
        """
        sources:
          - {name: a, provider: static, amount: 1, currency: USD}
          - {name: b, provider: static, amount: 5, currency: USD}
          - {name: c, provider: static, amount: 7, currency: USD}
        budgets:
          - {name: total, limit: 20, currency: USD, labels: {team: x}}
        """
    )
    assert engine.reload() == (True, "configuration reloaded")
    assert engine.runners["a"] is runner_a  # untouched: keeps its data, no new poll needed
    assert engine.runners["b"] is not runner_b
    assert engine.snapshot_states()["a"].up
    assert engine.pending_sources() == ["b", "c"]
    assert spend(engine, "total") is None  # b and c have no data yet: no fake zeros
    engine.poll_all_once()
    assert spend(engine, "total") == 13
    got = samples(engine.snapshot.rendered.text)
    assert got["budget_exporter_config_last_reload_successful"][0][1] == 1


def test_invalid_reload_keeps_running_config(make_engine, write_config) -> None:
    engine = make_engine(TWO_SOURCES)
    engine.poll_all_once()
    config_before = engine.config
    write_config(
        "sources: [{name: a, provider: static, amount: -x, currency: USD}]\nbudgets: [{name: total}]"
    )
    ok, message = engine.reload()
    assert not ok and "config.yml: sources[0].amount" in message
    assert engine.config is config_before
    assert spend(engine, "total") == 3
    got = samples(engine.snapshot.rendered.text)
    assert got["budget_exporter_config_last_reload_successful"][0][1] == 0


def test_removed_source_stops_and_drops_its_series(make_engine, write_config) -> None:
    engine = make_engine(TWO_SOURCES)
    engine.poll_all_once()
    write_config("sources: [{name: a, provider: static, amount: 1, currency: USD}]")
    assert engine.reload()[0]
    sources = {
        labels["source"] for labels, _ in samples(engine.snapshot.rendered.text)["budget_source_up"]
    }
    assert sources == {"a"}


def test_currency_mismatch_is_counted_and_logged(make_engine, caplog) -> None:
    engine = make_engine(
        """
        sources:
          - {name: eu, provider: static, amount: 3, currency: EUR}
          - {name: us, provider: static, amount: 2, currency: USD}
        budgets: [{name: total, limit: 10, currency: USD}]
        """
    )
    engine.poll_all_once()
    engine.runners["eu"].poll()
    got = samples(engine.snapshot.rendered.text)
    assert got["budget_currency_mismatch_lines_total"] == [
        ({"budget": "total", "source": "eu", "currency": "EUR"}, 2.0)
    ]
    assert spend(engine, "total") == 2  # never mixed
    assert "left out (no currency conversion)" in caplog.text
