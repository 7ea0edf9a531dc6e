"""The JSON API: ``GET /api/v1/budgets``, ``POST /api/v1/check`` and ``POST /api/v1/release``,
answered from the engine's current snapshot and its hold store, never a provider (see
docs/check-api.md).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
from urllib.parse import parse_qsl

from budget_exporter.accounting.budgets import BudgetView, budget_state
from budget_exporter.accounting.conversion import Conversion, LeftOut
from budget_exporter.accounting.described import (
    DescriptionError,
    budgets_counting,
    known_dimensions,
    metered_sources,
    read_dimensions,
)
from budget_exporter.accounting.freshness import Freshness, SourceAge, budget_freshness, source_age
from budget_exporter.accounting.holds import (
    HOLD_ID_PATTERN,
    Entry,
    HoldRefused,
    HoldRequest,
    HoldSettings,
    HoldStore,
    Outcome,
    Room,
    check_name,
    check_ttl,
    covered_until,
)
from budget_exporter.accounting.nowcast import SpendPart
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.schema import BudgetConfig, Config
from budget_exporter.core.model import MAX_AMOUNT
from budget_exporter.core.money import parse_cost
from budget_exporter.runtime.engine import Engine, Snapshot
from budget_exporter.web.jsonbody import BodyError, read_json
from budget_exporter.web.pagecache import Page, PageCache

PREFIX = "/api/v1/"
BUDGETS_PATH = PREFIX + "budgets"
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
        return _reply(200, budgets_document(engine.snapshot, engine.clock(), *_holds(engine)))
    if path in (PREFIX + "check", PREFIX + "release"):
        if method != "POST":
            usage = _CHECK_USAGE if path.endswith("check") else _RELEASE_USAGE
            return _error(405, usage, allow="POST")
        try:
            request = read_json(body)
        except BodyError as exc:
            return _error(exc.status, str(exc))
        store, settings = _holds(engine)
        if path.endswith("check"):
            status, answer = check(engine.snapshot, engine.clock(), request, store, settings)
        else:
            status, answer = release(engine.snapshot, engine.clock(), request, store, settings)
        return _reply(status, answer, compact=True)
    return _error(404, "unknown API path; see /api/v1/budgets, /api/v1/check and /api/v1/release")


def budgets_page(engine: Engine, query: str, cache: PageCache) -> Page:
    """``GET /api/v1/budgets`` (``query``: its filters), rendered once per snapshot and
    held amounts and kept in ``cache``; :class:`FilterError` for a bad filter."""
    wanted = read_filter(query)
    snapshot, now = engine.snapshot, engine.clock()
    store, settings = _holds(engine)
    held: dict[str, Decimal] | None = None
    up: bool | None = None
    key: tuple[object, ...] = ()
    if store is not None:  # what the document shows of the holds: part of the cache key
        if snapshot.held is not None:  # the engine's, shared with scrapes and the page
            held = snapshot.held()
        else:
            held = store.held(now, _covered_until(snapshot, settings.visible_after))
        up = store.up()
        key = (store.kind, up, tuple(sorted(held.items())))

    def render() -> tuple[Page, float]:
        with localcontext(_CONTEXT):
            document = budgets_document(
                snapshot, now, store, settings, wanted=wanted, held=held, up=up
            )
            _, body, _ = _reply(200, document)
        return Page.of(body, CONTENT_TYPE), changes_after(snapshot, now)

    return cache.get(snapshot, key, now, wanted, render)


def changes_after(snapshot: Snapshot, now: float) -> float:
    """The first instant after ``now`` at which what the pages show of ``snapshot`` changes
    without a new snapshot: a source's figures turn stale, or a budget's period ends."""
    config: Config = snapshot.config
    states = {s.name: s for s in snapshot.states}
    instants = [float("inf")]
    for source in config.sources:
        state = states.get(source.name)
        if state is not None and state.last_success is not None:
            instants.append(state.last_success + config.max_data_age(source).total_seconds())
            if state.oldest_success is not None:  # a window that failed alone turns stale first
                instants.append(state.oldest_success + config.max_data_age(source).total_seconds())
    instants.extend(view.window.end.timestamp() for view in snapshot.budgets)
    return min((t for t in instants if t > now), default=float("inf"))


# -- filters -------------------------------------------------------------------

FILTER_STATES = ("ok", "warning", "stop", "exceeded", "unknown")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_FILTER_VALUES = 100


class FilterError(ValueError):
    """A query string the budget filters cannot read (answered with 400)."""


@dataclass(frozen=True)
class BudgetFilter:
    """Which budgets a page shows: ``?budget=`` (names, any of them), ``?match=``
    (label matchers ``name=value`` or ``name!=value``, all of them) and ``?state=``
    (states, any of them).  Empty: every budget."""

    names: frozenset[str] = frozenset()
    matchers: tuple[tuple[str, bool, str], ...] = ()
    """``(label, equal, value)``; a label a budget does not have reads as empty."""
    states: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.names or self.matchers or self.states)

    def keeps(self, name: str, labels: Mapping[str, str], state: str) -> bool:
        if self.names and name not in self.names:
            return False
        if self.states and state not in self.states:
            return False
        return all((labels.get(k, "") == v) is equal for k, equal, v in self.matchers)

    def describe(self) -> str:
        """The filter as its query parameters, for people."""
        parts = [f"budget={n}" for n in sorted(self.names)]
        parts += [f"match={k}{'=' if eq else '!='}{v}" for k, eq, v in self.matchers]
        parts += [f"state={s}" for s in FILTER_STATES if s in self.states]
        return " ".join(parts)


def read_filter(query: str, also: Iterable[str] = (), *, strict: bool = True) -> BudgetFilter:
    """The filter in a query string; parameters in ``also`` are left to the caller, others
    are an error (``strict``) or ignored."""
    names: set[str] = set()
    matchers: list[tuple[str, bool, str]] = []
    states: set[str] = set()
    known = ("budget", "match", "state", *also)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=300)
    except ValueError:
        raise FilterError("too many query parameters") from None
    for key, value in pairs:
        if key not in known:
            if not strict:
                continue
            raise FilterError(f"unknown query parameter {key[:64]!r} (known: {', '.join(known)})")
        if key == "budget":
            names.add(value)
        elif key == "match":
            matchers.append(_matcher(value))
        elif key == "state":
            if value not in FILTER_STATES:
                raise FilterError(
                    f"unknown state {value[:64]!r} (known: {', '.join(FILTER_STATES)})"
                )
            states.add(value)
    if len(names) + len(matchers) > MAX_FILTER_VALUES:
        raise FilterError(f"at most {MAX_FILTER_VALUES} budget names and matchers")
    return BudgetFilter(frozenset(names), tuple(matchers), frozenset(states))


def _matcher(text: str) -> tuple[str, bool, str]:
    """``team=ml`` or ``team!=ml``."""
    label, sep, value = text.partition("=")
    equal = not label.endswith("!")
    label = label.removesuffix("!")
    if not sep or not _LABEL_NAME.fullmatch(label):
        raise FilterError(
            f"match must be a label matcher such as team=ml or team!=ml, not {text[:64]!r}"
        )
    return label, equal, value


def _holds(engine: Engine) -> tuple[HoldStore | None, HoldSettings]:
    """The engine's hold store and settings (None for an engine that keeps none)."""
    store = getattr(engine, "holds", None)
    settings = getattr(engine, "hold_settings", None) or HoldSettings()
    return store, settings


