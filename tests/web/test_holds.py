"""Checks by spend description and holds, through ``/api/v1/check`` and ``/api/v1/release``,
and bursts of guards against a running exporter (threads and processes)."""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from budget_exporter.config.loader import load_config
from budget_exporter.web import api
from budget_exporter.web.landing import render_landing
from tests.support.bursts import outcomes, spend_once
from tests.support.clock import Clock
from tests.support.exporter import exporters
from tests.support.llm import NOW

# The company may spend 3000 (stop at 90 %: 2700); the growth team 2000; openai 5000.
# Spend so far: 2600 on openai, of which 700 by growth.
CONFIG = """
global:
  stop_ratio: 0.9
  check: {max_data_age: 1h}
sources:
  - name: openai
    provider: static
    currency: USD
    lines:
      - {amount: 700, dimensions: {model: gpt-4o, sub_account_id: growth}}
      - {amount: 1900, dimensions: {model: gpt-4o-mini, sub_account_id: search}}
  - {name: saas, provider: static, amount: 10, currency: USD}
  - {name: eu, provider: static, amount: 10, currency: EUR}
budgets:
  - {name: company, limit: 3000, currency: USD, sources: [openai, saas]}
  - {name: growth, limit: 2000, currency: USD, sources: [openai], match: {sub_account_id: growth}}
  - {name: openai, limit: 5000, currency: USD, sources: [openai]}
  - {name: mini, limit: 5000, currency: USD, sources: [openai], match: {model: /.*-mini/}}
  - {name: eu, limit: 100, currency: EUR, sources: [eu]}
"""
GROWTH = {"source": "openai", "dimensions": {"sub_account_id": "growth", "model": "gpt-4o"}}


@pytest.fixture
def engine(make_engine: Any) -> Any:
    clock = Clock(NOW.timestamp())
    engine = make_engine(CONFIG, clock)
    engine.poll_all_once()
    return engine


def call(engine: Any, path: str, body: Any, method: str = "POST") -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, payload, _ = api.handle(engine, method, path, raw)
    return status, json.loads(payload)


def check(engine: Any, **request: Any) -> dict[str, Any]:
    status, answer = call(engine, "/api/v1/check", request)
    assert status == 200, answer
    return answer


# -- described checks ------------------------------------------------------------------------


def test_a_description_checks_every_budget_that_counts_the_spend(engine: Any) -> None:
    answer = check(engine, **GROWTH, cost=50)
    assert answer["allowed"] is True and answer["blocking"] == []
    assert [b["budget"] for b in answer["budgets"]] == ["company", "growth", "openai"]
    assert answer["source"] == "openai" and answer["dimensions"] == GROWTH["dimensions"]
    # "mini" matches model /.*-mini/: a gpt-4o-mini call for search counts there instead.
    answer = check(engine, source="openai", dimensions={"model": "gpt-4o-mini"}, cost=1)
    assert [b["budget"] for b in answer["budgets"]] == ["company", "openai", "mini"]


def test_denied_when_only_the_company_budget_would_cross_and_the_answer_names_it(
    engine: Any,
) -> None:
    answer = check(engine, **GROWTH, cost=150)  # 2600 + 10 + 150 >= 2700; growth 850 of 2000
    assert answer["allowed"] is False and answer["blocking"] == ["company"]
    by_name = {b["budget"]: b for b in answer["budgets"]}
    assert by_name["growth"]["allowed"] is True and by_name["openai"]["allowed"] is True
    assert by_name["company"]["allowed"] is False
    assert answer["reason"].startswith("budget company: ") and "stop threshold" in answer["reason"]
    # Naming the team budget alone would have let it through.
    assert check(engine, budget="growth", cost=150)["allowed"] is True
    # A list of names is checked the same way.
    listed = check(engine, budget=["growth", "company"], cost=150)
    assert listed["allowed"] is False and listed["blocking"] == ["company"]


