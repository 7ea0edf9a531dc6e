"""A meter's window that fails alone (issue 19, item 10): the month's query failing leaves
the day's budget fresh, its checks answered on real figures under ``fail_closed``, while the
month's budget keeps its last good figures until they are older than ``max_data_age``; it
recovers by itself, and a new month never shows the old month's figures.

A real engine polls a fake Prometheus on 127.0.0.1 that answers the day's query, then the
month's (the windows are asked in that order), with the recorded answers of
``tests/providers/prometheus/fixtures/``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from budget_exporter.core.model import Period
from budget_exporter.runtime.engine import Engine
from budget_exporter.runtime.storage import decode_states, encode_states, fingerprint
from budget_exporter.web.api import handle
from tests.exposition.test_families import samples
from tests.support.clock import Clock
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.fixtures import load_fixture

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
MINUTE = 60.0
CONFIG = """
global:
  poll_interval: 1m
  timeout: 1s
  retries: 0
  check: {on_stale: fail_closed}
sources:
  - {name: meter, provider: prometheus, url: "URL", currency: USD, retention: 400d,
     query: "sum(increase(spend_total[{range}]))", max_data_age: 5m}
budgets:
  - {name: today, period: daily, limit: 10, currency: USD, sources: [meter]}
  - {name: month, period: monthly, limit: 100, currency: USD, sources: [meter]}
