"""Ask budget-exporter before an expensive call, hold its cost while it runs and record what
it spent; raise :class:`BudgetExceeded` when denied (see docs/check-api.md#the-python-guard).

    guard = BudgetGuard("http://budget-exporter:9820")
    with guard.spending("openai", cost=estimate("gpt-4o", 12_000, 800)) as spend:
        spend.record(reply_cost)                    # or record_tokens(...)
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

import requests

from budget_exporter.core.model import MAX_AMOUNT
from budget_exporter.core.money import given_cost
from budget_exporter.metering import Meter, currency_code, default_meter

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:9820"
MAX_COST = MAX_AMOUNT
"""The exporter refuses a cost this large; so does the guard, without asking."""
P = ParamSpec("P")
R = TypeVar("R")
Cost = float | int | Decimal | None
Budgets = str | Sequence[str] | None
"""A budget's name, several names, or None when the spend is described by its source."""


@dataclass(frozen=True)
class Spend:
    """What an operation spends: named budgets, or a source and its dimensions, or both."""

    budgets: tuple[str, ...] = ()
    source: str | None = None
    dimensions: tuple[tuple[str, str], ...] = ()
    single: bool = False
    """One budget named as a plain string (the exporter answers that budget's figures)."""

    @classmethod
    def of(cls, budget: Budgets, source: str | None, dimensions: Mapping[str, str] | None) -> Spend:
        if isinstance(budget, str):
            names: tuple[str, ...] = (budget,)
        elif budget is None:
            names = ()
        else:
            names = tuple(budget)
        if not names and not source:
            raise BudgetCheckError("name a budget, or describe the spend with source=")
        if dimensions and not source:
            raise BudgetCheckError("dimensions describe a source's spend: give source= too")
        dims = tuple(sorted((str(k), str(v)) for k, v in (dimensions or {}).items()))
        return cls(names, source or None, dims, isinstance(budget, str) and not source)

    @property
    def label(self) -> str:
        """How messages name it."""
        parts = list(self.budgets)
        if self.source:
            dims = ", ".join(f"{k}={v}" for k, v in self.dimensions)
            parts.append(f"source {self.source}" + (f" ({dims})" if dims else ""))
        return " + ".join(parts)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.budgets:
            body["budget"] = self.budgets[0] if self.single else list(self.budgets)
        if self.source:
            body["source"] = self.source
            if self.dimensions:
                body["dimensions"] = dict(self.dimensions)
        return body


@dataclass(frozen=True)
class Decision:
    """The exporter's answer (or the local fallback when it could not be asked)."""

    allowed: bool
    budget: str
    """The budget's name; for several budgets or a description, the blocking ones (when
    denied) or every one checked, joined with ``+``."""
    reason: str
    state: str | None = None
    ratio_after: float | None = None
    stale: bool = False
    reachable: bool = True
    answer: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    budgets: tuple[str, ...] = ()
    """Every budget the exporter checked."""
    blocking: tuple[str, ...] = ()
    """The budgets that said no."""
    hold: str | None = None
    """The id of the hold the exporter made for this operation, if it made one."""


class BudgetCheckError(Exception):
    """The check itself is wrong (unknown budget, bad request, bad credentials): fix the caller."""