def test_a_spend_no_budget_counts_is_allowed_and_says_so(make_engine: Any) -> None:
    engine = make_engine(CONFIG.replace("sources: [openai, saas]", "sources: [openai]"))
    engine.poll_all_once()
    answer = check(engine, source="saas", cost=1)
    assert answer["allowed"] is True and answer["budgets"] == []
    assert answer["reason"] == "no budget counts this spend"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"source": "nope"}, 404, "unknown source 'nope'"),
        ({"source": "openai", "dimensions": {"servce_name": "x"}}, 400, "unknown dimension"),
        ({"source": "openai", "dimensions": {"model": 4}}, 400, "must be a string"),
        ({"source": "openai", "dimensions": ["model"]}, 400, "must be an object"),
        ({"dimensions": {"model": "x"}}, 400, "source"),
        ({"budget": "growth", "dimensions": {"model": "x"}}, 400, "give source too"),
        ({"budget": []}, 400, "non-empty list"),
        ({"budget": ["growth", 3]}, 400, "list of names"),
        ({"budget": ["growth", "nope"]}, 404, "unknown budget 'nope'"),
        ({"budget": ["growth", "eu"]}, 400, "EUR and USD"),
        ({"budget": "growth", "hold": "yes"}, 400, "hold must be true or false"),
        ({"budget": "growth", "hold_seconds": 5}, 400, "send hold: true"),
        ({"budget": "growth", "idempotency_key": "k"}, 400, "send hold: true"),
        ({"budget": "growth", "hold": True, "hold_seconds": -1}, 400, "above 0"),
        ({"budget": "growth", "hold": True, "hold_seconds": 1e9}, 400, "at most"),
        ({"budget": "growth", "hold": True, "idempotency_key": "a b"}, 400, "idempotency_key"),
        ({"budget": "growth", "hold": True, "idempotency_key": "x" * 200}, 400, "1 to 128"),
        ({"budget": "growth", "hold": True, "client": ""}, 400, "client must be"),
    ],
)
def test_bad_descriptions_and_hold_requests_change_nothing(
    engine: Any, body: dict[str, Any], status: int, error: str
) -> None:
    got, answer = call(engine, "/api/v1/check", body)
    assert got == status and error in answer["error"], answer
    assert engine.holds.held(engine.clock(), {}) == {}


# -- holds -----------------------------------------------------------------------------------


def test_a_hold_counts_against_every_touched_budget_until_released(engine: Any) -> None:
    answer = check(engine, **GROWTH, cost=60, hold=True, client="app-1")
    hold = answer["hold"]
    assert answer["allowed"] and hold["state"] == "held" and hold["amount"] == 60.0
    assert hold["budgets"] == ["company", "growth", "openai"] and hold["expires_in_seconds"] == 60
    # Every later check counts it, on every budget it touched (and only there).
    later = check(engine, budget="company", cost=20)
    assert later["allowed"] is True and later["held"] == 60.0
    assert "plus 60 USD held" in later["reason"]
    assert check(engine, budget="company", cost=30)["allowed"] is False  # 2610 + 60 + 30
    assert check(engine, budget="mini", cost=1)["held"] == 0.0
    status, doc = call(engine, "/api/v1/budgets", b"", "GET")
    held = {b["name"]: b["held"] for b in doc["budgets"]}
    assert held == {"company": 60.0, "growth": 60.0, "openai": 60.0, "mini": 0.0, "eu": 0.0}
    assert doc["holds"] == {"store": "memory", "up": True}
    metrics = engine.snapshot.rendered.select(None, None)[0].decode()
    assert 'budget_held_amount{budget="company",currency="USD"} 60.0' in metrics
    assert 'budget_exporter_holds_store_up{store="memory"} 1.0' in metrics
    page = render_landing(engine.snapshot).decode()
    assert page.count("<small class=held>+ 60.00 USD held</small>") == 3

    # Released with its actual cost: that keeps counting (no meter shows this spend).
    status, released = call(engine, "/api/v1/release", {"hold": hold["id"], "cost": 45})
    assert status == 200 and released["state"] == "recorded" and released["recorded"] == 45.0
    assert "no metered source" in released["counts_until"]
    assert check(engine, budget="company", cost=40)["held"] == 45.0
    # Released without a cost: the room comes back at once.
    other = check(engine, budget="growth", cost=5, hold=True)["hold"]
    status, released = call(engine, "/api/v1/release", {"hold": other["id"]})
    assert status == 200 and released == {"hold": other["id"], "state": "released", "recorded": 0.0}
    assert check(engine, budget="growth")["held"] == 45.0


def test_a_hold_that_is_never_released_frees_itself(engine: Any) -> None:
    hold = check(engine, budget="company", cost=80, hold=True, hold_seconds=5)["hold"]
    assert check(engine, budget="company", cost=10)["allowed"] is False  # 2610 + 80 + 10
    engine.clock.now += 5
    answer = check(engine, budget="company", cost=10)
    assert answer["allowed"] is True and answer["held"] == 0.0
    status, answer = call(engine, "/api/v1/release", {"hold": hold["id"], "cost": 80})
    assert status == 404 and "expired" in answer["error"]


def test_an_idempotency_key_holds_once(engine: Any) -> None:
    first = check(engine, budget="company", cost=50, hold=True, idempotency_key="op-7")
    again = check(engine, budget="company", cost=50, hold=True, idempotency_key="op-7")
    assert again["allowed"] is True and again["hold"]["id"] == first["hold"]["id"]
    assert again["hold"]["replayed"] is True and first["hold"]["replayed"] is False
    assert check(engine, budget="company")["held"] == 50.0


