from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.config.loader import load_config
from budget_exporter.runtime import engine as engine_module
from budget_exporter.runtime.engine import Engine
from tests.exposition.test_families import samples
from tests.support.clock import Clock

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
    first = engine.live_states()["a"].last_attempt
    deadline = time.monotonic() + 5
    while engine.live_states()["a"].last_attempt == first:  # polled again on its interval
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


def test_custom_ranges_wake_the_poller_at_their_edges_only(write_config) -> None:
    clock = Clock(datetime(2026, 11, 10, tzinfo=UTC).timestamp())
    path = write_config(
        """
        global: {poll_interval: 4h}
        sources: [{name: a, provider: static, amount: 1, currency: USD}]
        budgets:
          - {name: over, limit: 10, currency: USD, start: 2026-01-01, end: 2026-06-30}
          - {name: soon, limit: 10, currency: USD, start: 2026-11-10, end: 2026-11-10}
        """
    )
    engine = Engine(load_config(path), clock=clock)
    clock.now = datetime(2026, 11, 10, 23, 50, tzinfo=UTC).timestamp()
    assert 600 <= engine.runners["a"].next_delay() <= 610  # "soon" ends at midnight
    # after every edge has passed (the range over long ago), the interval, not a busy loop
    clock.now = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    assert 4 * 3600 * 0.9 <= engine.runners["a"].next_delay() <= 4 * 3600 * 1.1


def test_every_scrape_sees_one_consistent_snapshot(make_engine) -> None:
    """Budgets and cost lines in one exposition always come from the same poll."""
    lines = ", ".join(f"{{amount: {i}, dimensions: {{model: m{i}}}}}" for i in range(300))
    engine = make_engine(
        f"""
        global: {{max_series_per_source: 1000}}
        sources: [{{name: a, provider: static, currency: USD, lines: [{lines}]}}]
        budgets: [{{name: total, limit: 1000000, currency: USD}}]
        """
    )
    from budget_exporter.core.model import PollResult, SpendLine

    runner = engine.runners["a"]
    original = runner.provider.poll
    scale = iter(range(1, 10_000))

    def changing(windows):  # every poll returns different amounts
        factor = next(scale)
        return PollResult(
            lines=tuple(
                SpendLine(ln.period, ln.amount * factor, ln.currency, ln.dimensions)
                for ln in original(windows).lines
            )
        )

    runner.provider.poll = changing  # type: ignore[method-assign]
    runner.poll()
    stop = threading.Event()
    problems: list[str] = []
    scrapes = 0

    def scrape() -> None:
        nonlocal scrapes
        while not stop.is_set():
            text = engine.snapshot.rendered.text.decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            lines = families["budget_source_cost_amount"].samples
            (total,) = families["budget_spend_amount"].samples
            if len(lines) != 300 or abs(sum(s.value for s in lines) - total.value) > 1e-6:
                problems.append(
                    f"spend {total.value} but lines sum to {sum(s.value for s in lines)}"
                )
            scrapes += 1

    readers = [threading.Thread(target=scrape) for _ in range(2)]
    for reader in readers:
        reader.start()
    for _ in range(30):
        runner.poll()
    stop.set()
    for reader in readers:
        reader.join()
    assert scrapes > 0
    assert problems == []
    assert spend(engine, "total") == sum(range(300)) * 31


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
    assert engine.live_states()["a"].up
    assert engine.live_states()["b"].result is not None  # keeps its last good data
    assert engine.pending_sources() == []  # a reload never takes a ready exporter out
    assert spend(engine, "total") is None  # c has no data yet: no fake zeros
    engine.runners["c"].poll()
    assert spend(engine, "total") == 10  # b's old amount (2) until b is polled again
    engine.runners["b"].poll()
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


