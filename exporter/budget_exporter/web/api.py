"""The read-only JSON API: ``GET /api/v1/budgets`` and ``POST /api/v1/check``.

Both answer from the engine's current snapshot; neither calls a provider.
``/api/v1/check`` tells an application, before it spends, whether a budget
still has room: the operation is allowed while the spend plus its estimated
cost stays below the budget's stop threshold.  When one of the budget's
sources has figures older than that source's ``max_data_age`` (or none; see
:mod:`budget_exporter.accounting.freshness`) the answer follows
``global.check.on_stale`` (``fail_open`` or ``fail_closed``) and says so --
except that stale data already at or past the stop threshold still denies
(month-to-date spend does not go down).

Answers are always valid JSON: a figure too large for a float (a limit of
``1e400`` in the configuration, say) is written as ``null``, never as
``Infinity``.  Money is computed under :data:`_CONTEXT`, wide enough that no
arithmetic here overflows, and ``cost`` must be a finite number below
:data:`MAX_COST`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    localcontext,
)
from typing import Any

from budget_exporter.accounting.budgets import BudgetView, budget_state
from budget_exporter.accounting.freshness import Freshness, SourceAge, budget_freshness, source_age
from budget_exporter.accounting.nowcast import SpendPart
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.loader import BudgetConfig, Config
from budget_exporter.core.model import MAX_AMOUNT
from budget_exporter.core.money import parse_cost
from budget_exporter.runtime.engine import Engine, Snapshot

PREFIX = "/api/v1/"
JSON_HEADERS = {"Cache-Control": "no-store"}
CONTENT_TYPE = "application/json"

MAX_COST = MAX_AMOUNT
"""``cost`` must be below this, the bound on every amount the exporter accepts."""
_CONTEXT = Context(prec=34, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, DivisionByZero])
"""Decimal arithmetic for answers: exponents as wide as Decimal allows, and an
overflow (unreachable in practice) gives Infinity, written as null, not an error."""

Reply = tuple[int, bytes, dict[str, str]]


def handle(engine: Engine, method: str, path: str, body: bytes) -> Reply:
    """Answer one API request: status, JSON body and extra headers."""
    with localcontext(_CONTEXT):
        return _handle(engine, method, path, body)


def _handle(engine: Engine, method: str, path: str, body: bytes) -> Reply:
    if path == PREFIX + "budgets":
        if method not in ("GET", "HEAD"):
            return _error(405, "use GET", allow="GET, HEAD")
        return _reply(200, budgets_document(engine.snapshot, engine.clock()))
    if path == PREFIX + "check":
        if method != "POST":
            return _error(405, 'use POST with {"budget": "<name>", "cost": <amount>}', allow="POST")
        try:
            request = json.loads(body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _error(400, "the body is not JSON")
        except (ValueError, RecursionError):  # an integer of thousands of digits, deep nesting
            return _error(
                400, "the body is not JSON this API reads (a number too long or nesting too deep)"
            )
        status, answer = check(engine.snapshot, engine.clock(), request)
        return _reply(status, answer)
    return _error(404, "unknown API path; see /api/v1/budgets and /api/v1/check")


def _reply(status: int, document: Mapping[str, Any], extra: dict[str, str] | None = None) -> Reply:
    text = json.dumps(_json_safe(document), indent=2, sort_keys=False, allow_nan=False) + "\n"
    return status, text.encode("utf-8"), {**JSON_HEADERS, **(extra or {})}


def _error(status: int, message: str, allow: str | None = None) -> Reply:
    return _reply(status, {"error": message}, {"Allow": allow} if allow else None)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (JSON has no Infinity or NaN) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# -- figures -------------------------------------------------------------------


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _money(amount: Decimal) -> float:
    return float(amount)


def _sources(snapshot: Snapshot, budget: BudgetConfig) -> list[SourceState]:
    config: Config = snapshot.config
    names = {s.name for s in config.polled_sources(budget)}
    return [s for s in snapshot.states if s.name in names]


def _source_health(state: SourceState, age: SourceAge | None = None) -> dict[str, Any]:
    health: dict[str, Any] = {
        "name": state.name,
        "provider": state.provider,
        "up": state.up if state.attempted else None,
        "last_success": _iso(state.last_success),
        "last_attempt": _iso(state.last_attempt),
        "last_error": state.last_error,
    }
    if age is not None:
        health["data_age_seconds"] = None if age.age is None else round(age.age, 3)
        health["max_data_age_seconds"] = age.allowed
        health["stale"] = age.stale
    return health


def _ages(snapshot: Snapshot, now: float) -> dict[str, SourceAge]:
    """Every configured source's data age and allowance, by name."""
    config: Config = snapshot.config
    states = {s.name: s for s in snapshot.states}
    return {s.name: source_age(config, s, states.get(s.name), now) for s in config.sources}