def _reply(
    status: int,
    document: Mapping[str, Any],
    extra: dict[str, str] | None = None,
    *,
    compact: bool = False,
) -> Reply:
    """``document`` as JSON: indented for people, or ``compact`` (the check and release
    answers, on every operation's path: the C encoder, several times faster)."""
    indent = None if compact else 2
    try:
        text = json.dumps(document, indent=indent, allow_nan=False)
    except ValueError:  # a figure too large for a float: written as null
        text = json.dumps(_json_safe(document), indent=indent, allow_nan=False)
    return status, (text + "\n").encode("utf-8"), {**JSON_HEADERS, **(extra or {})}


def _error(status: int, message: str, allow: str | None = None) -> Reply:
    return _reply(status, {"error": message}, {"Allow": allow} if allow else None)


def error_reply(status: int, message: str) -> Reply:
    """``{"error": message}`` with ``status``."""
    return _error(status, message)


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


def budget_document(
    snapshot: Snapshot,
    budget: BudgetConfig,
    now: float,
    held: Mapping[str, Decimal] | None = None,
) -> dict[str, Any]:
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
    if held is not None:
        document["held"] = _money(held.get(budget.name, Decimal(0)))
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
            "converted": [_conversion(c) for c in view.conversions],
            "left_out": [_left_out(c) for c in view.left_out],
        }
    )
    return document


