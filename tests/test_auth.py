"""Basic auth under a password flood: bcrypt checks one at a time, outcomes
cached, unknown users as slow as known ones."""

from __future__ import annotations

import statistics
import threading
import time

import bcrypt
import pytest
import requests

from budget_exporter.server import ExporterServer
from budget_exporter.webconfig import BasicAuth, WebConfig

CONFIG = """
sources: [{name: a, provider: static, amount: 1, currency: USD}]
budgets: [{name: b, limit: 10, currency: USD}]
"""


@pytest.fixture
def counted_bcrypt(monkeypatch) -> dict[str, int]:
    """bcrypt.checkpw, counting calls and the most running at once."""
    real = bcrypt.checkpw
    seen = {"calls": 0, "active": 0, "most": 0}
    lock = threading.Lock()

    def checkpw(password: bytes, hashed: bytes) -> bool:
        with lock:
            seen["calls"] += 1
            seen["active"] += 1
            seen["most"] = max(seen["most"], seen["active"])
        try:
            return real(password, hashed)
        finally:
            with lock:
                seen["active"] -= 1

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    return seen


def hashed(password: bytes, rounds: int = 4) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=rounds)).decode()


def test_checks_run_one_at_a_time_and_outcomes_are_cached(counted_bcrypt) -> None:
    auth = BasicAuth({"prom": hashed(b"right", rounds=6)})
    threads = [threading.Thread(target=auth.check, args=("prom", f"wrong-{i}")) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert counted_bcrypt["most"] == 1 and counted_bcrypt["calls"] == 12
    for _ in range(5):
        assert not auth.check("prom", "wrong-1")  # a failure is remembered
        assert auth.check("prom", "right")  # and so is a success
    assert counted_bcrypt["calls"] == 13


def test_a_flood_of_failures_cannot_evict_a_good_password(counted_bcrypt) -> None:
    auth = BasicAuth({"prom": hashed(b"right")})
    assert auth.check("prom", "right")
    for i in range(BasicAuth.MAX_REMEMBERED + 50):
        auth._remember(f"failure {i}".encode(), False)
    calls = counted_bcrypt["calls"]
    assert auth.check("prom", "right")
    assert counted_bcrypt["calls"] == calls


def test_unknown_users_cost_a_bcrypt_check_of_the_same_cost(counted_bcrypt) -> None:
    auth = BasicAuth({"prom": hashed(b"right", rounds=8)})
    auth.check("nobody", "warm-up")  # builds the dummy hash once

    def took(user: str, password: str) -> float:
        started = time.perf_counter()
        assert not auth.check(user, password)
        return time.perf_counter() - started

    known = statistics.median(took("prom", f"guess-{i}") for i in range(5))
    unknown = statistics.median(took("nobody", f"guess-{i}") for i in range(5))
    assert counted_bcrypt["calls"] == 11
    assert 0.5 < unknown / known < 2  # the same work: user names cannot be told apart
    assert not auth.check("nobody", "right")  # the dummy hash's password is random


def _p99(url: str, auth: tuple[str, str], n: int) -> float:
    times = []
    with requests.Session() as session:
        for _ in range(n):
            started = time.perf_counter()
            assert session.get(url, auth=auth, timeout=10).status_code == 200
            times.append(time.perf_counter() - started)
    return statistics.quantiles(times, n=100)[98]


def test_a_wrong_password_flood_leaves_the_scraper_alone(make_engine, counted_bcrypt) -> None:
    web = WebConfig(basic_auth_users={"prom": hashed(b"scrape", rounds=10)})
    engine = make_engine(CONFIG)
    server = ExporterServer(engine, "127.0.0.1:0", web_config=web)
    server.start()
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        _p99(url, ("prom", "scrape"), 5)  # the good password is now cached
        normal = _p99(url, ("prom", "scrape"), 100)
        stop = threading.Event()

        def flood(worker: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                requests.get(url, auth=("prom", f"guess-{worker}-{i}"), timeout=30)

        flooders = [threading.Thread(target=flood, args=(w,)) for w in range(16)]
        for thread in flooders:
            thread.start()
        time.sleep(0.3)
        flooded = _p99(url, ("prom", "scrape"), 100)
        stop.set()
        for thread in flooders:
            thread.join(30)
    finally:
        server.shutdown()
    assert counted_bcrypt["most"] == 1
    assert counted_bcrypt["calls"] > 3  # the flood did cost bcrypt checks
    # within twice the normal p99; a few ms of slack for a busy test machine
    assert flooded < max(2 * normal, normal + 0.015), (normal, flooded)