def budget_document(snapshot: Snapshot, budget: BudgetConfig, now: float) -> dict[str, Any]:
    view = _view(snapshot, budget.name, now)
    states = _sources(snapshot, budget)
    fresh = budget_freshness(snapshot.config, budget, states, now)
    age = fresh.age
    stale = view is None or fresh.stale
    ages = {s.name: s for s in fresh.sources}
    document: dict[str, Any] = {
        "name": budget.name,
        "period": str(budget.period),
        "currency": budget.currency,
        "labels": dict(budget.labels),
        "state": view.state if view is not None else "unknown",
        "data_age_seconds": None if age is None else round(age, 3),
        "stale": stale,
        "stale_sources": [s.name for s in fresh.stale_sources],
        "sources": [_source_health(s, ages.get(s.name)) for s in states],
    }
    if view is None:
        document["reason"] = "no data for the current period yet from every source"
        return document
    document.update(
        {
            "spend": _money(view.spend),
            "limit": _money(view.limit),
            "forecast": _money(view.forecast),
            "usage_ratio": view.usage_ratio,
            "forecast_ratio": view.forecast_ratio,
            "warning_ratio": view.warning_ratio,
            "stop_ratio": view.stop_ratio,
            "warning_amount": _money(view.limit * Decimal(repr(view.warning_ratio))),
            "stop_amount": _money(view.limit * Decimal(repr(view.stop_ratio))),
            "window": {
                "start": view.window.start.isoformat().replace("+00:00", "Z"),
                "end": view.window.end.isoformat().replace("+00:00", "Z"),
            },
            "billed": _money(view.billed),
            "metered": _money(view.metered),
            "spend_by_source": [_part(part) for part in view.parts],
        }
    )
    return document


def _part(part: SpendPart) -> dict[str, Any]:
    """One source's share of a budget's spend: billed up to its horizon, metered after."""
    return {
        "source": part.source,
        "billed": _money(part.billed),
        "metered": _money(part.metered),
        "data_through": _iso(part.data_through.timestamp()) if part.data_through else None,
        "meters": list(part.meters),
        "meters_left_out": list(part.meters_left_out),
    }


def _view(snapshot: Snapshot, name: str, now: float) -> BudgetView | None:
    """The budget's figures, unless they belong to a period that has ended since."""
    view = snapshot.budget(name)
    if view is not None and view.window.end.timestamp() <= now:
        return None
    return view


def budgets_document(snapshot: Snapshot, now: float) -> dict[str, Any]:
    config: Config = snapshot.config
    check_config = config.global_.check
    ages = _ages(snapshot, now)
    return {
        "generated_at": _iso(now),
        "data_as_of": _iso(snapshot.built_at),
        "check": {
            "max_data_age_seconds": (
                check_config.max_data_age.total_seconds() if check_config.max_data_age else None
            ),
            "on_stale": check_config.on_stale,
        },
        "budgets": [budget_document(snapshot, b, now) for b in config.budgets],
        "sources": [_source_health(s, ages.get(s.name)) for s in snapshot.states],
    }


# -- the check -----------------------------------------------------------------


def _cost(value: Any) -> Decimal:
    """``value`` (a JSON number or numeric string; none is 0) as a Decimal in [0, MAX_COST)."""
    if value is None:
        return Decimal(0)
    return _CONTEXT.plus(parse_cost(value))  # at most 34 significant digits