def _conversion(c: Conversion) -> dict[str, Any]:
    """Spend in another currency counted in the budget's: native, rate and provenance."""
    return {
        "source": c.source,
        "native_currency": c.currency,
        "native": _money(c.native),
        "rate": str(c.quote.value),
        "rate_source": c.quote.source,
        "rate_date": c.quote.day.isoformat() if c.quote.day else None,
        "rate_kind": c.quote.how,
        "amount": _money(c.amount),
    }


def _left_out(c: LeftOut) -> dict[str, Any]:
    """Spend in another currency the budget does not count, and why."""
    stale = c.stale
    return {
        "source": c.source,
        "native_currency": c.currency,
        "native": _money(c.native),
        "reason": c.reason,
        "stale_rate_date": stale.day.isoformat() if stale is not None and stale.day else None,
    }


def _part(part: SpendPart) -> dict[str, Any]:
    """One source's share of a budget's spend: billed up to its horizon, metered after."""
    return {
        "source": part.source,
        "billed": _money(part.billed),
        "metered": _money(part.metered),
        "data_through": _iso(part.data_through.timestamp()) if part.data_through else None,
        "meters": list(part.meters),
        "meters_left_out": list(part.meters_left_out),
        "meter_blind": part.blind,
    }


def _view(snapshot: Snapshot, name: str, now: float) -> BudgetView | None:
    """The budget's figures, unless they belong to a period that has ended since."""
    view = snapshot.budget(name)
    if view is not None and view.window.end.timestamp() <= now:
        return None
    return view


def budgets_document(
    snapshot: Snapshot,
    now: float,
    store: HoldStore | None = None,
    settings: HoldSettings | None = None,
    *,
    wanted: BudgetFilter | None = None,
    held: dict[str, Decimal] | None = None,
    up: bool | None = None,
) -> dict[str, Any]:
    """The budgets document; ``wanted`` filters its budgets.  ``held`` and ``up`` are the
    store's held amounts and health when the caller has just read them."""
    config: Config = snapshot.config
    check_config = config.global_.check
    ages = _ages(snapshot, now)
    holds: dict[str, Any] | None = None
    if store is not None:
        if held is None:
            visible_after = (settings or HoldSettings()).visible_after
            held = store.held(now, _covered_until(snapshot, visible_after))
        holds = {"store": store.kind, "up": store.up() if up is None else up}
    else:
        held = None
    budgets = [budget_document(snapshot, b, now, held) for b in config.budgets]
    if wanted:
        budgets = [b for b in budgets if wanted.keeps(b["name"], b["labels"], b["state"])]
    document = {
        "generated_at": _iso(now),
        "data_as_of": _iso(snapshot.built_at),
        "check": {
            "max_data_age_seconds": (
                check_config.max_data_age.total_seconds() if check_config.max_data_age else None
            ),
            "on_stale": check_config.on_stale,
        },
        "budgets": budgets,
        "sources": [_source_health(s, ages.get(s.name)) for s in snapshot.states],
    }
    if holds is not None:
        document["holds"] = holds
    return document


# -- the check -----------------------------------------------------------------

CHECK_FIELDS = (
    "budget",
    "source",
    "dimensions",
    "cost",
    "currency",
    "hold",
    "hold_seconds",
    "idempotency_key",
    "client",
)
MAX_NAMED_BUDGETS = 100
ANONYMOUS = "anonymous"
_RELEASE_USAGE = 'use POST with {"hold": "<id>", "cost": <actual cost>}'
_CHECK_USAGE = (
    'use POST with {"budget": "<name>", "cost": <amount>} or '
    '{"source": "<source>", "dimensions": {...}, "cost": <amount>}'
)


