"""Holds shared through a real ``redis-server`` (started by the tests on 127.0.0.1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budget_exporter.accounting.holds import HoldRefused, HoldRequest, HoldSettings, Room
from budget_exporter.runtime.redisholds import RedisHolds
from tests.support.redis import redis_servers, redis_settings
from tests.support.tls import self_signed_cert

D = Decimal


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Any]:
    yield from redis_servers(tmp_path)


def room(budget: str = "b", headroom: str | None = "50", deny: bool = False) -> Room:
    return Room(budget, None if headroom is None else D(headroom), deny)


def store_for(server: Any, settings: HoldSettings | None = None, **options: Any) -> RedisHolds:
    return RedisHolds(settings or HoldSettings(), redis_settings(server.url, **options))


def test_two_stores_on_one_redis_share_the_room(redis: Any) -> None:
    server = redis()
    first, second = store_for(server), store_for(server)
    request = HoldRequest(client="c", ttl=30)
    outcomes = [
        (first if i % 2 else second).check((room(),), D(5), "USD", request, 100.0, {})
        for i in range(12)
    ]
    assert [o.allowed for o in outcomes] == [True] * 9 + [False] * 3
    assert outcomes[8].held == {"b": D(40)}
    assert first.held(100.0, {}) == second.held(100.0, {}) == {"b": D(45)}
    hold = outcomes[0].hold
    assert hold is not None and hold.budgets == ("b",) and hold.amount == D(5)
    assert hold.expires == pytest.approx(130.0)
    assert first.up() and second.up()


def test_check_and_hold_is_atomic_with_forty_threads_on_two_stores(redis: Any) -> None:
    server = redis()
    stores = [store_for(server), store_for(server)]
    barrier = threading.Barrier(40)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        outcome = stores[i % 2].check((room(),), D(5), "USD", HoldRequest("c", 30), 0.0, {})
        with lock:
            results.append(outcome.allowed)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results.count(True) == 9 and stores[0].held(0.0, {}) == {"b": D(45)}


def test_release_records_and_a_meter_poll_covers(redis: Any) -> None:
    server = redis()
    store = store_for(server, HoldSettings(record_ttl=3600))
    request = HoldRequest(client="c", ttl=60, sources=("meter",))
    outcome = store.check((room("x"), room("y")), D(5), "USD", request, 100.0, {})
    assert outcome.hold is not None
    recorded = store.release(outcome.hold.id, D("7.5"), 105.0)
    assert recorded is not None and recorded.recorded_at == 105.0
    assert recorded.amount == D("7.5") and recorded.sources == ("meter",)
    assert store.held(200.0, {"meter": 104.0}) == {"x": D("7.5"), "y": D("7.5")}
    assert store.held(200.0, {"meter": 105.0}) == {}
    # A second release of the same hold changes nothing; an unknown one is a 404.
    assert store.release(outcome.hold.id, D(99), 106.0) == recorded
    with pytest.raises(HoldRefused) as caught:
        store.release("0" * 32, D(1), 106.0)
    assert caught.value.status == 404
    # Released without a cost: gone at once.
    other = store.check((room("x"),), D(5), "USD", request, 300.0, {})
    assert other.hold is not None
    assert store.release(other.hold.id, None, 301.0) is None
    assert store.held(301.0, {"meter": 1000.0}) == {}


def test_expiry_idempotency_and_limits(redis: Any) -> None:
    server = redis()
    store = store_for(server, HoldSettings(max_per_client=3, max_total=4))
    keyed = HoldRequest(client="a", ttl=10, key="op-1")
    first = store.check((room(headroom=None),), D(1), "USD", keyed, 0.0, {})
    again = store.check((room(headroom=None),), D(1), "USD", keyed, 1.0, {})
    assert again.replayed and again.hold == first.hold
    for _ in range(2):
        store.check((room(headroom=None),), D(1), "USD", HoldRequest("a", 10), 0.0, {})
    with pytest.raises(HoldRefused, match="max_per_client") as caught:
        store.check((room(headroom=None),), D(1), "USD", HoldRequest("a", 10), 0.0, {})
    assert caught.value.status == 429
    store.check((room(headroom=None),), D(1), "USD", HoldRequest("b", 10), 0.0, {})
    with pytest.raises(HoldRefused, match="max_total"):
        store.check((room(headroom=None),), D(1), "USD", HoldRequest("c", 10), 0.0, {})
    assert store.held(0.0, {}) == {"b": D(4)}
    assert store.held(10.0, {}) == {}  # every hold expired: the room is back
    assert store.check((room(),), D(45), "USD", HoldRequest("c", 10), 10.0, {}).allowed


def test_redis_key_expiry_cleans_up(redis: Any) -> None:
    server = redis()
    store = store_for(server, HoldSettings(max_ttl=1, record_ttl=1, visible_after=0.5))
    now = time.time()
    store.check((room(),), D(5), "USD", HoldRequest("c", 0.2, key="k"), now, {})
    client = server.client()
    assert client.dbsize() > 0
    deadline = time.monotonic() + 10
    while client.dbsize() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.dbsize() == 0  # nothing left behind by a hold nobody released


def test_password_from_a_file_and_a_wrong_one(redis: Any, tmp_path: Path) -> None:
    server = redis(password="s3cret-redis")
    (tmp_path / "pw").write_text("s3cret-redis\n")
    store = store_for(server, password_file=str(tmp_path / "pw"))
    assert store.check((room(),), D(5), "USD", HoldRequest("c", 10), 0.0, {}).hold is not None
    (tmp_path / "bad").write_text("wrong")
    refused = store_for(server, password_file=str(tmp_path / "bad"))
    outcome = refused.check((room(),), D(5), "USD", HoldRequest("c", 10), 0.0, {})
    assert outcome.allowed and outcome.hold is None and not refused.up()
    assert outcome.store_error is not None and "fail_open" in outcome.store_error
    assert "wrong" not in outcome.store_error


def test_tls(redis: Any, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed_cert(cert, key)
    server = redis(tls=(cert, key))
    store = store_for(server, ca_file=str(cert))
    assert store.check((room(),), D(5), "USD", HoldRequest("c", 10), 0.0, {}).hold is not None
    assert store.held(0.0, {}) == {"b": D(5)}


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
def test_redis_going_away_follows_the_policy_and_keeps_granted_holds(
    redis: Any, policy: str
) -> None:
    server = redis()
    store = store_for(server, on_unavailable=policy, timeout="200ms")
    granted = store.check((room(),), D(5), "USD", HoldRequest("c", 60), 0.0, {})
    assert granted.hold is not None
    server.pause()
    try:
        started = time.monotonic()
        outcome = store.check((room(),), D(5), "USD", HoldRequest("c", 60), 0.0, {})
        assert time.monotonic() - started < 2
        assert outcome.allowed is (policy == "fail_open") and outcome.hold is None
        assert outcome.store_error is not None and policy in outcome.store_error
        assert not store.up()
        # While it is down, checks answer at once from the policy (no wait per check).
        started = time.monotonic()
        for _ in range(20):
            store.check((room(),), D(5), "USD", None, 0.0, {})
        assert time.monotonic() - started < 1
        with pytest.raises(HoldRefused) as caught:
            store.release(granted.hold.id, D(5), 1.0)
        assert caught.value.status == 503
    finally:
        server.resume()
    time.sleep(1.1)  # past the retry delay
    again = store.check((room(),), D(5), "USD", None, 0.0, {})
    # The granted hold is still there.  The check that timed out may have reached Redis and
    # run once it woke up: its hold then counts too, until it expires (never less room).
    assert store.up() and again.held["b"] in (D(5), D(10))
