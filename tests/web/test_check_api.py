"""``GET /api/v1/budgets`` and ``POST /api/v1/check``: unit tests and one end-to-end run."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bcrypt
import pytest
import requests

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.guard import BudgetExceeded, BudgetGuard
from budget_exporter.pricing import estimate
from budget_exporter.web import api
from tests.support.clock import Clock
from tests.support.exporter import exporters
from tests.support.llm import NOW
from tests.support.paths import ROOT

HUNTER_KEY = "hunterkey-check-api-0123456789abcdef"

CONFIG = f"""
global:
  retries: 0
  warning_ratio: 0.8
  stop_ratio: 0.95
  poll_interval: 30m  # shorter than max_data_age, as the configuration check requires
  check: {{max_data_age: 1h, on_stale: ON_STALE}}
sources:
  - {{name: llm, provider: static, amount: 90, currency: USD}}
  - {{name: saas, provider: static, amount: "40.50", currency: USD}}
  - name: hunter
    provider: hunter
    api_key: {HUNTER_KEY}
    base_url: http://127.0.0.1:9/v2
    price_per_credit: 0.1
budgets:
  - {{name: llm, limit: 100, currency: USD, sources: [llm], labels: {{team: ml}}}}
  - {{name: saas, limit: 100, currency: USD, sources: [saas]}}
  - {{name: over, limit: 80, currency: USD, sources: [llm]}}
  - {{name: strict, limit: 100, currency: USD, sources: [llm], stop_ratio: 0.9, warning_ratio: 0.5}}
  - {{name: hunter, limit: 200, currency: USD, sources: [hunter]}}