def check(snapshot: Snapshot, now: float, request: Any) -> tuple[int, dict[str, Any]]:
    """Decide whether an operation of ``request["cost"]`` fits ``request["budget"]``."""
    if not isinstance(request, dict):
        return 400, {"error": 'the body must be a JSON object such as {"budget": "openai"}'}
    unknown = sorted(set(request) - {"budget", "cost", "currency"})
    if unknown:
        return 400, {"error": f"unknown field {unknown[0]!r} (known: budget, cost, currency)"}
    name = request.get("budget")
    if not isinstance(name, str) or not name:
        return 400, {"error": "budget (the budget's name) is required"}
    config: Config = snapshot.config
    budget = next((b for b in config.budgets if b.name == name), None)
    if budget is None:
        return 404, {"error": f"unknown budget {name!r}"}
    try:
        cost = _cost(request.get("cost"))
    except ValueError as exc:
        return 400, {"error": str(exc)}
    currency = request.get("currency")
    if currency is not None and (
        not isinstance(currency, str) or currency.upper() != budget.currency
    ):
        return 400, {"error": f"cost must be in the budget's currency, {budget.currency}"}

    policy = config.global_.check
    view = _view(snapshot, name, now)
    fresh = budget_freshness(config, budget, _sources(snapshot, budget), now)
    answer: dict[str, Any] = {"budget": name, "currency": budget.currency, "cost": _money(cost)}

    within: bool | None = None
    if view is not None:
        after = view.spend + cost
        ratio_after = float(after / view.limit)
        within = ratio_after < view.stop_ratio
        answer.update(
            {
                "state": view.state,
                "state_after": budget_state(ratio_after, view.warning_ratio, view.stop_ratio),
                "ratio": view.usage_ratio,
                "ratio_after": ratio_after,
                "spend": _money(view.spend),
                "limit": _money(view.limit),
                "stop_ratio": view.stop_ratio,
                "remaining_before_stop": _money(
                    view.limit * Decimal(repr(view.stop_ratio)) - view.spend
                ),
            }
        )
    else:
        answer["state"] = "unknown"
    stale = view is None or fresh.stale
    answer["data_age_seconds"] = None if fresh.age is None else round(fresh.age, 3)
    answer["stale"] = stale
    answer["stale_sources"] = [s.name for s in fresh.stale_sources]

    if not stale:
        assert view is not None and within is not None
        answer["allowed"] = within
        answer["reason"] = _reason(view, cost, answer["ratio_after"], within)
    elif within is False:
        assert view is not None
        answer["allowed"] = False
        answer["reason"] = (
            f"{_staleness(view, fresh)}, but even that data puts the budget at "
            f"{_share(answer['ratio_after'])} of its limit after this operation, not below the "
            f"stop threshold of {_pct(view.stop_ratio)} (month-to-date spend does not go down)"
        )
        answer["policy"] = policy.on_stale
    else:
        allowed = policy.on_stale == "fail_open"
        answer["allowed"] = allowed
        answer["policy"] = policy.on_stale
        answer["reason"] = (
            f"{_staleness(view, fresh)}: {'allowed' if allowed else 'denied'} "
            f"by the {policy.on_stale} policy (global.check.on_stale)"
        )
    # Stable key order for readers: the verdict first.
    first = ("allowed", "budget", "state", "state_after", "ratio", "ratio_after", "reason")
    ordered = {k: answer[k] for k in first if k in answer}
    ordered.update({k: v for k, v in answer.items() if k not in ordered})
    return 200, ordered


def _reason(view: BudgetView, cost: Decimal, ratio_after: float, within: bool) -> str:
    with_cost = f" plus this operation's {cost} {view.currency}" if cost else ""
    where = "below" if within else "at or above"
    return (
        f"spend of {view.spend:.2f} {view.currency}{with_cost} is {_share(ratio_after)} of the "
        f"{view.limit} {view.currency} limit, {where} the stop threshold of "
        f"{_pct(view.stop_ratio)}"
    )


def _staleness(view: BudgetView | None, fresh: Freshness) -> str:
    if view is None or not fresh.stale_sources:
        return "no data yet for this budget's current period"
    return "; ".join(_source_staleness(s) for s in fresh.stale_sources)


def _source_staleness(age: SourceAge) -> str:
    if age.age is None:
        return f"source {age.name} has not answered yet"
    return (
        f"source {age.name}'s data is {_duration(age.age)} old, older than its allowed "
        f"{_duration(age.allowed)} (max_data_age)"
    )


def _share(ratio: float) -> str:
    """``0.9042`` -> ``"90.42%"``; a ratio too large for a float reads as words, not ``inf%``."""
    return f"{ratio:.2%}" if math.isfinite(ratio) else "far beyond 100%"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