def _cost(value: Any) -> Decimal:
    """``value`` (a JSON number or numeric string; none is 0) as a Decimal in [0, MAX_COST)."""
    if value is None:
        return Decimal(0)
    return _CONTEXT.plus(parse_cost(value))  # at most 34 significant digits


@dataclass(frozen=True)
class _Subject:
    """One budget a check counts against, with its figures."""

    budget: BudgetConfig
    view: BudgetView | None
    fresh: Freshness
    room: Room

    @property
    def stale(self) -> bool:
        return self.view is None or self.fresh.stale


class _Prepared:
    """What checks against one snapshot look up again and again, worked out once per
    budget: its sources' last successes and allowances, and its metered sources."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.states = {s.name: s for s in snapshot.states}
        self._ages: dict[str, tuple[tuple[str, float | None, float], ...]] = {}
        self._meters: dict[str, tuple[str, ...]] = {}

    def freshness(self, budget: BudgetConfig, now: float) -> Freshness:
        """:func:`budget_freshness` of the budget at ``now``."""
        ages = self._ages.get(budget.name)
        if ages is None:
            config: Config = self.snapshot.config
            ages = tuple(
                (
                    source.name,
                    state.success_of(budget.period)
                    if (state := self.states.get(source.name))
                    else None,
                    config.max_data_age(source).total_seconds(),
                )
                for source in config.polled_sources(budget)
            )
            self._ages[budget.name] = ages
        return Freshness(
            tuple(
                SourceAge(name, None if last is None else max(0.0, now - last), allowed)
                for name, last, allowed in ages
            )
        )

    def meters(self, budgets: list[BudgetConfig]) -> tuple[str, ...]:
        """:func:`metered_sources` of the budgets."""
        found: set[str] = set()
        for budget in budgets:
            meters = self._meters.get(budget.name)
            if meters is None:
                meters = self._meters[budget.name] = metered_sources(self.snapshot.config, [budget])
            found.update(meters)
        return tuple(sorted(found))


_prepared: _Prepared | None = None


def _prepared_for(snapshot: Snapshot) -> _Prepared:
    global _prepared
    found = _prepared
    if found is None or found.snapshot is not snapshot:
        found = _prepared = _Prepared(snapshot)
    return found


def _subject(snapshot: Snapshot, budget: BudgetConfig, now: float) -> _Subject:
    config: Config = snapshot.config
    view = _view(snapshot, budget.name, now)
    fresh = _prepared_for(snapshot).freshness(budget, now)
    stale = view is None or fresh.stale
    closed = stale and config.global_.check.on_stale == "fail_closed"
    headroom = None
    if view is not None:
        headroom = view.limit * Decimal(repr(view.stop_ratio)) - view.spend
    return _Subject(budget, view, fresh, Room(budget.name, headroom, deny=closed))


_budget_index: tuple[Config | None, dict[str, BudgetConfig]] = (None, {})
_dimension_index: tuple[Config | None, frozenset[str]] = (None, frozenset())


def _budget_named(config: Config, name: str) -> BudgetConfig | None:
    global _budget_index
    cached, index = _budget_index
    if cached is not config:
        index = {b.name: b for b in config.budgets}
        _budget_index = (config, index)
    return index.get(name)


def _known_dimensions(config: Config) -> frozenset[str]:
    global _dimension_index
    cached, known = _dimension_index
    if cached is not config:
        known = known_dimensions(config)
        _dimension_index = (config, known)
    return known


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'openai'?"`` when a known name is close to ``name``, else ``""``."""
    if len(name) > 100:
        return ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _named_budgets(config: Config, value: Any) -> list[BudgetConfig]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise _Refused(400, "budget must be a budget's name or a non-empty list of names")
    if len(names) > MAX_NAMED_BUDGETS:
        raise _Refused(400, f"at most {MAX_NAMED_BUDGETS} budgets in one check")
    found = []
    for name in names:
        budget = _budget_named(config, name)
        if budget is None:
            hint = did_you_mean(name, (b.name for b in config.budgets))
            raise _Refused(404, f"unknown budget {name[:100]!r}{hint}")
        found.append(budget)
    return found