"""


def spend_answer(amount: str) -> Reply:
    document = load_fixture("prometheus", "spend_total")
    document["data"]["result"][0]["value"][1] = amount
    return Reply(json=document)


UNAVAILABLE = Reply(status=503, json=load_fixture("prometheus", "error_unavailable"))


def poll(engine: Engine, upstream: FakeUpstream, day: Reply, month: Reply) -> bool:
    upstream.reply(day, month)
    return engine.runners["meter"].poll()


def spend(engine: Engine) -> dict[str, float]:
    found = samples(engine.snapshot.rendered.text).get("budget_spend_amount", [])
    return {labels["budget"]: value for labels, value in found}


def up(engine: Engine) -> float:
    ((_, value),) = samples(engine.snapshot.rendered.text)["budget_source_up"]
    return value


def windows_up(engine: Engine) -> dict[str, float]:
    found = samples(engine.snapshot.rendered.text).get("budget_source_window_up", [])
    return {labels["period"]: value for labels, value in found}


def check(engine: Engine, budget: str, cost: float) -> dict[str, Any]:
    body = json.dumps({"budget": budget, "cost": cost}).encode()
    status, reply, _ = handle(engine, "POST", "/api/v1/check", body)
    assert status == 200, reply
    answer: dict[str, Any] = json.loads(reply)
    return answer


def test_a_failing_month_leaves_the_day_fresh_and_keeps_its_own_figures(
    make_engine: Any, upstream: FakeUpstream
) -> None:
    clock = Clock(NOW.timestamp())
    engine = make_engine(CONFIG.replace("URL", upstream.url), clock)
    assert poll(engine, upstream, spend_answer("4"), spend_answer("40"))
    assert spend(engine) == {"today": 4, "month": 40}

    clock.now += 2 * MINUTE
    assert not poll(engine, upstream, spend_answer("6"), UNAVAILABLE)
    assert spend(engine) == {"today": 6, "month": 40}  # the month's last good figures
    state = engine.states["meter"]
    assert up(engine) == 0  # BudgetSourceDown fires, naming the window in the error
    assert windows_up(engine) == {"daily": 1, "monthly": 0}
    assert state.last_error is not None
    assert state.last_error.startswith("the monthly window: GET ")
    assert "HTTP 503: unavailable: too many queries" in state.last_error
    assert state.success_of(Period.DAILY) == clock.now
    assert state.success_of(Period.MONTHLY) == clock.now - 2 * MINUTE

    clock.now += 4 * MINUTE  # the month's figures are 6 minutes old, past max_data_age
    assert not poll(engine, upstream, spend_answer("7"), UNAVAILABLE)
    assert spend(engine) == {"today": 7, "month": 40}
    today = check(engine, "today", 1)
    assert today["allowed"] is True and today["stale"] is False, today
    assert today["data_age_seconds"] == 0
    over = check(engine, "today", 3)  # 7 + 3 is past the stop ratio (9.5): denied on figures
    assert over["allowed"] is False and over["stale"] is False, over
    month = check(engine, "month", 1)
    assert month["allowed"] is False and month["stale"] is True, month
    assert month["stale_sources"] == ["meter"]
    assert month["data_age_seconds"] == 6 * MINUTE
    assert "fail_closed" in month["reason"]

    clock.now += MINUTE  # the month answers again: everything fresh, by itself
    assert poll(engine, upstream, spend_answer("8"), spend_answer("44"))
    assert spend(engine) == {"today": 8, "month": 44}
    assert up(engine) == 1 and engine.states["meter"].last_error is None
    assert windows_up(engine) == {"daily": 1, "monthly": 1}
    assert engine.states["meter"].result.failed_windows == ()  # type: ignore[union-attr]
    month = check(engine, "month", 1)
    assert month["allowed"] is True and month["stale"] is False, month


def test_a_new_month_never_shows_the_old_months_figures(
    make_engine: Any, upstream: FakeUpstream
) -> None:
    clock = Clock(datetime(2026, 11, 30, 23, 58, tzinfo=UTC).timestamp())
    engine = make_engine(CONFIG.replace("URL", upstream.url), clock)
    assert poll(engine, upstream, spend_answer("4"), spend_answer("90"))
    assert spend(engine) == {"today": 4, "month": 90}

    # The 2nd: on the 1st the day and the month would ask one query, failing or not.
    clock.now = datetime(2026, 12, 2, 0, 1, tzinfo=UTC).timestamp()
    assert not poll(engine, upstream, spend_answer("1"), UNAVAILABLE)
    assert spend(engine) == {"today": 1}  # November's 90 is not December's
    month = check(engine, "month", 1)
    assert month["allowed"] is False and month["state"] == "unknown", month
    state = engine.states["meter"]
    assert state.success_of(Period.MONTHLY) is None
    assert [w.period for w in state.windows] == [Period.DAILY]
    assert windows_up(engine) == {"daily": 1, "monthly": 0}

    clock.now += MINUTE  # still failing: still nothing for December
    assert not poll(engine, upstream, spend_answer("2"), UNAVAILABLE)
    assert spend(engine) == {"today": 2}
    clock.now += MINUTE
    assert poll(engine, upstream, spend_answer("3"), spend_answer("5"))
    assert spend(engine) == {"today": 3, "month": 5}


def test_every_window_failing_fails_the_poll_and_keeps_everything(
    make_engine: Any, upstream: FakeUpstream
) -> None:
    clock = Clock(NOW.timestamp())
    engine = make_engine(CONFIG.replace("URL", upstream.url), clock)
    assert poll(engine, upstream, spend_answer("4"), spend_answer("40"))
    first = engine.states["meter"].last_success
    clock.now += MINUTE
    assert not poll(engine, upstream, spend_answer("5"), UNAVAILABLE)
    assert windows_up(engine) == {"daily": 1, "monthly": 0}
    clock.now += MINUTE
    assert not poll(engine, upstream, UNAVAILABLE, UNAVAILABLE)
    assert windows_up(engine) == {"daily": 0, "monthly": 0}
    state = engine.states["meter"]
    assert spend(engine) == {"today": 5, "month": 40}
    assert state.last_success == first + MINUTE and state.success_of(Period.MONTHLY) == first
    assert state.last_error is not None and "window" not in state.last_error  # as ever


def test_the_kept_window_survives_a_save_and_a_restore(
    make_engine: Any, upstream: FakeUpstream
) -> None:
    clock = Clock(NOW.timestamp())
    engine = make_engine(CONFIG.replace("URL", upstream.url), clock)
    poll(engine, upstream, spend_answer("4"), spend_answer("40"))
    clock.now += 2 * MINUTE
    poll(engine, upstream, spend_answer("6"), UNAVAILABLE)
    state = engine.states["meter"]
    prints = {s.name: fingerprint(s) for s in engine.config.sources}
    saved = decode_states(encode_states([state], prints, clock.now)).sources["meter"]
    assert saved.result == state.result
    (failed,) = saved.result.failed_windows
    assert (failed.period, failed.last_success) == (Period.MONTHLY, NOW.timestamp())
    monthly = [ln.amount for ln in saved.result.lines if ln.period == Period.MONTHLY]
    assert monthly == [Decimal(40)]


def test_a_window_error_echoing_a_secret_is_kept_and_saved_redacted(
    make_engine: Any, upstream: FakeUpstream
) -> None:
    token = "s3cr3t-meter-token-value"
    config = CONFIG.replace("URL", upstream.url).replace(
        "retention: 400d,", f"retention: 400d, bearer_token: {token},"
    )
    clock = Clock(NOW.timestamp())
    engine = make_engine(config, clock)
    assert poll(engine, upstream, spend_answer("4"), spend_answer("40"))
    clock.now += MINUTE
    echo = {"status": "error", "errorType": "bad_data", "error": f"token {token} refused"}
    assert not poll(engine, upstream, spend_answer("5"), Reply(status=400, json=echo))
    state = engine.states["meter"]
    (failed,) = state.result.failed_windows  # type: ignore[union-attr]
    assert "refused" in failed.error and token not in failed.error
    assert state.last_error is not None and token not in state.last_error
    prints = {s.name: fingerprint(s) for s in engine.config.sources}
    assert token.encode() not in encode_states([state], prints, clock.now)
