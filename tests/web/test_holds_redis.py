"""Two running exporters sharing their holds through one real ``redis-server``."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.bursts import outcomes, spend_once
from tests.support.exporter import exporters
from tests.support.redis import redis_servers

CONFIG = """
global:
  stop_ratio: 0.9
  check:
    max_data_age: 1h
    holds:
      store: redis
      redis: {{url: "{url}", password_file: "{password}", timeout: 300ms, on_unavailable: POLICY}}
sources:
  - {{name: openai, provider: static, amount: 40, currency: USD}}
budgets:
  - {{name: team, limit: 100, currency: USD, sources: [openai]}}
"""
PASSWORD = "redis-pw-0123456789"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Any]:
    yield from redis_servers(tmp_path)


@pytest.fixture
def started() -> Iterator[Any]:
    yield from exporters()


def two_exporters(redis: Any, started: Any, tmp_path: Path, policy: str) -> tuple[Any, Any, Any]:
    server = redis(password=PASSWORD)
    (tmp_path / "redis-password").write_text(PASSWORD + "\n")
    config = tmp_path / "shared.yml"
    text = CONFIG.format(url=server.url, password=tmp_path / "redis-password")
    config.write_text(text.replace("POLICY", policy))
    first, second = started(config), started(config)
    first.wait_ready()
    second.wait_ready()
    return server, first, second


def test_two_exporters_on_one_redis_let_through_what_fits(
    redis: Any, started: Any, tmp_path: Path
) -> None:
    _, first, second = two_exporters(redis, started, tmp_path, "fail_open")
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(40)
    results = context.Queue()
    processes = [
        context.Process(
            target=spend_once, args=((first if i % 2 else second).url, barrier, results)
        )
        for i in range(40)
    ]
    for process in processes:
        process.start()
    found = outcomes(results, 40)
    for process in processes:
        process.join(30)
    ran = found.count("ran")
    assert 8 <= ran <= 10, found
    assert ran + found.count("denied") == 40, found
    # Both replicas see the same recorded costs, in the API and as a gauge.
    for exporter in (first, second):
        answer = requests.post(f"{exporter.url}/api/v1/check", json={"budget": "team"}, timeout=5)
        assert answer.json()["held"] == 5.0 * ran
        metrics = requests.get(f"{exporter.url}/metrics", timeout=5).text
        assert 'budget_exporter_holds_store_up{store="redis"} 1.0' in metrics
    for exporter in (first, second):
        _, log = exporter.stop()
        assert PASSWORD not in log


def test_redis_going_away_mid_burst(redis: Any, started: Any, tmp_path: Path) -> None:
    server, first, second = two_exporters(redis, started, tmp_path, "fail_closed")
    check = {"budget": "team", "cost": 5, "hold": True}
    granted = [
        requests.post(f"{e.url}/api/v1/check", json=check, timeout=5).json()
        for e in (first, second)
    ]
    assert all(g["allowed"] and g["hold"]["id"] for g in granted)
    server.pause()
    try:
        answers = [
            requests.post(f"{e.url}/api/v1/check", json=check, timeout=10) for e in (first, second)
        ]
        for answer in answers:
            body = answer.json()
            assert answer.status_code == 200 and body["allowed"] is False
            assert body["holds_store"]["up"] is False
            assert body["holds_store"]["policy"] == "fail_closed"
            assert "unreachable" in body["reason"]
        metrics = requests.get(f"{first.url}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert 'budget_exporter_holds_store_up{store="redis"} 0.0' in metrics.text
        release = {"hold": granted[0]["hold"]["id"], "cost": 5}
        response = requests.post(f"{first.url}/api/v1/release", json=release, timeout=10)
        assert response.status_code == 503 and "expiry" in response.json()["error"]
    finally:
        server.resume()
    time.sleep(1.2)  # past the store's retry delay
    answer = requests.post(f"{second.url}/api/v1/check", json={"budget": "team"}, timeout=5)
    assert answer.json()["held"] >= 10.0  # both granted holds survived
    assert first.proc.poll() is None and second.proc.poll() is None
