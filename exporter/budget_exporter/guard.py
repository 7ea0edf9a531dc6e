"""Ask budget-exporter before an expensive call; raise :class:`BudgetExceeded` when denied.

    from budget_exporter.guard import BudgetGuard, BudgetExceeded
    from budget_exporter.pricing import estimate

    guard = BudgetGuard("http://budget-exporter:9820")
    guard.check_budget("openai", cost=estimate("gpt-4o", 12_000, 800))   # raises if denied

    @guard.guarded("openai", cost=lambda prompt, **_: estimate("gpt-4o", len(prompt) // 4, 800))
    def summarise(prompt: str) -> str: ...

Answers are cached for ``cache_seconds`` (the exporter's figures change only
when a source is polled), per budget and cost, in a cache of at most
``cache_size`` answers (least recently used first out; expired answers are
dropped whenever one is added).  Requests time out after ``timeout`` seconds,
and an unreachable exporter allows the call (``fail_open=True``, the default)
or denies it (``fail_open=False``).  A budget name the exporter does not know is
always an error (:class:`BudgetCheckError`): a typo must not pass silently.

Check, spend, record -- the actual cost goes to the spend counter of
:mod:`budget_exporter.metering`, which a ``prometheus`` source reads back, so the
budget sees it within seconds instead of at the next bill::

    with guard.spending("openai", cost=estimate("gpt-4o", 12_000, 800)) as spend:
        reply = client.chat.completions.create(...)            # raises BudgetExceeded first if denied
        spend.record_tokens("gpt-4o", reply.usage.prompt_tokens, reply.usage.completion_tokens)

A block that records nothing and ends normally records the estimate it was
checked with; a block that raises records only what it recorded itself.  The
decorator takes ``record=`` (a function of the call's result giving its actual
cost) for the same.

Module-level :func:`check_budget` and :func:`guarded` use a guard configured
from the environment: ``BUDGET_EXPORTER_URL`` (default
``http://127.0.0.1:9820``) and ``BUDGET_EXPORTER_FAIL_OPEN`` (``true``/``false``).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

import requests

from budget_exporter.core.model import MAX_AMOUNT
from budget_exporter.core.money import given_cost
from budget_exporter.metering import Meter, currency_code, default_meter

log = logging.getLogger("budget_exporter.guard")

DEFAULT_URL = "http://127.0.0.1:9820"
MAX_COST = MAX_AMOUNT
"""The exporter refuses a cost this large; so does the guard, without asking."""
P = ParamSpec("P")
R = TypeVar("R")
Cost = float | int | Decimal | None


@dataclass(frozen=True)
class Decision:
    """The exporter's answer (or the local fallback when it could not be asked)."""

    allowed: bool
    budget: str
    reason: str
    state: str | None = None
    ratio_after: float | None = None
    stale: bool = False
    reachable: bool = True
    answer: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class BudgetCheckError(Exception):
    """The check itself is wrong (unknown budget, bad request, bad credentials): fix the caller."""