@dataclass(frozen=True)
class _Asked:
    """A check request, read and validated."""

    budgets: tuple[BudgetConfig, ...]
    cost: Decimal
    currency: str | None
    meters: tuple[str, ...]
    """Metered sources whose polls will show the spend once recorded."""
    single: bool
    """``{"budget": "<name>"}``: the answer is that budget's, as before lists and descriptions."""
    hold: HoldRequest | None
    source: str | None = None
    dimensions: dict[str, str] | None = None


def _read_check(prepared: _Prepared, request: Any, settings: HoldSettings) -> _Asked:
    config: Config = prepared.snapshot.config
    if not isinstance(request, dict):
        raise _Refused(400, 'the body must be a JSON object such as {"budget": "openai"}')
    unknown = sorted(set(request) - set(CHECK_FIELDS))
    if unknown:
        raise _Refused(400, f"unknown field {unknown[0][:64]!r} (known: {', '.join(CHECK_FIELDS)})")
    named, source = request.get("budget"), request.get("source")
    if named is None and source is None:
        raise _Refused(
            400,
            "budget (a budget's name or a list of them) or source (with its dimensions) "
            "is required",
        )
    budgets: list[BudgetConfig] = [] if named is None else _named_budgets(config, named)
    meters = prepared.meters(budgets)
    dimensions = None
    if source is not None:
        if not isinstance(source, str) or not source:
            raise _Refused(400, "source must be the name of a configured source")
        try:
            dimensions = read_dimensions(request.get("dimensions"), _known_dimensions(config))
            described, described_meters = budgets_counting(config, source, dimensions)
        except DescriptionError as exc:
            hint = ""
            if config.source_named(source) is None:
                hint = did_you_mean(source, (s.name for s in config.sources))
            raise _Refused(exc.status, f"{exc}{hint}") from None
        budgets += [b for b in described if b not in budgets]
        meters = tuple(sorted({*meters, *described_meters}))
    elif "dimensions" in request:
        raise _Refused(400, "dimensions describe a source's spend: give source too")
    try:
        cost = _cost(request.get("cost"))
    except ValueError as exc:
        raise _Refused(400, str(exc)) from None
    currency = request.get("currency")
    if currency is not None:
        if not isinstance(currency, str):
            raise _Refused(400, "currency must be a three-letter code such as USD")
        currency = currency.upper()
    currencies = sorted({b.currency for b in budgets})
    if currency is not None and any(c != currency for c in currencies):
        raise _Refused(400, f"cost must be in the budget's currency, {', '.join(currencies)}")
    if currency is None and len(currencies) > 1:
        raise _Refused(
            400,
            f"the budgets this spend counts against are in {' and '.join(currencies)}: "
            "a cost cannot be in all of them (there is no conversion)",
        )
    currency = currency or (currencies[0] if currencies else None)
    return _Asked(
        budgets=tuple(budgets),
        cost=cost,
        currency=currency,
        meters=meters,
        single=isinstance(named, str) and source is None,
        hold=_read_hold(request, settings, meters),
        source=source,
        dimensions=dimensions,
    )


def _read_hold(
    request: dict[str, Any], settings: HoldSettings, meters: tuple[str, ...]
) -> HoldRequest | None:
    hold = request.get("hold", False)
    if not isinstance(hold, bool):
        raise _Refused(400, "hold must be true or false")
    if not hold:
        for name in ("hold_seconds", "idempotency_key"):
            if name in request:
                raise _Refused(400, f"{name} is for holds: send hold: true with it")
        return None
    try:
        ttl = check_ttl(request.get("hold_seconds"), settings)
        key = request.get("idempotency_key")
        key = None if key is None else check_name(key, "idempotency_key")
        client = check_name(request.get("client", ANONYMOUS), "client")
    except HoldRefused as exc:
        raise _Refused(exc.status, exc.message) from None
    return HoldRequest(client=client, ttl=ttl, key=key, sources=meters)