def test_hold_limits_refuse_with_429_and_the_exporter_keeps_serving(make_engine: Any) -> None:
    engine = make_engine(CONFIG.replace("limit: 5000", "limit: 1e12"))
    engine.poll_all_once()
    engine.hold_settings = engine.hold_settings.__class__(max_per_client=100, max_total=150)
    engine.holds.configure(engine.hold_settings)
    answers = [
        call(engine, "/api/v1/check", {"budget": "openai", "cost": 0.01, "hold": True})
        for _ in range(10_000)
    ]
    statuses = [status for status, _ in answers]
    assert statuses.count(200) == 100 and statuses.count(429) == 9_900
    assert "max_per_client" in answers[-1][1]["error"]
    assert check(engine, budget="openai")["held"] == 1.0  # nothing changed by the refused ones
    for _ in range(50):
        check(engine, budget="openai", cost=0.01, hold=True, client="other")
    status, answer = call(
        engine, "/api/v1/check", {"budget": "openai", "hold": True, "client": "third"}
    )
    assert status == 429 and "max_total" in answer["error"]
    assert b"budget_held_amount" in engine.snapshot.rendered.select(None, None)[0]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"hold": "not-an-id"}, 400, "hold must be the id"),
        ({"hold": "0" * 32, "cost": -1}, 400, "zero or more"),
        ({"hold": "0" * 32}, 404, "no hold"),
        ({"hold": "0" * 32, "extra": 1}, 400, "unknown field"),
        ([], 400, "JSON object"),
    ],
)
def test_bad_releases(engine: Any, body: Any, status: int, error: str) -> None:
    got, answer = call(engine, "/api/v1/release", body)
    assert got == status and error in answer["error"]


# -- bursts against a running exporter -------------------------------------------------------

BURST = """
global: {{stop_ratio: 0.9, check: {{max_data_age: 1h}}}}
sources:
  - {{name: openai, provider: static, amount: 40, currency: USD}}
budgets:
  - {{name: team, limit: 100, currency: USD, sources: [openai]}}
"""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Any]:
    start = exporters()
    factory = next(start)
    config = tmp_path / "burst.yml"
    config.write_text(BURST.format())
    exporter = factory(config)
    exporter.wait_ready()
    yield exporter
    next(start, None)


def test_forty_threads_entering_spending_at_once(running: Any) -> None:
    barrier = threading.Barrier(40)
    import queue

    results: queue.Queue[str] = queue.Queue()
    threads = [
        threading.Thread(target=spend_once, args=(running.url, barrier, results)) for _ in range(40)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    found = outcomes(results, 40)
    assert 8 <= found.count("ran") <= 10, found
    assert found.count("ran") + found.count("denied") == 40, found
    # The costs were recorded when the blocks ended: they keep counting.
    answer = requests.post(f"{running.url}/api/v1/check", json={"budget": "team"}, timeout=5)
    assert answer.json()["held"] == 5.0 * found.count("ran")


def test_forty_processes_each_with_its_own_guard(running: Any) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(40)
    results = context.Queue()
    processes = [
        context.Process(target=spend_once, args=(running.url, barrier, results)) for _ in range(40)
    ]
    for process in processes:
        process.start()
    found = outcomes(results, 40)
    for process in processes:
        process.join(30)
    assert 8 <= found.count("ran") <= 10, found
    assert found.count("ran") + found.count("denied") == 40, found
    metrics = requests.get(f"{running.url}/metrics", timeout=5).text
    assert f'budget_held_amount{{budget="team",currency="USD"}} {5.0 * found.count("ran")}' in (
        metrics
    )


def test_a_flood_of_holds_from_one_client_gets_429_while_metrics_keep_serving(
    tmp_path: Path,
) -> None:
    start = exporters()
    factory = next(start)
    config = tmp_path / "flood.yml"
    config.write_text(
        BURST.format().replace(
            "check: {max_data_age: 1h}", "check: {max_data_age: 1h, holds: {max_per_client: 100}}"
        )
    )
    exporter = factory(config)
    exporter.wait_ready()
    scrapes: list[int] = []
    done = threading.Event()

    def scrape() -> None:
        with requests.Session() as session:
            while not done.is_set():
                scrapes.append(session.get(f"{exporter.url}/metrics", timeout=10).status_code)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        with requests.Session() as session:
            statuses = [
                session.post(
                    f"{exporter.url}/api/v1/check",
                    json={"budget": "team", "cost": 0.001, "hold": True, "client": "greedy"},
                    timeout=10,
                ).status_code
                for _ in range(1000)
            ]
    finally:
        done.set()
        scraper.join(20)
        next(start, None)
    assert statuses.count(200) == 100 and statuses.count(429) == 900
    assert scrapes and set(scrapes) == {200}


def test_a_reload_applies_new_limits_and_keeps_the_holds(
    make_engine: Any, write_config: Any
) -> None:
    engine = make_engine(CONFIG)
    engine.poll_all_once()
    check(engine, budget="company", cost=10, hold=True)
    changed = CONFIG.replace(
        "check: {max_data_age: 1h}", "check: {max_data_age: 1h, holds: {max_per_client: 1}}"
    )
    engine.apply(load_config(write_config(changed, "changed.yml")))
    assert engine.hold_settings.max_per_client == 1
    status, answer = call(engine, "/api/v1/check", {"budget": "company", "cost": 1, "hold": True})
    assert status == 429 and "max_per_client" in answer["error"]
    assert check(engine, budget="company")["held"] == 10.0  # kept across the reload