"""


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW.timestamp())


def engine_for(make_engine: Any, clock: Clock, on_stale: str = "fail_open") -> Any:
    engine = make_engine(CONFIG.replace("ON_STALE", on_stale), clock)
    engine.poll_all_once()  # hunter fails (nothing listens on port 9); the others succeed
    return engine


def call(engine: Any, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    status, payload, headers = api.handle(engine, method, path, raw)
    assert headers["Cache-Control"] == "no-store"
    return status, json.loads(payload)


def check(engine: Any, **request: Any) -> dict[str, Any]:
    status, answer = call(engine, "POST", "/api/v1/check", request)
    assert status == 200, answer
    return answer


def test_budgets_document(make_engine: Any, clock: Clock) -> None:
    engine = engine_for(make_engine, clock)
    clock.now += 600
    status, doc = call(engine, "GET", "/api/v1/budgets")
    assert status == 200
    assert doc["check"] == {"max_data_age_seconds": 3600.0, "on_stale": "fail_open"}
    budgets = {b["name"]: b for b in doc["budgets"]}
    assert list(budgets) == ["llm", "saas", "over", "strict", "hunter"]
    llm = budgets["llm"]
    assert llm["state"] == "warning"
    assert llm["spend"] == 90.0 and llm["limit"] == 100.0
    assert llm["usage_ratio"] == pytest.approx(0.9)
    assert llm["warning_ratio"] == 0.8 and llm["stop_ratio"] == 0.95
    assert llm["stop_amount"] == pytest.approx(95.0) and llm["warning_amount"] == pytest.approx(
        80.0
    )
    assert llm["forecast"] >= 90.0 and llm["forecast_ratio"] == pytest.approx(llm["forecast"] / 100)
    assert llm["labels"] == {"team": "ml"}
    assert llm["window"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    assert llm["data_age_seconds"] == pytest.approx(600) and llm["stale"] is False
    assert llm["sources"] == [
        {
            "name": "llm",
            "provider": "static",
            "up": True,
            "last_success": "2026-11-25T12:00:00Z",
            "last_attempt": "2026-11-25T12:00:00Z",
            "last_error": None,
            "data_age_seconds": 600.0,
            "max_data_age_seconds": 3600.0,
            "stale": False,
        }
    ]
    assert llm["stale_sources"] == []
    assert budgets["saas"]["state"] == "ok" and budgets["saas"]["spend"] == 40.5
    assert budgets["over"]["state"] == "exceeded"
    assert budgets["strict"]["state"] == "stop"
    hunter = budgets["hunter"]
    assert hunter["state"] == "unknown" and hunter["stale"] is True
    assert hunter["data_age_seconds"] is None and "spend" not in hunter
    assert hunter["stale_sources"] == ["hunter"] and hunter["sources"][0]["stale"] is True
    assert hunter["sources"][0]["up"] is False and hunter["sources"][0]["last_error"]
    # Read-only and secret-free: the failing source's error names no key.
    text = json.dumps(doc)
    assert HUNTER_KEY not in text
    assert [s["name"] for s in doc["sources"]] == ["llm", "saas", "hunter"]


@pytest.mark.parametrize(
    ("budget", "cost", "allowed", "state", "state_after", "ratio_after"),
    [
        ("saas", None, True, "ok", "ok", 0.405),
        ("llm", None, True, "warning", "warning", 0.90),
        ("llm", 4.99, True, "warning", "warning", 0.9499),
        ("llm", 5, False, "warning", "stop", 0.95),  # reaching the stop threshold is denied
        ("llm", "7", False, "warning", "stop", 0.97),
        ("llm", 15, False, "warning", "exceeded", 1.05),
        ("over", 0, False, "exceeded", "exceeded", 1.125),
        ("strict", None, False, "stop", "stop", 0.90),
    ],
)
def test_check_decisions(
    make_engine: Any,
    clock: Clock,
    budget: str,
    cost: Any,
    allowed: bool,
    state: str,
    state_after: str,
    ratio_after: float,
) -> None:
    engine = engine_for(make_engine, clock)
    request = {"budget": budget} if cost is None else {"budget": budget, "cost": cost}
    answer = check(engine, **request)
    assert answer["allowed"] is allowed
    assert answer["state"] == state
    assert answer["state_after"] == state_after
    assert answer["ratio_after"] == pytest.approx(ratio_after)
    assert answer["stale"] is False and "policy" not in answer
    assert ("below the stop threshold" in answer["reason"]) is allowed
    assert next(iter(answer)) == "allowed"


def test_check_answer_carries_the_figures(make_engine: Any, clock: Clock) -> None:
    engine = engine_for(make_engine, clock)
    answer = check(engine, budget="llm", cost=0.42, currency="usd")
    assert answer["cost"] == 0.42
    assert answer["spend"] == 90.0 and answer["limit"] == 100.0 and answer["stop_ratio"] == 0.95
    assert answer["remaining_before_stop"] == pytest.approx(5.0)
    assert answer["ratio"] == pytest.approx(0.9) and answer["ratio_after"] == pytest.approx(0.9042)
    assert answer["currency"] == "USD" and answer["data_age_seconds"] == 0
    assert "0.42 USD" in answer["reason"] and "90.42%" in answer["reason"]


def test_stale_data_fail_open(make_engine: Any, clock: Clock) -> None:
    engine = engine_for(make_engine, clock, "fail_open")
    clock.now += 3600 + 60
    answer = check(engine, budget="llm", cost=1)
    assert answer["allowed"] is True
    assert answer["stale"] is True and answer["policy"] == "fail_open"
    assert "1h01m old" in answer["reason"] and "fail_open" in answer["reason"]
    # ... but stale data already past the stop threshold still denies.
    answer = check(engine, budget="over")
    assert answer["allowed"] is False and answer["stale"] is True
    assert "does not go down" in answer["reason"]
    # A budget that never had data follows the policy too.
    answer = check(engine, budget="hunter")
    assert answer["allowed"] is True and answer["state"] == "unknown"
    assert "no data yet" in answer["reason"]


def test_stale_data_fail_closed(make_engine: Any, clock: Clock) -> None:
    engine = engine_for(make_engine, clock, "fail_closed")
    assert check(engine, budget="saas")["allowed"] is True
    clock.now += 3601
    answer = check(engine, budget="saas")
    assert answer["allowed"] is False and answer["policy"] == "fail_closed"
    assert "denied by the fail_closed policy" in answer["reason"]
    assert check(engine, budget="hunter")["allowed"] is False


def test_data_exactly_max_age_old_is_still_fresh(make_engine: Any, clock: Clock) -> None:
    engine = engine_for(make_engine, clock, "fail_closed")
    clock.now += 3600
    assert check(engine, budget="saas")["stale"] is False


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/api/v1/check", {"budget": "nope"}, 404, "unknown budget 'nope'"),
        ("POST", "/api/v1/check", b"{not json", 400, "not JSON"),
        ("POST", "/api/v1/check", b"", 400, "JSON object"),
        ("POST", "/api/v1/check", [1, 2], 400, "JSON object"),
        ("POST", "/api/v1/check", {"cost": 1}, 400, "budget"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": -1}, 400, "zero or more"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": "lots"}, 400, "must be a number"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": True}, 400, "must be a number"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": "NaN"}, 400, "finite"),
        # Non-finite or absurd costs are refused, never an overflow or an unserialisable answer.
        ("POST", "/api/v1/check", {"budget": "llm", "cost": "1e400"}, 400, "below 1e15"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": "1e999999999"}, 400, "below 1e15"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": "Infinity"}, 400, "below 1e15"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": "-Infinity"}, 400, "zero or more"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": "sNaN"}, 400, "finite"),
        ("POST", "/api/v1/check", {"budget": "llm", "cost": 10**15}, 400, "below 1e15"),
        ("POST", "/api/v1/check", b'{"budget": "llm", "cost": 1e400}', 400, "below 1e15"),
        pytest.param(
            "POST",
            "/api/v1/check",
            b'{"budget": "llm", "cost": ' + b"9" * 5000 + b"}",
            400,
            "not JSON",
            id="a-5000-digit-integer",
        ),
        pytest.param(
            "POST",
            "/api/v1/check",
            b"[" * 100_000 + b"]" * 100_000,
            400,
            "not JSON",
            id="nested-100000-deep",
        ),
        ("POST", "/api/v1/check", {"budget": "llm", "currency": "EUR"}, 400, "USD"),
        ("POST", "/api/v1/check", {"budget": "llm", "amount": 3}, 400, "unknown field 'amount'"),
        ("GET", "/api/v1/check", None, 405, "use POST"),
        ("POST", "/api/v1/budgets", None, 405, "use GET"),
        ("GET", "/api/v1/nothing", None, 404, "unknown API path"),
    ],
)
def test_bad_requests(
    make_engine: Any, clock: Clock, method: str, path: str, body: Any, status: int, error: str
) -> None:
    engine = engine_for(make_engine, clock)
    got, answer = call(engine, method, path, body)
    assert got == status
    assert error in answer["error"]


def test_tiny_and_largest_costs_are_answered(make_engine: Any, clock: Clock) -> None:
    engine = engine_for(make_engine, clock)
    answer = check(engine, budget="saas", cost="1e-999999999")
    assert answer["allowed"] is True and answer["cost"] == 0.0
    answer = check(engine, budget="saas", cost="999999999999999.99")
    assert answer["allowed"] is False and answer["state_after"] == "exceeded"
    assert answer["ratio_after"] == pytest.approx(1e13)


def test_figures_too_large_for_a_float_are_null_not_an_error(
    make_engine: Any, clock: Clock
) -> None:
    # Whatever guards the engine and the config keep, a figure that overflows a float
    # (here a budget whose limit is 1e-400 and whose spend is 1e400) must not break the API.
    engine = engine_for(make_engine, clock)
    views = tuple(
        replace(v, spend=Decimal("1e400"), forecast=Decimal("1e400"))
        if v.name == "llm"
        else replace(v, limit=Decimal("1e-400"))
        if v.name == "saas"
        else v
        for v in engine.snapshot.budgets
    )
    broken = SimpleNamespace(snapshot=replace(engine.snapshot, budgets=views), clock=engine.clock)

    status, doc = call(broken, "GET", "/api/v1/budgets")
    assert status == 200
    budgets = {b["name"]: b for b in doc["budgets"]}
    assert budgets["llm"]["spend"] is None and budgets["llm"]["usage_ratio"] is None
    assert budgets["llm"]["forecast_ratio"] is None and budgets["llm"]["limit"] == 100.0
    assert budgets["llm"]["state"] == "exceeded"
    assert budgets["saas"]["usage_ratio"] is None and budgets["saas"]["state"] == "exceeded"

    status, answer = call(broken, "POST", "/api/v1/check", {"budget": "llm", "cost": 1})
    assert status == 200
    assert answer["allowed"] is False and answer["state_after"] == "exceeded"
    assert answer["spend"] is None and answer["ratio_after"] is None
    assert answer["remaining_before_stop"] is None
    assert "far beyond 100%" in answer["reason"] and "inf" not in answer["reason"]
    status, answer = call(broken, "POST", "/api/v1/check", {"budget": "saas", "cost": 1})
    assert status == 200 and answer["allowed"] is False and answer["ratio"] is None


def test_check_settings_in_global_config(tmp_path: Path) -> None:
    base = "sources: [{name: s, provider: static, amount: 1, currency: USD}]\n"
    path = tmp_path / "c.yml"
    path.write_text(base)
    default = load_config(path).global_.check
    assert default.max_data_age is None and default.on_stale == "fail_open"
    path.write_text(
        "global: {poll_interval: 10m, check: {max_data_age: 30m, on_stale: fail_closed}}\n" + base
    )
    check_config = load_config(path).global_.check
    assert check_config.max_data_age.total_seconds() == 1800
    assert check_config.on_stale == "fail_closed"
    for bad, where in (
        ("{on_stale: allow}", "global.check.on_stale"),
        ("{max_data_age: soon}", "global.check.max_data_age"),
        ("{max_age: 1h}", "global.check.max_age"),
    ):
        path.write_text(f"global: {{check: {bad}}}\n" + base)
        with pytest.raises(ConfigError, match=where):
            load_config(path)


@pytest.fixture
def exporter() -> Any:
    yield from exporters()


def test_end_to_end_through_the_running_exporter(tmp_path: Path, exporter: Any) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  app: '{hashed}'\n")
    config = tmp_path / "budget-exporter.yml"
    config.write_text(
        """