_covered_cache: tuple[Snapshot | None, float, dict[str, float]] = (None, 0.0, {})


def _covered_until(snapshot: Snapshot, visible_after: float) -> dict[str, float]:
    """:func:`covered_until` of the snapshot, computed once per snapshot."""
    global _covered_cache
    cached, after, found = _covered_cache
    if cached is not snapshot or after != visible_after:
        found = covered_until(snapshot.config, snapshot.states, visible_after)
        _covered_cache = (snapshot, visible_after, found)
    return found


def check(
    snapshot: Snapshot,
    now: float,
    request: Any,
    store: HoldStore | None = None,
    settings: HoldSettings | None = None,
) -> tuple[int, dict[str, Any]]:
    """Decide whether an operation of ``request["cost"]`` fits every budget it counts against
    (and hold its cost when asked and allowed)."""
    settings = settings or HoldSettings()
    config: Config = snapshot.config
    try:
        asked = _read_check(_prepared_for(snapshot), request, settings)
    except _Refused as exc:
        return exc.status, {"error": exc.message}
    if asked.hold is not None and store is None:
        return 400, {"error": "this exporter keeps no holds"}
    subjects = [_subject(snapshot, b, now) for b in asked.budgets]
    rooms = tuple(s.room for s in subjects)
    cost = asked.cost
    if store is None or not rooms:  # no budget counts the spend: nothing to hold against
        outcome = Outcome(all(r.fits(Decimal(0), cost) for r in rooms))
    else:
        covered = _covered_until(snapshot, settings.visible_after)
        try:
            outcome = store.check(rooms, cost, asked.currency or "", asked.hold, now, covered)
        except HoldRefused as exc:
            return exc.status, {"error": exc.message}
    held = dict(outcome.held)
    if outcome.replayed and outcome.hold is not None and outcome.hold.in_flight:
        for name in outcome.hold.budgets:  # the earlier hold is this operation's own
            if name in held:
                held[name] = max(held[name] - outcome.hold.amount, Decimal(0))
    answers = [
        _budget_answer(s, cost, held.get(s.budget.name, Decimal(0)), config, store is not None)
        for s in subjects
    ]
    allowed = outcome.allowed
    if asked.single:
        answer = answers[0]
        answer["allowed"] = allowed
    else:
        blocking = [a["budget"] for a in answers if not a["allowed"]]
        answer = {
            "allowed": allowed,
            "reason": _overall_reason(answers, blocking, allowed, outcome),
            "blocking": blocking,
            "cost": _money(cost),
            "currency": asked.currency,
        }
        if asked.source is not None:
            answer["source"] = asked.source
            answer["dimensions"] = asked.dimensions or {}
        answer["budgets"] = answers
    if asked.hold is not None:
        answer["hold"] = _hold_document(outcome.hold, outcome.replayed, now)
    if outcome.store_error is not None:
        answer["holds_store"] = {
            "up": False,
            "error": outcome.store_error,
            "policy": getattr(store, "on_unavailable", "fail_open"),
        }
        answer["reason"] = f"{answer['reason']}; {outcome.store_error}"
    return 200, answer


def _overall_reason(
    answers: list[dict[str, Any]], blocking: list[str], allowed: bool, outcome: Outcome
) -> str:
    if not answers:
        return "no budget counts this spend"
    if outcome.replayed:
        return "the idempotency key names a hold made earlier for this operation"
    if allowed:
        return f"every budget this spend counts against ({len(answers)}) has room for it"
    if not blocking:  # the store said no: unreachable (reason added), or within its rounding
        return "denied by the holds store"
    by_name = {a["budget"]: a for a in answers}
    return "; ".join(f"budget {name}: {by_name[name]['reason']}" for name in blocking)


