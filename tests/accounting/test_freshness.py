"""Staleness per source: a dead meter makes its budget stale within minutes, whatever the bill."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.web import api
from budget_exporter.web.landing import render_landing
from tests.accounting.test_nowcast import H0, NOW, Bill, Meter
from tests.conftest import Clock

SOURCES = """
  - {name: bill, provider: http_json, url: "http://127.0.0.1:9/costs", amount: total,
     currency: USD, data_through: through}
  - {name: meter, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
     metered_after: bill, query: "sum(increase(spend_total[{range}]))"}
"""
CONFIG = (
    "global: {poll_interval: 1h, check: {on_stale: fail_closed}}\nsources:"
    + SOURCES
    + """budgets:
  - {name: llm, limit: 500000, currency: USD, sources: [bill, meter]}
  - {name: bill-only, limit: 500000, currency: USD, sources: [bill]}
"""
)


def allowances(write_config: Callable[[str], Path], text: str) -> dict[str, float]:
    config = load_config(write_config(text))
    return {s.name: config.max_data_age(s).total_seconds() for s in config.sources}


def test_each_source_has_its_own_allowance(write_config: Callable[[str], Path]) -> None:
    sources = """sources:
  - {name: hourly, provider: static, amount: 1, currency: USD, poll_interval: 1h}
  - {name: aws-like, provider: static, amount: 1, currency: USD, poll_interval: 8h}
  - {name: meter, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
     query: "sum(increase(spend_total[{range}]))"}
  - {name: fast-meter, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
     query: "sum(increase(spend_total[{range}]))", poll_interval: 2s, timeout: 1s}
  - {name: own, provider: static, amount: 1, currency: USD, poll_interval: 1h,
     max_data_age: 90m}
"""
    # Defaults: a bill twice its own poll interval and at least 6h (not the slowest
    # source's); a meter three poll intervals plus its timeout (30s, 30s by default).
    assert allowances(write_config, sources) == {
        "hourly": 6 * 3600,
        "aws-like": 16 * 3600,
        "meter": 3 * 30 + 30,
        "fast-meter": 3 * 2 + 1,
        "own": 90 * 60,
    }
    # global.check.max_data_age is every bill's allowance, and caps a meter's.
    assert allowances(write_config, "global: {check: {max_data_age: 2h}}\n" + sources) == {
        "hourly": 2 * 3600,
        "aws-like": 2 * 3600,
        "meter": 120,
        "fast-meter": 7,
        "own": 90 * 60,
    }
    short = allowances(write_config, "global: {check: {max_data_age: 1m}}\n" + sources)
    assert short["meter"] == 60 and short["fast-meter"] == 7


def test_an_allowance_within_one_poll_interval_is_a_config_error(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(
        "sources:\n  - {name: s, provider: static, amount: 1, currency: USD, "
        "poll_interval: 1h, max_data_age: 1h}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "sources[0].max_data_age" in str(caught.value)
    assert "longer than the source's poll interval" in str(caught.value)


def check(engine: Any, budget: str) -> dict[str, Any]:
    status, payload, _ = api.handle(
        engine, "POST", "/api/v1/check", f'{{"budget": "{budget}"}}'.encode()
    )
    assert status == 200
    return json.loads(payload)


def test_a_dead_meter_makes_the_budget_stale_while_the_bill_is_fresh(
    make_engine: Callable[..., Any],
) -> None:
    clock = Clock(NOW.timestamp())
    engine = make_engine(CONFIG, clock=clock)
    bill, meter = Bill(400, H0), Meter(engine)
    engine.runners["bill"].provider.poll = bill.poll
    engine.runners["meter"].provider.poll = meter.poll
    assert engine.runners["bill"].poll() and engine.runners["meter"].poll()

    clock.now += 100  # within the meter's 2 minutes
    answer = check(engine, "llm")
    assert answer["stale"] is False and answer["allowed"] is True
    assert answer["stale_sources"] == []

    meter.up = False
    assert not engine.runners["meter"].poll()
    clock.now += 30  # the meter's figures are 130 s old; the bill's too, well within 6h
    answer = check(engine, "llm")
    assert answer["stale"] is True and answer["stale_sources"] == ["meter"]
    assert answer["allowed"] is False and answer["policy"] == "fail_closed"
    assert "source meter's data is 2m10s old, older than its allowed 2m00s" in answer["reason"]
    assert answer["data_age_seconds"] == 130  # the oldest source's age, as before
    assert check(engine, "bill-only")["stale"] is False  # the bill alone is fresh

    document = api.budgets_document(engine.snapshot, clock.now)
    llm = next(b for b in document["budgets"] if b["name"] == "llm")
    assert llm["stale"] is True and llm["stale_sources"] == ["meter"]
    ages = {s["name"]: s for s in llm["sources"]}
    assert ages["meter"]["max_data_age_seconds"] == 120 and ages["meter"]["stale"] is True
    assert ages["bill"]["max_data_age_seconds"] == 6 * 3600 and ages["bill"]["stale"] is False
    assert {s["name"]: s["stale"] for s in document["sources"]} == {"bill": False, "meter": True}

    page = render_landing(engine.snapshot, now=clock.now).decode()
    meter_row = next(r for r in page.split("<tr>") if r.startswith("<td>meter</td>"))
    bill_row = next(r for r in page.split("<tr>") if r.startswith("<td>bill</td>"))
    assert ">stale</span>" in meter_row and "2m10s old, older than the allowed 2m" in meter_row
    assert "stale" not in bill_row

    meter.up = True  # Prometheus is back: fresh again at the next poll
    assert engine.runners["meter"].poll()
    assert check(engine, "llm")["stale"] is False