class BudgetExceeded(Exception):
    """The budget has no room for this operation (or could not be checked, fail-closed)."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(f"budget {decision.budget!r}: {decision.reason}")


def _client_name() -> str:
    name = f"{socket.gethostname()}-{os.getpid()}"
    cleaned = "".join(c if c.isalnum() or c in "._:-" else "-" for c in name)
    return cleaned[:128] or "anonymous"


class BudgetGuard:
    """A small client of ``POST /api/v1/check`` (and ``/api/v1/release`` for holds)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 2.0,
        cache_seconds: float = 2.0,
        cache_size: int = 1024,
        fail_open: bool = True,
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        session: requests.Session | None = None,
        meter: Meter | None = None,
        client: str | None = None,
        hold_seconds: float | None = None,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.url = (url or os.environ.get("BUDGET_EXPORTER_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        """How long a denied answer is reused (allowed answers never are)."""
        self.cache_size = cache_size
        self.fail_open = fail_open
        self.auth = auth
        self.verify = verify
        self.session = session or requests.Session()
        self.client = client or _client_name()
        """The name holds are counted under (the exporter limits holds per client)."""
        self.hold_seconds = hold_seconds
        """How long holds last when the block does not end first (None: the exporter's default)."""
        self._meter = meter
        # (spend, cost) -> (expiry on the monotonic clock, denied decision); oldest use first.
        self._cache: OrderedDict[tuple[Spend, str], tuple[float, Decision]] = OrderedDict()
        self._currencies: dict[str, str] = {}
        """Budget -> the currency the exporter last said it is in (its budgets only)."""
        self._lock = threading.Lock()

    @property
    def meter(self) -> Meter:
        """Where :meth:`spending` and ``guarded(record=...)`` record actual costs."""
        if self._meter is None:
            self._meter = default_meter()
        return self._meter

    @contextmanager
    def spending(
        self,
        budget: Budgets = None,
        cost: Cost = None,
        *,
        source: str | None = None,
        dimensions: Mapping[str, str] | None = None,
        currency: str | None = None,
        hold: bool = True,
        hold_seconds: float | None = None,
    ) -> Iterator[Spending]:
        """Check the spend for ``cost`` (raise :class:`BudgetExceeded` when denied), run the
        block, and record its actual cost (see :class:`Spending`).

        With ``hold`` (the default) and a cost, the exporter holds the cost against every
        budget the operation touches until the block ends; the guard then releases the
        hold with the cost the block recorded, which keeps counting until the meter shows
        it.  ``currency`` is the budget's currency, for recording while the exporter cannot
        be asked (see :meth:`record_currency`)."""
        spend = Spend.of(budget, source, dimensions)
        amount = _amount(cost)
        holding = hold and bool(amount)
        decision = self._decide(spend, amount, holding, hold_seconds)
        if not decision.allowed:
            raise BudgetExceeded(decision)
        block = Spending(self.meter, spend, self.record_currency(decision, currency))
        block.declare()
        ended = False
        try:
            yield block
            ended = True
        finally:
            try:
                if ended and block.calls == 0 and amount:
                    block.record(amount)
            finally:
                if holding and decision.hold is not None:
                    self.release(decision.hold, block.recorded)

    def release(self, hold: str, cost: Cost = None) -> bool:
        """End hold ``hold``: the exporter counts ``cost`` (the operation's actual cost; None
        or 0 when it spent nothing) until the meter shows it.  False when the exporter could
        not be told (the hold then ends at its expiry)."""
        body: dict[str, Any] = {"hold": hold}
        amount = _amount(cost)
        if amount:
            body["cost"] = float(amount)
        try:
            response = self.session.post(
                f"{self.url}/api/v1/release",
                json=body,
                timeout=self.timeout,
                auth=self.auth,
                verify=self.verify,
            )
        except requests.RequestException as exc:
            log.warning("could not release hold %s (%s): it ends at its expiry", hold, exc)
            return False
        if response.status_code != 200:
            log.warning(
                "could not release hold %s: %s; it ends at its expiry", hold, _error_text(response)
            )
            return False
        return True

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def cache_len(self) -> int:
        """How many denied answers the cache holds (expired ones included until the next insert)."""
        with self._lock:
            return len(self._cache)

    def check(
        self,
        budget: Budgets = None,
        cost: Cost = None,
        *,
        source: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> Decision:
        """The decision for the spend and ``cost``; never raises :class:`BudgetExceeded`.

        Holds nothing: two operations allowed by two checks are not counted against each
        other (use :meth:`spending`, which holds, for that)."""
        return self._decide(Spend.of(budget, source, dimensions), _amount(cost), False, None)

    def _decide(
        self, spend: Spend, amount: Decimal | None, hold: bool, hold_seconds: float | None
    ) -> Decision:
        key = (spend, str(amount))
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
        decision = self._ask(spend, amount, hold, hold_seconds)
        if not decision.allowed and decision.reachable and self.cache_seconds > 0:
            self._remember(key, decision)
        return decision

    def _remember(self, key: tuple[Spend, str], decision: Decision) -> None:
        """Cache a denied ``decision``: drop expired answers, then the least recently used."""
        now = time.monotonic()
        with self._lock:
            for old in [k for k, (expiry, _) in self._cache.items() if expiry <= now]:
                del self._cache[old]
            self._cache[key] = (now + self.cache_seconds, decision)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def check_budget(
        self,
        budget: Budgets = None,
        cost: Cost = None,
        *,
        source: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> Decision:
        """Like :meth:`check`, but raise :class:`BudgetExceeded` when not allowed."""
        decision = self.check(budget, cost, source=source, dimensions=dimensions)
        if not decision.allowed:
            raise BudgetExceeded(decision)
        return decision

    def guarded(
        self,
        budget: Budgets = None,
        cost: Cost | Callable[..., Cost] = None,
        *,
        source: str | None = None,
        dimensions: Mapping[str, str] | None = None,
        record: Callable[[Any], Cost] | None = None,
        currency: str | None = None,
        hold: bool = True,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator: check the spend before each call; ``cost`` may be a function of its
        arguments.  With ``hold`` (the default) the cost is held during the call and
        released after it with the actual cost: ``record(result)`` when given (also
        recorded in the spend counter, in the budget's currency, see
        :meth:`record_currency`), else the estimate; nothing when the call raises."""
        spend = Spend.of(budget, source, dimensions)

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                estimate = _amount(cost(*args, **kwargs) if callable(cost) else cost)
                holding = hold and bool(estimate)
                decision = self._decide(spend, estimate, holding, None)
                if not decision.allowed:
                    raise BudgetExceeded(decision)
                recording = self.record_currency(decision, currency) if record else None
                if recording is not None:
                    Spending(self.meter, spend, recording).declare()
                actual: Decimal | None = None
                try:
                    result = func(*args, **kwargs)
                    if record is not None:
                        actual = _amount(record(result))
                        if actual:
                            Spending(self.meter, spend, recording).record(actual)
                    else:
                        actual = estimate
                    return result
                finally:
                    if holding and decision.hold is not None:
                        self.release(decision.hold, actual)

            return wrapper

        return decorate

    def record_currency(self, decision: Decision, given: str | None = None) -> str | None:
        """The currency to record ``decision.budget``'s spend in.

        The exporter's answer says it; ``given`` (the caller's ``currency=``) must
        agree with it (:class:`BudgetCheckError` otherwise) and is used when the
        exporter could not be asked; failing both, the currency the exporter gave
        for the budget earlier.  None when nobody has said: never a guess.
        """
        budget = decision.budget
        told = decision.answer.get("currency")
        told = told if isinstance(told, str) and len(told) == 3 else None
        if given is not None:
            given = currency_code(given)
            if told is not None and told != given:
                raise BudgetCheckError(
                    f"budget {budget!r} is in {told} (budget-exporter says), not {given}"
                )
        with self._lock:
            if told is not None:
                self._currencies[budget] = told
            return given or told or self._currencies.get(budget)

    def _ask(
        self, spend: Spend, amount: Decimal | None, hold: bool, hold_seconds: float | None
    ) -> Decision:
        body = spend.body()
        if amount is not None:
            body["cost"] = float(amount)
        if hold:
            body.update(hold=True, client=self.client, idempotency_key=uuid.uuid4().hex)
            seconds = hold_seconds if hold_seconds is not None else self.hold_seconds
            if seconds is not None:
                body["hold_seconds"] = seconds
        label = spend.label
        response = None
        for attempt in range(2 if hold else 1):  # a hold is retried once: the key makes it safe
            try:
                response = self.session.post(
                    f"{self.url}/api/v1/check",
                    json=body,
                    timeout=self.timeout,
                    auth=self.auth,
                    verify=self.verify,
                )
                break
            except requests.RequestException as exc:
                if attempt == 1 or not hold or not isinstance(exc, requests.ConnectionError):
                    return self._unreachable(
                        label, f"cannot reach budget-exporter ({type(exc).__name__})"
                    )
        assert response is not None
        if response.status_code in (400, 404):
            raise BudgetCheckError(_error_text(response))
        if response.status_code in (401, 403):
            raise BudgetCheckError(
                f"budget-exporter refused the credentials (HTTP {response.status_code}): "
                "pass auth=(user, password) matching its web config"
            )
        if response.status_code == 429:  # too many holds: no room to hold, so no go
            return Decision(allowed=False, budget=label, reason=_error_text(response))
        if response.status_code != 200:
            return self._unreachable(label, f"budget-exporter answered HTTP {response.status_code}")
        try:
            answer = response.json()
            allowed = answer["allowed"]
        except (ValueError, KeyError, TypeError):
            return self._unreachable(label, "budget-exporter's answer is not a check result")
        if not isinstance(allowed, bool):
            return self._unreachable(label, "budget-exporter's answer is not a check result")
        return _decision(spend, answer, allowed)

    def _unreachable(self, budget: str, why: str) -> Decision:
        verdict = "allowed (fail-open)" if self.fail_open else "denied (fail-closed)"
        log.warning("budget check for %s: %s; %s", budget, why, verdict)
        return Decision(
            allowed=self.fail_open,
            budget=budget,
            reason=f"{why}; {verdict}",
            reachable=False,
        )


def _decision(spend: Spend, answer: dict[str, Any], allowed: bool) -> Decision:
    hold = answer.get("hold")
    hold_id = hold.get("id") if isinstance(hold, dict) else None
    if spend.single:
        budgets: tuple[str, ...] = spend.budgets
        blocking: tuple[str, ...] = () if allowed else spend.budgets
        name, state, ratio_after = spend.budgets[0], answer.get("state"), answer.get("ratio_after")
        stale = bool(answer.get("stale", False))
    else:
        checked = [b for b in answer.get("budgets", []) if isinstance(b, dict)]
        budgets = tuple(str(b.get("budget")) for b in checked)
        blocking = tuple(str(b) for b in answer.get("blocking", []))
        name = "+".join(blocking or budgets) or spend.label
        worst = max(
            (b for b in checked if isinstance(b.get("ratio_after"), int | float)),
            key=lambda b: b["ratio_after"],
            default=None,
        )
        state = worst.get("state") if worst else None
        ratio_after = worst.get("ratio_after") if worst else None
        stale = any(b.get("stale") for b in checked)
    return Decision(
        allowed=allowed,
        budget=name,
        reason=str(answer.get("reason", "")),
        state=state,
        ratio_after=ratio_after,
        stale=stale,
        answer=answer,
        budgets=budgets,
        blocking=blocking,
        hold=hold_id if isinstance(hold_id, str) else None,
    )


class Spending:
    """The block of :meth:`BudgetGuard.spending`: record what the operation really cost.

    A described spend (``source=``) is recorded in the meter's per-source counter with
    its dimensions (:meth:`~budget_exporter.metering.Meter.record_spend`); named budgets
    in the per-budget counter, once under each name."""

    def __init__(self, meter: Meter, spend: Spend | str, currency: str | None) -> None:
        self.meter = meter
        self.spend = spend if isinstance(spend, Spend) else Spend.of(spend, None, None)
        self.budget = self.spend.label
        """How messages name what is spent (the budget's name for one budget)."""
        self.currency = currency
        """The budget's currency; None when neither the exporter nor the caller said it."""
        self.recorded = Decimal(0)
        """The total recorded so far."""
        self.calls = 0
        """How many times :meth:`record` or :meth:`record_tokens` was called."""

    def declare(self) -> None:
        """Create, at zero, the series the block's cost will be recorded in, if new.

        An allowed check comes before the spend: a scrape between the two sees the new
        series at zero, so ``increase()`` counts its first cost whole (docs/realtime.md, a
        new series' first increment).  Best effort: a series the meter refuses (beyond its
        bounds, bad dimensions) is left for :meth:`record` to report."""
        if self.currency is None:
            return
        spend = self.spend
        try:
            if spend.source:
                self.meter.declare_spend(
                    spend.source, dimensions=dict(spend.dimensions), currency=self.currency
                )
            else:
                for name in spend.budgets:  # the model a record() may name is not known yet
                    self.meter.declare(name, currency=self.currency)
        except ValueError:
            pass

    def record(self, cost: float | int | Decimal, *, model: str = "") -> Decimal:
        """Record ``cost`` (in the budget's currency); may be called more than once.

        With the currency unknown (the exporter could not be asked and no
        ``currency=`` was given) nothing is recorded, with an error logged: a cost
        recorded in a guessed currency would be left out of the budget anyway (a
        currency mismatch), or counted in the wrong one.  Returns what was recorded."""
        self.calls += 1
        if self.currency is None:
            log.error(
                "budget %s: cost %s not recorded: its currency is unknown (budget-exporter "
                "could not be asked); pass currency= to spending() or guarded()",
                self.budget,
                cost,
            )
            return Decimal(0)
        amount = self._record(given_cost(cost), model, self.currency)
        self.recorded += amount
        return amount

    def _record(self, amount: Decimal, model: str, currency: str) -> Decimal:
        spend = self.spend
        if spend.source:
            dimensions = dict(spend.dimensions)
            if model:
                dimensions["model"] = model
            return self.meter.record_spend(
                spend.source, amount, dimensions=dimensions, currency=currency
            )
        for name in spend.budgets:
            self.meter.record_cost(name, amount, model=model, currency=currency)
        return amount

    def record_tokens(self, model: str, *counts: int, **named: int) -> Decimal:
        """Price one call's tokens (counts as for :class:`~budget_exporter.pricing.TokenCounts`)
        with the meter's price table and record the cost, in the table's currency, which
        must be the budget's when that is known."""
        table = self.meter.price_table()
        if self.currency not in (None, table.currency):
            raise ValueError(
                f"the price table is in {table.currency}, the budget in {self.currency}: "
                "record the cost with record() instead"
            )
        amount = self._record(table.estimate(model, *counts, **named), model, table.currency)
        self.recorded += amount
        self.calls += 1
        return amount


def _amount(cost: Cost) -> Decimal | None:
    return None if cost is None else given_cost(cost)


def _error_text(response: requests.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"budget-exporter answered HTTP {response.status_code}"


_default: BudgetGuard | None = None
_default_lock = threading.Lock()


def default_guard() -> BudgetGuard:
    """The module-level guard, configured from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            fail_open = os.environ.get("BUDGET_EXPORTER_FAIL_OPEN", "true").strip().lower()
            _default = BudgetGuard(fail_open=fail_open not in ("false", "0", "no"))
        return _default


def check_budget(
    budget: Budgets = None,
    cost: Cost = None,
    *,
    source: str | None = None,
    dimensions: Mapping[str, str] | None = None,
) -> Decision:
    """Ask the default guard; raise :class:`BudgetExceeded` when denied."""
    return default_guard().check_budget(budget, cost, source=source, dimensions=dimensions)


def spending(
    budget: Budgets = None,
    cost: Cost = None,
    *,
    source: str | None = None,
    dimensions: Mapping[str, str] | None = None,
    currency: str | None = None,
    hold: bool = True,
    hold_seconds: float | None = None,
) -> Any:
    """:meth:`BudgetGuard.spending` of the default guard (a context manager)."""
    return default_guard().spending(
        budget,
        cost,
        source=source,
        dimensions=dimensions,
        currency=currency,
        hold=hold,
        hold_seconds=hold_seconds,
    )


def guarded(
    budget: Budgets = None,
    cost: Cost | Callable[..., Cost] = None,
    *,
    source: str | None = None,
    dimensions: Mapping[str, str] | None = None,
    record: Callable[[Any], Cost] | None = None,
    currency: str | None = None,
    hold: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator using the default guard; see :meth:`BudgetGuard.guarded`."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            guard = default_guard()
            return guard.guarded(
                budget,
                cost,
                source=source,
                dimensions=dimensions,
                record=record,
                currency=currency,
                hold=hold,
            )(func)(*args, **kwargs)

        return wrapper

    return decorate
