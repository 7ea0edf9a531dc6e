"""The hold arithmetic and the in-memory store: decisions, expiry, coverage, limits."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from budget_exporter.accounting.holds import (
    Entry,
    HoldRefused,
    HoldRequest,
    HoldSettings,
    Room,
    check_name,
    check_ttl,
    is_covered,
)
from budget_exporter.runtime.holds import MemoryHolds

D = Decimal


def room(budget: str = "b", headroom: str | None = "50", deny: bool = False) -> Room:
    return Room(budget, None if headroom is None else D(headroom), deny)


def test_room_fits_below_the_stop_threshold_only() -> None:
    assert room().fits(D(40), D("9.99"))
    assert not room().fits(D(40), D(10))  # reaching the threshold is denied
    assert room(headroom=None).fits(D(10**9), D(1))  # no figures: nothing to compare
    assert not room(deny=True).fits(D(0), D(0))


def test_holds_count_against_later_checks_until_released_or_expired() -> None:
    store = MemoryHolds(HoldSettings())
    request = HoldRequest(client="c", ttl=10)
    granted = [store.check((room(),), D(5), "USD", request, 100.0, {}) for _ in range(12)]
    assert [o.allowed for o in granted] == [True] * 9 + [False] * 3  # 9 x 5 < 50, 10 x 5 is not
    assert granted[8].held == {"b": D(40)}
    assert store.held(100.0, {}) == {"b": D(45)}
    # Released without a cost: the room comes back at once.
    first = granted[0].hold
    assert first is not None
    assert store.release(first.id, None, 101.0) is None
    assert store.check((room(),), D(5), "USD", request, 101.0, {}).allowed
    # Expired: every hold frees itself.
    assert store.held(111.0, {}) == {}
    assert store.check((room(),), D(45), "USD", None, 111.0, {}).allowed


def test_a_recorded_cost_counts_until_a_meter_poll_covers_it() -> None:
    store = MemoryHolds(HoldSettings(record_ttl=3600))
    request = HoldRequest(client="c", ttl=60, sources=("meter",))
    outcome = store.check((room(),), D(5), "USD", request, 100.0, {})
    assert outcome.hold is not None
    recorded = store.release(outcome.hold.id, D(7), 105.0)
    assert recorded is not None and recorded.recorded_at == 105.0 and recorded.amount == D(7)
    # A poll that started before the record plus visible_after does not cover it ...
    assert store.held(200.0, {"meter": 104.0}) == {"b": D(7)}
    assert store.held(200.0, {"meter": 105.0}) == {}  # ... one at or after it does.
    # A retried release of a hold already released changes nothing.
    again = store.check((room(),), D(5), "USD", request, 300.0, {})
    assert again.hold is not None
    store.release(again.hold.id, D(3), 301.0)
    assert store.release(again.hold.id, D(30), 302.0) is not None
    assert store.held(302.0, {}) == {"b": D(3)}
    # Without a covering poll, the recorded cost ends at record_ttl.
    assert store.held(301.0 + 3600, {}) == {}


def test_is_covered_needs_every_source_and_a_record() -> None:
    entry = Entry("x", "c", None, ("b",), D(1), "USD", 0.0, 10.0, 5.0, ("m1", "m2"))
    assert not is_covered(entry, {"m1": 6.0})
    assert is_covered(entry, {"m1": 6.0, "m2": 5.0})
    assert not is_covered(Entry("y", "c", None, ("b",), D(1), "USD", 0.0, 10.0), {"m1": 99.0})
    no_meter = Entry("z", "c", None, ("b",), D(1), "USD", 0.0, 10.0, 5.0, ())
    assert not is_covered(no_meter, {"m1": 99.0}) and no_meter.counts(9.0, {"m1": 99.0})


def test_one_budget_blocks_every_other() -> None:
    store = MemoryHolds()
    rooms = (room("company", "10"), room("team", "1000"))
    outcome = store.check(rooms, D(20), "USD", HoldRequest("c", 10), 0.0, {})
    assert not outcome.allowed and outcome.hold is None
    assert store.held(0.0, {}) == {}  # nothing held for a denied operation


def test_idempotency_key_holds_once() -> None:
    store = MemoryHolds()
    request = HoldRequest(client="c", ttl=10, key="op-1")
    first = store.check((room(),), D(5), "USD", request, 0.0, {})
    second = store.check((room(),), D(5), "USD", request, 1.0, {})
    assert second.replayed and second.hold == first.hold
    assert store.held(1.0, {}) == {"b": D(5)}
    other_client = store.check((room(),), D(5), "USD", HoldRequest("d", 10, "op-1"), 1.0, {})
    assert not other_client.replayed and store.held(1.0, {}) == {"b": D(10)}


def test_limits_refuse_and_change_nothing() -> None:
    store = MemoryHolds(HoldSettings(max_per_client=3, max_total=5))
    wide = room(headroom=None)
    for _ in range(3):
        store.check((wide,), D(1), "USD", HoldRequest("a", 10), 0.0, {})
    with pytest.raises(HoldRefused) as caught:
        store.check((wide,), D(1), "USD", HoldRequest("a", 10), 0.0, {})
    assert caught.value.status == 429 and "max_per_client" in caught.value.message
    for _ in range(2):
        store.check((wide,), D(1), "USD", HoldRequest("b", 10), 0.0, {})
    with pytest.raises(HoldRefused, match="max_total"):
        store.check((wide,), D(1), "USD", HoldRequest("c", 10), 0.0, {})
    assert store.held(0.0, {}) == {"b": D(5)} and store.in_flight() == 5


def test_check_and_hold_is_atomic_across_threads() -> None:
    store = MemoryHolds()
    start = threading.Barrier(40)
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        start.wait()
        outcome = store.check((room(),), D(5), "USD", HoldRequest("c", 30), 0.0, {})
        with lock:
            results.append(outcome.allowed)

    threads = [threading.Thread(target=worker) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 9 and store.held(0.0, {}) == {"b": D(45)}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, "above 0"),
        (0, "above 0"),
        (float("inf"), "above 0"),
        (10**9, "at most 900"),
        ("60", "number of seconds"),
        (True, "number of seconds"),
    ],
)
def test_bad_hold_seconds(value: object, error: str) -> None:
    with pytest.raises(HoldRefused, match=error) as caught:
        check_ttl(value, HoldSettings(max_ttl=900))
    assert caught.value.status == 400


@pytest.mark.parametrize("value", ["", "a b", "x" * 129, 7, None, "ünïcode", "a/b"])
def test_bad_keys(value: object) -> None:
    with pytest.raises(HoldRefused, match="idempotency_key must be"):
        check_name(value, "idempotency_key")


def test_good_keys_and_default_ttl() -> None:
    assert check_name("op-1:retry.2_x", "idempotency_key") == "op-1:retry.2_x"
    assert check_ttl(None, HoldSettings(default_ttl=42)) == 42