class BudgetExceeded(Exception):
    """The budget has no room for this operation (or could not be checked, fail-closed)."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(f"budget {decision.budget!r}: {decision.reason}")


class BudgetGuard:
    """A small client of ``POST /api/v1/check`` with a local cache."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 2.0,
        cache_seconds: float = 10.0,
        cache_size: int = 1024,
        fail_open: bool = True,
        auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        session: requests.Session | None = None,
        meter: Meter | None = None,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.url = (url or os.environ.get("BUDGET_EXPORTER_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.fail_open = fail_open
        self.auth = auth
        self.verify = verify
        self.session = session or requests.Session()
        self._meter = meter
        # (budget, cost) -> (expiry on the monotonic clock, decision); oldest use first.
        self._cache: OrderedDict[tuple[str, str], tuple[float, Decision]] = OrderedDict()
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
        self, budget: str, cost: Cost = None, *, currency: str | None = None
    ) -> Iterator[Spending]:
        """Check ``budget`` for ``cost`` (raise :class:`BudgetExceeded` when denied), run the
        block, and record its actual cost (see :class:`Spending`).

        ``currency`` is the budget's currency, for recording while the exporter cannot be
        asked (see :meth:`record_currency`)."""
        decision = self.check_budget(budget, cost)
        spend = Spending(self.meter, budget, self.record_currency(decision, currency))
        yield spend
        amount = _amount(cost)
        if spend.calls == 0 and amount:
            spend.record(amount)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def cache_len(self) -> int:
        """How many answers the cache holds (expired ones included until the next insert)."""
        with self._lock:
            return len(self._cache)

    def check(self, budget: str, cost: Cost = None) -> Decision:
        """The decision for ``budget`` and ``cost``; never raises :class:`BudgetExceeded`."""
        amount = _amount(cost)
        key = (budget, str(amount))
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
        decision = self._ask(budget, amount)
        self._remember(key, decision)
        return decision

    def _remember(self, key: tuple[str, str], decision: Decision) -> None:
        """Cache ``decision``: drop expired answers, then the least recently used over the cap."""
        now = time.monotonic()
        with self._lock:
            for old in [k for k, (expiry, _) in self._cache.items() if expiry <= now]:
                del self._cache[old]
            self._cache[key] = (now + self.cache_seconds, decision)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def check_budget(self, budget: str, cost: Cost = None) -> Decision:
        """Like :meth:`check`, but raise :class:`BudgetExceeded` when not allowed."""
        decision = self.check(budget, cost)
        if not decision.allowed:
            raise BudgetExceeded(decision)
        return decision

    def guarded(
        self,
        budget: str,
        cost: Cost | Callable[..., Cost] = None,
        *,
        record: Callable[[Any], Cost] | None = None,
        currency: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator: check ``budget`` before each call; ``cost`` may be a function of its
        arguments.  With ``record``, a function of the call's result giving its actual
        cost, that cost is recorded in the spend counter after each successful call, in
        the budget's currency (``currency``, see :meth:`record_currency`)."""

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                amount = cost(*args, **kwargs) if callable(cost) else cost
                decision = self.check_budget(budget, amount)
                recording = self.record_currency(decision, currency) if record else None
                result = func(*args, **kwargs)
                if record is not None:
                    actual = _amount(record(result))
                    if actual:
                        Spending(self.meter, budget, recording).record(actual)
                return result

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

    def _ask(self, budget: str, amount: Decimal | None) -> Decision:
        body: dict[str, Any] = {"budget": budget}
        if amount is not None:
            body["cost"] = float(amount)
        try:
            response = self.session.post(
                f"{self.url}/api/v1/check",
                json=body,
                timeout=self.timeout,
                auth=self.auth,
                verify=self.verify,
            )
        except requests.RequestException as exc:
            return self._unreachable(budget, f"cannot reach budget-exporter ({type(exc).__name__})")
        if response.status_code in (400, 404):
            raise BudgetCheckError(_error_text(response))
        if response.status_code in (401, 403):
            raise BudgetCheckError(
                f"budget-exporter refused the credentials (HTTP {response.status_code}): "
                "pass auth=(user, password) matching its web config"
            )
        if response.status_code != 200:
            return self._unreachable(
                budget, f"budget-exporter answered HTTP {response.status_code}"
            )
        try:
            answer = response.json()
            allowed = answer["allowed"]
        except (ValueError, KeyError, TypeError):
            return self._unreachable(budget, "budget-exporter's answer is not a check result")
        if not isinstance(allowed, bool):
            return self._unreachable(budget, "budget-exporter's answer is not a check result")
        return Decision(
            allowed=allowed,
            budget=budget,
            reason=str(answer.get("reason", "")),
            state=answer.get("state"),
            ratio_after=answer.get("ratio_after"),
            stale=bool(answer.get("stale", False)),
            answer=answer,
        )

    def _unreachable(self, budget: str, why: str) -> Decision:
        verdict = "allowed (fail-open)" if self.fail_open else "denied (fail-closed)"
        log.warning("budget check for %s: %s; %s", budget, why, verdict)
        return Decision(
            allowed=self.fail_open,
            budget=budget,
            reason=f"{why}; {verdict}",
            reachable=False,
        )


class Spending:
    """The block of :meth:`BudgetGuard.spending`: record what the operation really cost."""

    def __init__(self, meter: Meter, budget: str, currency: str | None) -> None:
        self.meter = meter
        self.budget = budget
        self.currency = currency
        """The budget's currency; None when neither the exporter nor the caller said it."""
        self.recorded = Decimal(0)
        """The total recorded so far."""
        self.calls = 0
        """How many times :meth:`record` or :meth:`record_tokens` was called."""

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
        amount = self.meter.record_cost(self.budget, cost, model=model, currency=self.currency)
        self.recorded += amount
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
        amount = self.meter.record_tokens(self.budget, model, *counts, **named)
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


def check_budget(budget: str, cost: Cost = None) -> Decision:
    """Ask the default guard; raise :class:`BudgetExceeded` when denied."""
    return default_guard().check_budget(budget, cost)


def spending(budget: str, cost: Cost = None, *, currency: str | None = None) -> Any:
    """:meth:`BudgetGuard.spending` of the default guard (a context manager)."""
    return default_guard().spending(budget, cost, currency=currency)


def guarded(
    budget: str,
    cost: Cost | Callable[..., Cost] = None,
    *,
    record: Callable[[Any], Cost] | None = None,
    currency: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator using the default guard; see :meth:`BudgetGuard.guarded`."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            guard = default_guard()
            return guard.guarded(budget, cost, record=record, currency=currency)(func)(
                *args, **kwargs
            )

        return wrapper

    return decorate