def _hold_document(entry: Entry | None, replayed: bool, now: float) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "id": entry.id,
        "amount": _money(entry.amount),
        "currency": entry.currency,
        "budgets": list(entry.budgets),
        "state": "held" if entry.in_flight else "recorded",
        "expires_at": _iso(entry.expires),
        "expires_in_seconds": round(max(entry.expires - now, 0.0), 3),
        "replayed": replayed,
    }


def _budget_answer(
    subject: _Subject, cost: Decimal, held: Decimal, config: Config, with_holds: bool
) -> dict[str, Any]:
    budget, view, fresh = subject.budget, subject.view, subject.fresh
    policy = config.global_.check
    answer: dict[str, Any] = {
        "budget": budget.name,
        "currency": budget.currency,
        "cost": _money(cost),
    }
    if with_holds:
        answer["held"] = _money(held)
    within: bool | None = None
    if view is not None:
        after = view.spend + held + cost
        ratio_after = float(after / view.limit)
        within = held + cost < _room(subject)
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
                    view.limit * Decimal(repr(view.stop_ratio)) - view.spend - held
                ),
            }
        )
    else:
        answer["state"] = "unknown"
    stale = subject.stale
    answer["data_age_seconds"] = None if fresh.age is None else round(fresh.age, 3)
    answer["stale"] = stale
    answer["stale_sources"] = [s.name for s in fresh.stale_sources]

    if not stale:
        assert view is not None and within is not None
        answer["allowed"] = within
        answer["reason"] = _reason(view, cost, held, answer["ratio_after"], within)
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
    return ordered


def _room(subject: _Subject) -> Decimal:
    assert subject.room.headroom is not None
    return subject.room.headroom


# -- release -------------------------------------------------------------------

RELEASE_FIELDS = ("hold", "cost")


def release(
    snapshot: Snapshot,
    now: float,
    request: Any,
    store: HoldStore | None,
    settings: HoldSettings | None = None,
) -> tuple[int, dict[str, Any]]:
    """End a hold: record the operation's actual ``cost`` (none or 0: it spent nothing)."""
    settings = settings or HoldSettings()
    if not isinstance(request, dict):
        return 400, {"error": 'the body must be a JSON object such as {"hold": "<id>", "cost": 1}'}
    unknown = sorted(set(request) - set(RELEASE_FIELDS))
    if unknown:
        return 400, {"error": f"unknown field {unknown[0][:64]!r} (known: hold, cost)"}
    hold_id = request.get("hold")
    if not isinstance(hold_id, str) or not HOLD_ID_PATTERN.match(hold_id):
        return 400, {"error": "hold must be the id a check with hold: true answered"}
    try:
        actual = _cost(request.get("cost"))
    except ValueError as exc:
        return 400, {"error": str(exc)}
    if store is None:
        return 404, {"error": f"no hold {hold_id!r}"}
    try:
        entry = store.release(hold_id, actual, now)
    except HoldRefused as exc:
        return exc.status, {"error": exc.message}
    if entry is None:
        return 200, {"hold": hold_id, "state": "released", "recorded": 0.0}
    answer: dict[str, Any] = {
        "hold": hold_id,
        "state": "recorded",
        "recorded": _money(entry.amount),
        "currency": entry.currency,
        "budgets": list(entry.budgets),
        "recorded_at": _iso(entry.recorded_at),
        "counts_until": (
            f"a poll of {', '.join(entry.sources)} that starts at or after "
            f"{_iso((entry.recorded_at or now) + settings.visible_after)}, "
            f"at the latest {_iso(entry.expires)}"
            if entry.sources
            else f"{_iso(entry.expires)} (no metered source shows this spend)"
        ),
    }
    return 200, answer


def _reason(
    view: BudgetView, cost: Decimal, held: Decimal, ratio_after: float, within: bool
) -> str:
    with_held = f" plus {held} {view.currency} held for operations in flight" if held else ""
    with_cost = f" plus this operation's {cost} {view.currency}" if cost else ""
    where = "below" if within else "at or above"
    return (
        f"spend of {view.spend:.2f} {view.currency}{with_held}{with_cost} is "
        f"{_share(ratio_after)} of the {view.limit} {view.currency} limit, {where} the stop "
        f"threshold of {_pct(view.stop_ratio)}"
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
