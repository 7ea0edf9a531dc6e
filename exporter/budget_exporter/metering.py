"""Count what an application spends, in Prometheus, for real-time budgets.

For services that run neither LiteLLM nor OpenTelemetry GenAI instrumentation:
record the cost of each operation into a ``prometheus_client`` counter that the
service already exposes on its ``/metrics``; a ``prometheus`` source of the
exporter then reads it back through PromQL (see docs/realtime.md).

    from budget_exporter.metering import record_cost, record_tokens

    record_cost("openai", 0.042, model="gpt-4o")                  # a known cost
    record_tokens("openai", "gpt-4o", input_tokens=1200, output_tokens=300)

The counter is :data:`SPEND_METRIC` (``budget_app_spend_amount_total`` in the
exposition) with the labels ``budget``, ``model`` and ``currency``.  Label values
are bounded per process:

* at most ``max_budgets`` distinct budget names: recording against one more
  raises :class:`TooManyBudgets` (budget names are the exporter's budgets, a
  short fixed list; one name per user or request is a bug to fix, and its spend
  must not be moved into another budget's series);
* at most ``max_series`` distinct (budget, model, currency) combinations; a
  further combination is counted under ``model="other"`` with its budget and
  currency kept, so every budget's spend stays whole, with a warning.

So the counter has at most ``max_series`` series plus one ``model="other"``
series per budget and currency.

Works in ``prometheus_client`` multiprocess mode (gunicorn and the like): set
``PROMETHEUS_MULTIPROC_DIR`` before the first counter is created, as
``prometheus_client`` requires, and expose the directory with its
``MultiProcessCollector``; each worker's increments are summed there.
"""

from __future__ import annotations

import logging
import re
import threading
from decimal import Decimal

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from budget_exporter.core.money import given_cost
from budget_exporter.pricing import PriceTable, default_table

log = logging.getLogger("budget_exporter.metering")

SPEND_METRIC = "budget_app_spend_amount"
"""The counter's name without its ``_total`` suffix."""
SPEND_HELP = (
    "Money spent by this process on metered operations (API calls priced by the caller "
    "or by the budget-exporter price table), by budget, model and currency."
)
LABELS = ("budget", "model", "currency")
OTHER = "other"
DEFAULT_MAX_SERIES = 200
DEFAULT_MAX_BUDGETS = 50
_CURRENCY = re.compile(r"^[A-Z]{3}$")

Amount = float | int | Decimal


class TooManyBudgets(ValueError):
    """A budget name beyond ``max_budgets``: its spend is not recorded."""


def currency_code(currency: str) -> str:
    """``currency`` as an upper-case three-letter code; ValueError if it is not one."""
    code = currency.strip().upper()
    if not _CURRENCY.match(code):
        raise ValueError("currency must be a three-letter code such as USD")
    return code


class Meter:
    """One spend counter, registered in ``registry`` (the default registry unless given)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        table: PriceTable | None = None,
        max_series: int = DEFAULT_MAX_SERIES,
        max_budgets: int = DEFAULT_MAX_BUDGETS,
        namespace: str = "",
    ) -> None:
        if max_series < 1 or max_budgets < 1:
            raise ValueError("max_series and max_budgets must be at least 1")
        self.table = table
        self.max_series = max_series
        self.max_budgets = max_budgets
        self.counter = Counter(
            SPEND_METRIC, SPEND_HELP, LABELS, namespace=namespace, registry=registry
        )
        self._seen: set[tuple[str, str, str]] = set()
        self._budgets: set[str] = set()
        self._lock = threading.Lock()

    def price_table(self) -> PriceTable:
        return self.table or default_table()

    def record_cost(
        self, budget: str, cost: Amount, *, model: str = "", currency: str = "USD"
    ) -> Decimal:
        """Add ``cost`` (in ``currency``) to the counter; returns it as a Decimal."""
        amount = given_cost(cost)  # a counter only goes up
        currency = currency_code(currency)
        if not budget:
            raise ValueError("budget must name the budget the spend counts against")
        if amount:
            self.counter.labels(*self._labels(budget, model, currency)).inc(float(amount))
        return amount

    def record_tokens(self, budget: str, model: str, *counts: int, **named: int) -> Decimal:
        """Price the tokens of one call with the price table and record the cost.

        Token counts as for :class:`~budget_exporter.pricing.TokenCounts`
        (``input_tokens`` excludes cached and cache-write tokens).  A model the
        table does not price raises :class:`~budget_exporter.pricing.UnknownModelError`.
        """
        table = self.price_table()
        cost = table.estimate(model, *counts, **named)
        return self.record_cost(budget, cost, model=model, currency=table.currency)

    def _labels(self, budget: str, model: str, currency: str) -> tuple[str, str, str]:
        key = (budget, model, currency)
        with self._lock:
            if key in self._seen:
                return key
            if budget not in self._budgets:
                if len(self._budgets) >= self.max_budgets:
                    raise TooManyBudgets(
                        f"spend counter has {self.max_budgets} budget names already: "
                        f"{budget!r} is not recorded (budget names must be the exporter's "
                        "budgets; raise max_budgets if there really are more)"
                    )
                self._budgets.add(budget)
            if len(self._seen) < self.max_series:
                self._seen.add(key)
                return key
        log.warning(
            "spend counter has %d label combinations already: model %r is counted as %r",
            self.max_series,
            model,
            OTHER,
        )
        return (budget, OTHER, currency)


_default: Meter | None = None
_default_lock = threading.Lock()


def default_meter() -> Meter:
    """The process-wide meter in ``prometheus_client``'s default registry."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Meter()
        return _default


def record_cost(budget: str, cost: Amount, *, model: str = "", currency: str = "USD") -> Decimal:
    """Record ``cost`` with the default meter; see :meth:`Meter.record_cost`."""
    return default_meter().record_cost(budget, cost, model=model, currency=currency)


def record_tokens(budget: str, model: str, *counts: int, **named: int) -> Decimal:
    """Price and record one call's tokens with the default meter; see :meth:`Meter.record_tokens`."""
    return default_meter().record_tokens(budget, model, *counts, **named)
