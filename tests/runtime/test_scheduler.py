"""The poll pool and the coalesced rebuilds (issue: thousands of sources)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

from budget_exporter.runtime.scheduler import Coalescer, PollScheduler
from tests.runtime.test_engine import spend
from tests.support.fake_upstream import Reply


def wait_for(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def many_sources(n: int, workers: int = 4, interval: str = "1h") -> str:
    sources = "\n".join(
        f"  - {{name: s{i}, provider: static, amount: {i}, currency: USD}}" for i in range(n)
    )
    budgets = "\n".join(
        f"  - {{name: b{i}, limit: 1000, currency: USD, sources: [s{i}]}}" for i in range(n)
    )
    return (
        f"global: {{poll_interval: {interval}, poll_workers: {workers}}}\n"
        f"sources:\n{sources}\nbudgets:\n{budgets}\n"
    )


def test_a_burst_of_requests_gives_few_runs_and_the_last_value_is_served() -> None:
    value = 0
    served: list[int] = []
    lock = threading.Lock()

    def build() -> None:
        served.append(value)
        time.sleep(0.02)  # a rebuild takes a while; requests keep arriving meanwhile

    coalescer = Coalescer(build, min_delay=0.01, max_delay=0.2)
    coalescer.start()
    try:

        def producer() -> None:
            nonlocal value
            for _ in range(200):
                with lock:
                    value += 1
                coalescer.request()  # after the change, as the engine does
                time.sleep(0.001)

        threads = [threading.Thread(target=producer) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wait_for(coalescer.idle, what="the last run")
    finally:
        coalescer.stop()
    assert coalescer.requests == 1000
    assert 1 <= coalescer.runs <= 100  # never one run per request
    assert served[-1] == 1000  # the last change is always in a run
    assert served == sorted(served)


def test_continuous_requests_leave_time_between_runs() -> None:
    """Requests arriving all the time never make runs follow each other back to back."""
    ends: list[float] = []
    starts: list[float] = []

    def build() -> None:
        starts.append(time.monotonic())
        time.sleep(0.05)
        ends.append(time.monotonic())

    coalescer = Coalescer(build, min_delay=0.01, max_delay=1.0, idle_ratio=2.0)
    coalescer.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            coalescer.request()
            time.sleep(0.002)
        wait_for(coalescer.idle, what="the last run")
    finally:
        coalescer.stop()
    gaps = [start - end for end, start in zip(ends, starts[1:], strict=False)]
    assert gaps and min(gaps) >= 0.09  # twice the run's 0.05 s, minus timer slack
    assert len(starts) <= 10  # about a third of the second, not all of it


def test_a_request_waits_at_most_the_bounded_delay() -> None:
    ran = threading.Event()
    coalescer = Coalescer(ran.set, min_delay=0.05, max_delay=0.3)
    coalescer.start()
    try:
        started = time.monotonic()
        coalescer.request()
        assert ran.wait(2)
        assert time.monotonic() - started < 1.0
    finally:
        coalescer.stop()


def test_many_sources_are_polled_by_a_few_threads_with_few_rebuilds(make_engine) -> None:
    before = threading.active_count()
    engine = make_engine(many_sources(300, workers=4), clock=time.time)
    engine.start()
    wait_for(lambda: not engine.pending_sources(), what="readiness")
    threads = threading.active_count() - before
    assert threads <= 4 + 2, f"{threads} threads for 300 sources"
    assert engine.thread_count() <= 4 + 2
    assert engine.rebuilds < 60  # 300 polls, coalesced
    budgets = {b.name: b for b in engine.snapshot.budgets}
    assert len(budgets) == 300  # the last polls' data is served
    assert all(budgets[f"b{i}"].spend == i for i in range(300))
    assert spend(engine, "b299") == 299


def test_a_reload_keeps_the_schedules_of_unchanged_sources(make_engine, write_config) -> None:
    engine = make_engine(many_sources(200, workers=4), clock=time.time)
    engine.start()
    wait_for(lambda: not engine.pending_sources(), what="readiness")
    started = engine._scheduler.polls_started
    text = many_sources(200, workers=4).replace(
        "{name: s7, provider: static, amount: 7,", "{name: s7, provider: static, amount: 70,"
    )
    text = text.replace("  - {name: s9, provider: static, amount: 9, currency: USD}\n", "")
    text = text.replace("  - {name: b9, limit: 1000, currency: USD, sources: [s9]}\n", "")
    text += "  - {name: new, limit: 1000, currency: USD, sources: [new]}\n"
    text = text.replace(
        "sources:\n", "sources:\n  - {name: new, provider: static, amount: 5, currency: USD}\n", 1
    )
    write_config(text)
    assert engine.reload()[0]
    wait_for(lambda: spend(engine, "b7") == 70 and spend(engine, "new") == 5, what="new data")
    time.sleep(0.3)
    assert engine._scheduler.polls_started - started == 2  # s7 (changed) and new: nobody else
    assert "s9" not in engine.live_states()
    assert spend(engine, "b9") is None


def test_a_hanging_source_holds_the_others_back_no_longer_than_its_timeout(
    make_engine, upstream
) -> None:
    """With a single worker, a source whose API never answers in time takes the
    worker for its timeout only; the fast sources keep being polled."""
    upstream.default = Reply(200, {"total": 1}, delay=5.0)
    engine = make_engine(
        f"""
        global: {{poll_interval: 200ms, poll_workers: 1, timeout: 300ms, retries: 0}}
        sources:
          - {{name: hang, provider: http_json, url: "{upstream.url}/cost", amount: total, currency: USD}}
          - {{name: fast1, provider: static, amount: 1, currency: USD}}
          - {{name: fast2, provider: static, amount: 2, currency: USD}}
        """,
        clock=time.time,
    )
    engine.start()
    wait_for(lambda: not engine.pending_sources(), timeout=5, what="readiness")
    attempts: Counter[str] = Counter()
    last: dict[str, float | None] = {}
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for name, state in engine.live_states().items():
            if state.last_attempt != last.get(name):
                last[name] = state.last_attempt
                attempts[name] += 1
        time.sleep(0.01)
    assert attempts["fast1"] >= 3 and attempts["fast2"] >= 3, attempts
    assert attempts["hang"] >= 2, attempts  # timed out, polled again: not stuck either
    assert "timed out" in (engine.live_states()["hang"].last_error or "")


def test_the_scheduler_never_runs_two_polls_of_a_source_at_once() -> None:
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    done: Counter[str] = Counter()
    lock = threading.Lock()

    def task(name: str) -> float | None:
        with lock:
            running[name] += 1
            most[name] = max(most[name], running[name])
        time.sleep(0.02)
        with lock:
            running[name] -= 1
            done[name] += 1
        return 0.0

    scheduler = PollScheduler(task, workers=4)
    scheduler.start()
    try:
        for name in ("a", "b"):
            scheduler.schedule(name, 0.0)
        for _ in range(100):  # wake-ups while a poll is in flight
            scheduler.schedule("a", 0.0)
            time.sleep(0.002)
        wait_for(lambda: done["a"] >= 5 and done["b"] >= 5, what="polls")
    finally:
        scheduler.stop(2)
    assert most == {"a": 1, "b": 1}


def test_a_rate_limited_provider_starts_its_polls_spread_out() -> None:
    starts: list[float] = []

    def task(name: str) -> float | None:
        starts.append(time.monotonic())
        return None

    scheduler = PollScheduler(task, workers=8, rates={"aws": 10.0})
    scheduler.start()
    try:
        for i in range(6):
            scheduler.schedule(f"acct{i}", 0.0, group="aws")
        wait_for(lambda: len(starts) == 6, what="six polls")
    finally:
        scheduler.stop(2)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.08 for gap in gaps), gaps  # 10 per second, not all at once
    assert starts[-1] - starts[0] < 2.0