def test_currency_mismatch_is_logged_once_per_configuration_and_counted_every_poll(
    make_engine, write_config, caplog
) -> None:
    text = """
        sources: [{name: eu, provider: static, amount: 3, currency: EUR}]
        budgets:
          - {name: total, limit: 10, currency: USD}
          - {name: typo, limit: 10, currency: EUR, match: {servce_name: x}}
        """
    engine = make_engine(text)

    def warnings(about: str) -> int:
        return sum(about in record.getMessage() for record in caplog.records)

    for _ in range(4):
        engine.runners["eu"].poll()
    got = samples(engine.snapshot.rendered.text)["budget_currency_mismatch_lines_total"]
    assert got == [({"budget": "total", "source": "eu", "currency": "EUR"}, 4.0)]
    assert warnings("not the budget's currency") == 1
    assert warnings("match on 'servce_name'") == 1
    write_config(text + "# changed\n")
    assert engine.reload()[0]
    engine.runners["eu"].poll()
    assert warnings("not the budget's currency") == 2  # once more under the new configuration
    assert warnings("match on 'servce_name'") == 2


def test_a_polls_lines_are_checked_without_holding_the_engine_lock(
    make_engine, monkeypatch
) -> None:
    engine = make_engine(
        """
        sources: [{name: eu, provider: static, amount: 3, currency: EUR}]
        budgets: [{name: total, limit: 10, currency: USD}]
        """
    )
    free: list[bool] = []
    real = engine_module.currency_mismatches

    def checked(*args):
        def try_lock() -> None:  # from another thread: the engine lock is re-entrant
            free.append(engine._lock.acquire(timeout=2))
            if free[-1]:
                engine._lock.release()

        other = threading.Thread(target=try_lock)
        other.start()
        other.join(5)
        return real(*args)

    monkeypatch.setattr(engine_module, "currency_mismatches", checked)
    engine.runners["eu"].poll()
    assert free == [True]


def test_reload_never_runs_two_polls_of_a_source_at_once(
    make_engine, write_config, upstream
) -> None:
    from tests.support.fake_upstream import Reply

    upstream.default = Reply(200, {"total": 1}, delay=0.6)
    text = f"""
        global: {{poll_interval: 1h, timeout: 5s}}
        sources:
          - {{name: slow, provider: http_json, url: "{upstream.url}/cost", amount: total, currency: USD}}
        """
    engine = make_engine(text, clock=time.time)
    engine.start()
    deadline = time.monotonic() + 5
    while not upstream.seen:  # the first poll is in flight
        assert time.monotonic() < deadline
        time.sleep(0.01)
    write_config(text.replace("timeout: 5s", "timeout: 4s"))
    assert engine.reload()[0]
    deadline = time.monotonic() + 10
    while len(upstream.seen) < 2 or not engine.live_states()["slow"].attempted:
        assert time.monotonic() < deadline, "the new runner never polled"
        time.sleep(0.01)
    while upstream.in_flight:
        time.sleep(0.01)
    assert upstream.max_in_flight == 1
    assert len(upstream.seen) == 2


def test_implausible_amounts_are_a_source_error_not_a_crash(make_engine, upstream) -> None:
    from tests.support.fake_upstream import Reply

    upstream.default = Reply(200, {"total": "9e999999"})
    engine = make_engine(
        f"""
        global: {{poll_interval: 100ms}}
        sources:
          - {{name: wild, provider: http_json, url: "{upstream.url}/cost", amount: total, currency: USD}}
          - {{name: calm, provider: static, amount: 2, currency: USD}}
        budgets: [{{name: calm, limit: 10, currency: USD, sources: [calm]}}]
        """,
        clock=time.time,
    )
    engine.start()
    deadline = time.monotonic() + 5
    while len(upstream.seen) < 3:  # keeps polling after the bad answer
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert engine.healthy()
    state = engine.live_states()["wild"]
    assert not state.up and "not a plausible amount" in (state.last_error or "")
    assert spend(engine, "calm") == 2