global: {poll_interval: 30m, check: {max_data_age: 1h, on_stale: fail_closed}}
sources:
  - {name: openai, provider: static, amount: "470.00", currency: USD}
  - {name: hunter, provider: static, amount: 20, currency: USD}
budgets:
  - {name: openai, limit: 500, currency: USD, sources: [openai]}
  - {name: hunter, limit: 200, currency: USD, sources: [hunter]}
"""
    )
    running = exporter(config, f"--web.config.file={tmp_path / 'web.yml'}")
    auth = ("app", "s3cret")
    running.wait_ready(auth=auth)

    # Covered by the web config's basic auth.
    assert requests.get(f"{running.url}/api/v1/budgets", timeout=5).status_code == 401
    response = requests.post(
        f"{running.url}/api/v1/check", json={"budget": "openai"}, timeout=5, auth=("app", "bad")
    )
    assert response.status_code == 401

    response = requests.get(f"{running.url}/api/v1/budgets", timeout=5, auth=auth)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    budgets = {b["name"]: b for b in response.json()["budgets"]}
    assert budgets["openai"]["state"] == "warning" and budgets["openai"]["spend"] == 470.0
    assert budgets["hunter"]["state"] == "ok"

    response = requests.post(
        f"{running.url}/api/v1/check", json={"budget": "openai", "cost": 15}, timeout=5, auth=auth
    )
    answer = response.json()
    assert response.status_code == 200
    assert answer["allowed"] is False and answer["ratio_after"] == pytest.approx(0.97)
    assert answer["state"] == "warning" and answer["state_after"] == "stop"

    # The guard, through the same running exporter.
    guard = BudgetGuard(running.url, auth=auth, timeout=5, fail_open=False)
    decision = guard.check_budget("openai", cost=estimate("gpt-4o", 100_000, 10_000))  # 0.35 USD
    assert decision.allowed and decision.state == "warning"
    assert decision.ratio_after == pytest.approx(470.35 / 500)
    with pytest.raises(BudgetExceeded) as caught:
        guard.check_budget("openai", cost=5.0)
    assert caught.value.decision.answer["state_after"] == "stop"
    assert "stop threshold" in str(caught.value)

    calls: list[str] = []

    @guard.guarded("hunter", cost=lambda n: n * 0.1)
    def find_emails(n: int) -> int:
        calls.append("ran")
        return n

    assert find_emails(100) == 100  # 30 USD of 200
    with pytest.raises(BudgetExceeded):
        find_emails(1_700)  # 20 + 170 = 190 USD >= 95 % of 200
    assert calls == ["ran"]
    _, log = running.stop()
    assert "s3cret" not in log


def test_example_config_loads_with_its_check_settings() -> None:
    path = ROOT / "examples" / "llm.yml"
    env = {
        "OPENAI_ADMIN_KEY": "sk-admin-x",
        "ANTHROPIC_ADMIN_KEY": "sk-ant-admin-y",
        "HUNTER_API_KEY": "hk",
    }
    config = load_config(path, env=env)
    assert [s.provider for s in config.sources] == ["openai", "anthropic", "hunter"]
    assert config.global_.check.on_stale == "fail_open"
    assert config.global_.check.max_data_age.total_seconds() == 6 * 3600


def test_figures_of_an_ended_period_are_not_used(make_engine: Any, clock: Clock) -> None:
    engine = engine_for(make_engine, clock, "fail_closed")
    # Past the end of November, before any poll of December: no figures for the new month.
    clock.now = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    answer = check(engine, budget="saas")
    assert answer["state"] == "unknown" and answer["stale"] is True
    assert answer["allowed"] is False and "no data yet" in answer["reason"]
    status, doc = call(engine, "GET", "/api/v1/budgets")
    assert status == 200
    assert {b["name"]: b["state"] for b in doc["budgets"]}["saas"] == "unknown"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"budget": "lm"}, "unknown budget 'lm'; did you mean 'llm'?"),
        ({"budget": "sass"}, "unknown budget 'sass'; did you mean 'saas'?"),
        ({"budget": ["llm", "strcit"]}, "unknown budget 'strcit'; did you mean 'strict'?"),
        ({"budget": "openai"}, "unknown budget 'openai'"),  # nothing close: no guess
        ({"source": "sas", "dimensions": {}}, "unknown source 'sas'; did you mean 'saas'?"),
        ({"source": "billing", "dimensions": {}}, "unknown source 'billing'"),
    ],
)
def test_an_unknown_name_suggests_the_closest_one(
    make_engine: Any, clock: Clock, body: dict[str, Any], error: str
) -> None:
    engine = engine_for(make_engine, clock)
    status, answer = call(engine, "POST", "/api/v1/check", body)
    assert status == 404 and answer == {"error": error}


def test_no_guess_for_a_name_too_long_to_compare(make_engine: Any, clock: Clock) -> None:
    engine = engine_for(make_engine, clock)
    status, answer = call(engine, "POST", "/api/v1/check", {"budget": "llm" + "x" * 200})
    assert status == 404 and "did you mean" not in answer["error"]
    assert api.did_you_mean("opnai", ["openai", "anthropic"]) == "; did you mean 'openai'?"
    assert api.did_you_mean("aws", ["openai", "anthropic"]) == ""
