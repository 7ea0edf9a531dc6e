"""``budget_exporter.guard``: the client applications call before they spend."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses
from prometheus_client import CollectorRegistry

from budget_exporter import guard as guard_module
from budget_exporter.guard import (
    BudgetCheckError,
    BudgetExceeded,
    BudgetGuard,
    check_budget,
    guarded,
)
from budget_exporter.metering import Meter
from budget_exporter.pricing import estimate
from tests.support.fake_upstream import FakeUpstream, Reply

URL = "http://exporter.test:9820"
CHECK = f"{URL}/api/v1/check"


def answer(allowed: bool, **extra: Any) -> dict[str, Any]:
    return {
        "allowed": allowed,
        "budget": "openai",
        "state": "warning",
        "state_after": "stop" if not allowed else "warning",
        "ratio": 0.9,
        "ratio_after": 0.97 if not allowed else 0.91,
        "reason": "spend is 97.00% of the limit" if not allowed else "below the stop threshold",
        "stale": False,
        **extra,
    }


def sent(call: Any) -> dict[str, Any]:
    return json.loads(call.request.body)


@responses.activate
def test_allowed_returns_the_decision() -> None:
    responses.add(responses.POST, CHECK, json=answer(True))
    decision = BudgetGuard(URL).check_budget("openai", cost=0.42)
    assert decision.allowed and decision.state == "warning" and decision.ratio_after == 0.91
    assert decision.reachable and not decision.stale
    assert sent(responses.calls[0]) == {"budget": "openai", "cost": 0.42}


@responses.activate
def test_denied_raises_budget_exceeded_with_the_reason() -> None:
    responses.add(responses.POST, CHECK, json=answer(False))
    guard = BudgetGuard(URL)
    with pytest.raises(BudgetExceeded) as caught:
        guard.check_budget("openai", cost=5)
    assert caught.value.decision.allowed is False
    assert caught.value.decision.ratio_after == 0.97
    assert "budget 'openai'" in str(caught.value) and "97.00%" in str(caught.value)
    # check() reports the same decision without raising.
    assert guard.check("openai", cost=5).allowed is False


@responses.activate
def test_allowed_answers_are_never_reused() -> None:
    # Two operations must never go through on one "allowed": each check asks.
    responses.add(responses.POST, CHECK, json=answer(True))
    guard = BudgetGuard(URL, cache_seconds=60)
    for _ in range(3):
        assert guard.check("openai", cost=1).allowed
    assert len(responses.calls) == 3 and guard.cache_len() == 0


@responses.activate
def test_denied_answers_are_cached_briefly_per_budget_and_cost() -> None:
    responses.add(responses.POST, CHECK, json=answer(False))
    guard = BudgetGuard(URL, cache_seconds=0.3)
    guard.check("openai", cost=1)
    guard.check("openai", cost=1)
    assert len(responses.calls) == 1
    guard.check("openai", cost=2)  # another cost is another question
    guard.check("openai")
    assert len(responses.calls) == 3
    time.sleep(0.35)
    guard.check("openai", cost=1)
    assert len(responses.calls) == 4
    guard.clear_cache()
    guard.check("openai", cost=1)
    assert len(responses.calls) == 5


@responses.activate
def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    responses.add(responses.POST, CHECK, json=answer(False))
    guard = BudgetGuard(URL, cache_seconds=60, cache_size=2)
    guard.check("openai", cost=1)
    guard.check("openai", cost=2)
    guard.check("openai", cost=1)  # a hit: 1 is now the most recently used
    assert len(responses.calls) == 2
    guard.check("openai", cost=3)  # over the cap: 2, the least recently used, goes
    assert guard.cache_len() == 2 and len(responses.calls) == 3
    guard.check("openai", cost=1)
    guard.check("openai", cost=3)
    assert len(responses.calls) == 3
    guard.check("openai", cost=2)  # asked again
    assert len(responses.calls) == 4
    assert [sent(c)["cost"] for c in responses.calls] == [1, 2, 3, 2]


@responses.activate
def test_many_distinct_costs_do_not_grow_the_cache_without_limit() -> None:
    responses.add(responses.POST, CHECK, json=answer(False))
    guard = BudgetGuard(URL, cache_seconds=60, cache_size=50)
    for cents in range(300):
        guard.check("openai", cost=Decimal(cents) / 100)
    assert len(responses.calls) == 300
    assert guard.cache_len() == 50
    guard.check("openai", cost=Decimal("2.99"))  # the most recent ones are still cached
    assert len(responses.calls) == 300


@responses.activate
def test_expired_answers_are_dropped_when_one_is_added() -> None:
    responses.add(responses.POST, CHECK, json=answer(False))
    guard = BudgetGuard(URL, cache_seconds=0.05)
    for cost in range(20):
        guard.check("openai", cost=cost)
    assert guard.cache_len() == 20
    time.sleep(0.06)
    guard.check("openai", cost=99)
    assert guard.cache_len() == 1


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        BudgetGuard(URL, cache_size=0)


@responses.activate
def test_unreachable_exporter_fails_open_by_default(caplog: pytest.LogCaptureFixture) -> None:
    responses.add(responses.POST, CHECK, body=requests.ConnectionError("refused"))
    with caplog.at_level(logging.WARNING, logger="budget_exporter.guard"):
        decision = BudgetGuard(URL).check_budget("openai", cost=1)
    assert decision.allowed is True and decision.reachable is False
    assert "fail-open" in decision.reason
    assert "cannot reach budget-exporter" in caplog.text


@responses.activate
def test_unreachable_exporter_fails_closed_when_asked() -> None:
    responses.add(responses.POST, CHECK, status=503, body="down")
    with pytest.raises(BudgetExceeded) as caught:
        BudgetGuard(URL, fail_open=False).check_budget("openai")
    assert caught.value.decision.reachable is False
    assert "HTTP 503" in str(caught.value) and "fail-closed" in str(caught.value)


@responses.activate
def test_a_garbled_answer_counts_as_unreachable() -> None:
    responses.add(responses.POST, CHECK, json={"allowed": "yes"})
    decision = BudgetGuard(URL, fail_open=False).check("openai")
    assert decision.allowed is False and decision.reachable is False


def test_timeout_on_a_real_slow_exporter() -> None:
    fake = FakeUpstream(default=Reply(json=answer(True), delay=1.0)).start()
    try:
        started = time.monotonic()
        decision = BudgetGuard(fake.url, timeout=0.2, fail_open=True).check("openai")
        elapsed = time.monotonic() - started
        with pytest.raises(BudgetExceeded, match="fail-closed"):
            BudgetGuard(fake.url, timeout=0.2, fail_open=False).check_budget("openai")
    finally:
        fake.stop()
    assert decision.allowed is True and decision.reachable is False
    assert "ReadTimeout" in decision.reason
    assert elapsed < 0.9


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, {"error": "unknown budget 'opnai'"}, "unknown budget 'opnai'"),
        (400, {"error": "cost must be a number"}, "cost must be a number"),
        (401, {}, "refused the credentials"),
    ],
)
@responses.activate
def test_caller_mistakes_are_errors_whatever_the_policy(
    status: int, body: dict[str, Any], message: str
) -> None:
    responses.add(responses.POST, CHECK, status=status, json=body)
    with pytest.raises(BudgetCheckError, match=message):
        BudgetGuard(URL, fail_open=True).check("opnai")


@pytest.mark.parametrize("cost", [-1, float("inf"), float("nan"), Decimal("1e400"), 10**15, 1e300])
@responses.activate
def test_bad_costs_are_refused_locally(cost: float) -> None:
    responses.add(responses.POST, CHECK, json=answer(True))
    with pytest.raises(ValueError):
        BudgetGuard(URL).check("openai", cost=cost)
    assert len(responses.calls) == 0


@responses.activate
def test_decorator_computes_the_cost_from_the_arguments() -> None:
    responses.add(responses.POST, CHECK, json=answer(True))
    guard = BudgetGuard(URL, auth=("app", "pw"))
    ran: list[int] = []

    @guard.guarded("openai", cost=lambda tokens, **_: estimate("gpt-4o-mini", tokens, 1_000))
    def complete(tokens: int, *, prompt: str) -> str:
        ran.append(tokens)
        return prompt.upper()

    assert complete(100_000, prompt="hi") == "HI"
    assert ran == [100_000]
    assert complete.__name__ == "complete"
    # 100k x 0.15 + 1k x 0.60 per million = 0.0156 USD
    assert sent(responses.calls[0])["cost"] == pytest.approx(0.0156)
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")


@responses.activate
def test_decorator_does_not_call_when_denied() -> None:
    responses.add(responses.POST, CHECK, json=answer(False))
    ran: list[str] = []

    @BudgetGuard(URL).guarded("openai", cost=3)
    def expensive() -> None:
        ran.append("ran")

    with pytest.raises(BudgetExceeded):
        expensive()
    assert ran == []


@pytest.fixture
def default_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(guard_module, "_default", None)
    monkeypatch.setenv("BUDGET_EXPORTER_URL", URL)
    yield
    guard_module._default = None


@responses.activate
def test_module_level_function_and_decorator_use_the_environment(default_guard: None) -> None:
    responses.add(responses.POST, CHECK, json=answer(True))
    assert check_budget("openai", cost=1).allowed

    @guarded("openai", cost=2)
    def work() -> str:
        return "done"

    assert work() == "done"
    assert [sent(c)["cost"] for c in responses.calls] == [1, 2]


@responses.activate
def test_module_level_fail_closed_from_the_environment(
    default_guard: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUDGET_EXPORTER_FAIL_OPEN", "false")
    responses.add(responses.POST, CHECK, body=requests.ConnectTimeout("slow"))
    with pytest.raises(BudgetExceeded, match="fail-closed"):
        check_budget("openai")


def test_an_exporter_without_the_budget_is_a_caller_error() -> None:
    fake = FakeUpstream(default=Reply(status=404, json={"error": "unknown budget 'x'"})).start()
    try:
        with pytest.raises(BudgetCheckError, match="unknown budget 'x'"):
            BudgetGuard(fake.url, timeout=2).check("x")
    finally:
        fake.stop()


# -- descriptions and holds ------------------------------------------------------------------

RELEASE = f"{URL}/api/v1/release"
HOLD_ID = "ab" * 16


def described_answer(allowed: bool, hold: bool = False) -> dict[str, Any]:
    budgets = [
        {"allowed": True, "budget": "growth", "state": "ok", "ratio_after": 0.4},
        {"allowed": allowed, "budget": "company", "state": "warning", "ratio_after": 0.93},
    ]
    return {
        "allowed": allowed,
        "reason": "budget company: over" if not allowed else "every budget has room",
        "blocking": [] if allowed else ["company"],
        "currency": "USD",
        "budgets": budgets,
        **({"hold": {"id": HOLD_ID, "amount": 5.0}} if hold else {}),
    }


@responses.activate
def test_a_described_spend_is_sent_and_the_blocking_budget_named() -> None:
    responses.add(responses.POST, CHECK, json=described_answer(False))
    guard = BudgetGuard(URL)
    dims = {"sub_account_id": "growth", "model": "gpt-4o"}
    with pytest.raises(BudgetExceeded) as caught:
        guard.check_budget(source="openai", dimensions=dims, cost=5)
    decision = caught.value.decision
    assert sent(responses.calls[0]) == {"source": "openai", "dimensions": dims, "cost": 5}
    assert decision.blocking == ("company",) and decision.budgets == ("growth", "company")
    assert decision.budget == "company" and "budget 'company'" in str(caught.value)
    assert decision.state == "warning" and decision.ratio_after == 0.93
    guard.check(["growth", "company"], cost=1)
    assert sent(responses.calls[1]) == {"budget": ["growth", "company"], "cost": 1}
    with pytest.raises(BudgetCheckError, match="source"):
        guard.check(dimensions={"model": "x"})
    with pytest.raises(BudgetCheckError, match="name a budget"):
        guard.check()


@responses.activate
def test_spending_holds_and_releases_with_what_was_recorded() -> None:
    responses.add(responses.POST, CHECK, json=described_answer(True, hold=True))
    responses.add(responses.POST, RELEASE, json={"hold": HOLD_ID, "state": "recorded"})
    meter = Meter(CollectorRegistry())
    guard = BudgetGuard(URL, meter=meter, client="worker-1", hold_seconds=30)
    with guard.spending(source="openai", dimensions={"sub_account_id": "growth"}, cost=5) as spent:
        spent.record(3.5, model="gpt-4o")
    request = sent(responses.calls[0])
    assert request["hold"] is True and request["client"] == "worker-1"
    assert request["hold_seconds"] == 30 and len(request["idempotency_key"]) == 32
    assert sent(responses.calls[1]) == {"hold": HOLD_ID, "cost": 3.5}
    # Recorded in the per-source counter, with the description's dimensions.
    value = meter._registry.get_sample_value(  # type: ignore[union-attr]
        "budget_app_source_spend_amount_total",
        {
            "source": "openai",
            "model": "gpt-4o",
            "sub_account_id": "growth",
            "service_name": "",
            "region_id": "",
            "charge_category": "",
            "currency": "USD",
        },
    )
    assert value == 3.5


@responses.activate
def test_a_block_that_raises_releases_what_it_recorded_and_one_that_ends_the_estimate() -> None:
    responses.add(responses.POST, CHECK, json={**answer(True), "hold": {"id": HOLD_ID}})
    responses.add(responses.POST, RELEASE, json={})
    guard = BudgetGuard(URL, meter=Meter(CollectorRegistry()))
    with pytest.raises(RuntimeError), guard.spending("openai", cost=5, currency="USD"):
        raise RuntimeError("failed")
    assert sent(responses.calls[1]) == {"hold": HOLD_ID}  # nothing spent
    with guard.spending("openai", cost=5, currency="USD"):
        pass
    assert sent(responses.calls[3]) == {"hold": HOLD_ID, "cost": 5}
    with guard.spending("openai", cost=5, hold=False):
        pass
    assert "hold" not in sent(responses.calls[4]) and len(responses.calls) == 5


@responses.activate
def test_a_failed_release_is_logged_and_the_block_still_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    responses.add(responses.POST, CHECK, json={**answer(True), "hold": {"id": HOLD_ID}})
    responses.add(responses.POST, RELEASE, json={"error": "holds store down"}, status=503)
    guard = BudgetGuard(URL, meter=Meter(CollectorRegistry()))
    with caplog.at_level(logging.WARNING), guard.spending("openai", cost=1, currency="USD"):
        pass
    assert "could not release hold" in caplog.text and "ends at its expiry" in caplog.text


@responses.activate
def test_a_hold_request_lost_on_the_way_is_retried_once_with_the_same_key() -> None:
    responses.add(responses.POST, CHECK, body=requests.ConnectionError("reset"))
    responses.add(responses.POST, CHECK, json={**answer(True), "hold": {"id": HOLD_ID}})
    responses.add(responses.POST, RELEASE, json={})
    guard = BudgetGuard(URL, meter=Meter(CollectorRegistry()))
    with guard.spending("openai", cost=1, currency="USD"):
        pass
    keys = [sent(c)["idempotency_key"] for c in responses.calls[:2]]
    assert keys[0] == keys[1]


@responses.activate
def test_too_many_holds_is_a_denial_not_a_pass() -> None:
    responses.add(responses.POST, CHECK, json={"error": "too many holds"}, status=429)
    guard = BudgetGuard(URL, fail_open=True, meter=Meter(CollectorRegistry()))
    ran: list[str] = []
    with pytest.raises(BudgetExceeded, match="too many holds"), guard.spending("openai", cost=1):
        ran.append("ran")
    assert ran == []


@responses.activate
def test_the_decorator_holds_and_releases_with_the_recorded_cost() -> None:
    responses.add(responses.POST, CHECK, json={**answer(True), "hold": {"id": HOLD_ID}})
    responses.add(responses.POST, RELEASE, json={})
    guard = BudgetGuard(URL, meter=Meter(CollectorRegistry()))

    @guard.guarded("openai", cost=2, record=lambda reply: reply["cost"], currency="USD")
    def call() -> dict[str, float]:
        return {"cost": 1.25}

    call()
    assert sent(responses.calls[0])["hold"] is True
    assert sent(responses.calls[1]) == {"hold": HOLD_ID, "cost": 1.25}


@responses.activate
def test_an_allowed_check_declares_the_series_at_zero_before_the_block_spends() -> None:
    """A scrape between the check and the record sees the new series at zero, so the
    meter's ``increase()`` counts the first cost whole (issue 19, item 1)."""
    responses.add(responses.POST, CHECK, json=described_answer(True))
    responses.add(responses.POST, CHECK, json={**answer(True), "currency": "EUR"})
    registry = CollectorRegistry()
    guard = BudgetGuard(URL, meter=Meter(registry))
    described = {
        "source": "openai",
        "model": "gpt-4o",
        "sub_account_id": "growth",
        "service_name": "",
        "region_id": "",
        "charge_category": "",
        "currency": "USD",
    }
    with guard.spending(
        source="openai", dimensions={"model": "gpt-4o", "sub_account_id": "growth"}, hold=False
    ) as spent:
        assert registry.get_sample_value("budget_app_source_spend_amount_total", described) == 0
        spent.record(2)
    assert registry.get_sample_value("budget_app_source_spend_amount_total", described) == 2
    named = {"budget": "openai", "model": "", "currency": "EUR"}
    with guard.spending("openai", hold=False, currency="EUR"):
        assert registry.get_sample_value("budget_app_spend_amount_total", named) == 0
    # A denied check declares nothing.
    responses.add(responses.POST, CHECK, json=answer(False))
    with pytest.raises(BudgetExceeded), guard.spending("ads", cost=1, hold=False):
        pass
    assert (
        registry.get_sample_value("budget_app_spend_amount_total", {**named, "budget": "ads"})
        is None
    )