def test_the_engine_rejects_implausible_amounts_from_any_provider(make_engine) -> None:
    from decimal import Decimal

    from budget_exporter.core.model import Period, PollResult, SpendLine

    engine = make_engine(TWO_SOURCES)
    engine.runners["a"].provider.poll = lambda windows: PollResult(  # type: ignore[method-assign]
        lines=(SpendLine.of(Period.MONTHLY, Decimal("1e20"), "USD"),)
    )
    assert not engine.runners["a"].poll()
    assert "implausible amount (1.000e+20)" in (engine.live_states()["a"].last_error or "")


def test_a_failing_snapshot_build_keeps_the_previous_snapshot(make_engine, monkeypatch) -> None:
    engine = make_engine(TWO_SOURCES)
    engine.poll_all_once()
    before = engine.snapshot

    def broken(polled=None):
        raise RuntimeError("bug")

    monkeypatch.setattr(engine, "_build", broken)
    assert engine.runners["a"].poll()
    assert engine.snapshot is before


def test_a_reload_that_needs_new_periods_polls_at_once(make_engine, write_config) -> None:
    text = TWO_SOURCES.replace("sources:", "global: {poll_interval: 1h}\nsources:", 1)
    engine = make_engine(text, clock=time.time)
    engine.start()
    deadline = time.monotonic() + 5
    while engine.pending_sources():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    write_config(text + "  - {name: today, limit: 5, currency: USD, period: daily, sources: [a]}\n")
    assert engine.reload()[0]
    deadline = time.monotonic() + 5
    while spend(engine, "today") is None:  # not an hour later: polled again for the daily window
        assert time.monotonic() < deadline, "the daily budget never appeared"
        time.sleep(0.02)
    assert spend(engine, "today") == 1


def test_a_match_on_a_dimension_no_line_has_is_reported(make_engine, caplog) -> None:
    engine = make_engine(
        """
        sources:
          - {name: a, provider: static, currency: USD, lines: [{amount: 3, dimensions: {service_name: EC2}}]}
        budgets:
          - {name: ec2, limit: 10, currency: USD, match: {servce_name: EC2}}
        """
    )
    engine.poll_all_once()
    engine.runners["a"].poll()
    assert spend(engine, "ec2") == 0
    warnings = [r.getMessage() for r in caplog.records if "servce_name" in r.getMessage()]
    assert warnings == [
        "budget ec2: match on 'servce_name', but no line from source a has that dimension "
        "(it has: service_name)"
    ]  # once, not on every poll


def test_readiness_latches_and_reloads_never_raise(make_engine, write_config, monkeypatch) -> None:
    engine = make_engine(TWO_SOURCES)
    engine.poll_all_once()
    assert engine.pending_sources() == []
    write_config(TWO_SOURCES.replace("{name: b, provider: static, amount: 2, currency: USD}",
                                     "{name: b, provider: demo, currency: USD}"))  # fmt: skip
    assert engine.reload()[0]
    assert engine.pending_sources() == []  # b is new in kind, but the exporter stays ready

    def loader_bug(path):
        raise TypeError("unexpected")

    monkeypatch.setattr("budget_exporter.runtime.engine.load_config", loader_bug)
    ok, message = engine.reload()
    assert not ok and message == "TypeError: unexpected"


def test_currency_mismatches_count_even_before_every_source_has_data(make_engine) -> None:
    engine = make_engine(
        """
        sources:
          - {name: a, provider: static, amount: 1, currency: USD}
          - {name: b, provider: static, amount: 3, currency: EUR}
        budgets: [{name: x, limit: 10, currency: USD}]
        """
    )
    engine.runners["b"].poll()  # a has no data yet: the budget is hidden
    got = samples(engine.snapshot.rendered.text)
    assert got["budget_currency_mismatch_lines_total"] == [
        ({"budget": "x", "source": "b", "currency": "EUR"}, 1.0)
    ]
