"""Count what an application spends in a ``prometheus_client`` counter, for a ``prometheus``
source to read back (see docs/realtime.md).

    record_cost("openai", 0.042, model="gpt-4o")
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from budget_exporter.core.money import given_cost
from budget_exporter.pricing import PriceTable, default_table

log = logging.getLogger(__name__)

SPEND_METRIC = "budget_app_spend_amount"
"""The counter's name without its ``_total`` suffix."""
SPEND_HELP = (
    "Money spent by this process on metered operations (API calls priced by the caller "
    "or by the budget-exporter price table), by budget, model and currency."
)
LABELS = ("budget", "model", "currency")
SOURCE_SPEND_METRIC = "budget_app_source_spend_amount"
"""The per-source counter (a spend described by its source and dimensions), without ``_total``."""
SOURCE_SPEND_HELP = (
    "Money spent by this process on metered operations, by the source the spend shows up "
    "in, its FOCUS dimensions and currency."
)
SOURCE_DIMENSIONS = ("model", "sub_account_id", "service_name", "region_id", "charge_category")
"""The dimensions a described spend may carry (labels of the per-source counter)."""
SOURCE_LABELS = ("source", *SOURCE_DIMENSIONS, "currency")
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
        self._registry = registry
        self._namespace = namespace
        self._source_counter: Counter | None = None
        self._budget_series = _Bounds(max_budgets, max_series)
        self._source_series = _Bounds(max_budgets, max_series)
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

    def declare(
        self, budget: str, *, models: tuple[str, ...] = ("",), currency: str = "USD"
    ) -> None:
        """Create the budget's series for ``models`` (and ``currency``) at zero, if new.

        ``increase()`` counts only what a series gains between two scrapes: a series whose
        first scrape already carries spend loses that spend.  Declare at start-up each
        budget and model the process will record, so Prometheus scrapes them at zero first
        (docs/realtime.md, when the meter is wrong).  Bounded as :meth:`record_cost`."""
        currency = currency_code(currency)
        if not budget:
            raise ValueError("budget must name the budget the spend counts against")
        for model in models:
            self.counter.labels(*self._labels(budget, model, currency))

    def record_spend(
        self,
        source: str,
        cost: Amount,
        *,
        dimensions: Mapping[str, str] | None = None,
        currency: str = "USD",
    ) -> Decimal:
        """Add ``cost`` to the per-source counter: a spend described as for the check API,
        by the source it shows up in and its dimensions (see :data:`SOURCE_DIMENSIONS`;
        another dimension raises ValueError).  Returns the cost as a Decimal.

        Bounded as the per-budget counter: at most ``max_budgets`` sources, and beyond
        ``max_series`` combinations a new one is counted with every dimension ``other``."""
        amount = given_cost(cost)
        values = _source_values(source, dimensions, currency)
        if amount:
            self._spend_counter().labels(*self._source_labels(values)).inc(float(amount))
        return amount

    def declare_spend(
        self,
        source: str,
        *,
        dimensions: Mapping[str, str] | Iterable[Mapping[str, str]] = ({},),
        currency: str = "USD",
    ) -> None:
        """Create the per-source counter's series at zero, if new, for ``dimensions`` (one
        set, or several) and ``currency``: :meth:`declare` for the spend :meth:`record_spend`
        records.  Declare at start-up each source and dimensions the process will record, so
        Prometheus scrapes them at zero before their first spend.  Checked (every set before
        any series is made) and bounded as :meth:`record_spend`."""
        sets = [dimensions] if isinstance(dimensions, Mapping) else list(dimensions)
        found = [_source_values(source, dims, currency) for dims in sets]
        counter = self._spend_counter()
        for values in found:
            counter.labels(*self._source_labels(values))

    def _spend_counter(self) -> Counter:
        with self._lock:
            if self._source_counter is None:
                self._source_counter = Counter(
                    SOURCE_SPEND_METRIC,
                    SOURCE_SPEND_HELP,
                    SOURCE_LABELS,
                    namespace=self._namespace,
                    registry=self._registry,
                )
            return self._source_counter

    def _source_labels(self, values: tuple[str, ...]) -> tuple[str, ...]:
        source = values[0]
        with self._lock:
            if self._source_series.admit(values):
                return values
            if self._source_series.too_many(source):
                raise TooManyBudgets(
                    f"spend counter has {self.max_budgets} sources already: {source!r} is "
                    "not recorded (sources must be the exporter's sources)"
                )
        log.warning(
            "per-source spend counter has %d label combinations already: counted as %r",
            self.max_series,
            OTHER,
        )
        return (source, *([OTHER] * len(SOURCE_DIMENSIONS)), values[-1])

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
            if self._budget_series.admit(key):
                return key
            if self._budget_series.too_many(budget):
                raise TooManyBudgets(
                    f"spend counter has {self.max_budgets} budget names already: "
                    f"{budget!r} is not recorded (budget names must be the exporter's "
                    "budgets; raise max_budgets if there really are more)"
                )
        log.warning(
            "spend counter has %d label combinations already: model %r is counted as %r",
            self.max_series,
            model,
            OTHER,
        )
        return (budget, OTHER, currency)


class _Bounds:
    """One counter's label sets, bounded: at most ``max_names`` names (a label set's first
    value: a budget or a source) and ``max_series`` label sets.  Not thread-safe: the
    meter holds its lock around it."""

    def __init__(self, max_names: int, max_series: int) -> None:
        self.max_names = max_names
        self.max_series = max_series
        self.names: set[str] = set()
        self.series: set[tuple[str, ...]] = set()

    def admit(self, values: tuple[str, ...]) -> bool:
        """Whether ``values`` is, or now becomes, one of the label sets; False when its name
        is one too many (see :meth:`too_many`) or the label sets are at their bound."""
        if values in self.series:
            return True
        name = values[0]
        if name not in self.names:
            if len(self.names) >= self.max_names:
                return False
            self.names.add(name)
        if len(self.series) < self.max_series:
            self.series.add(values)
            return True
        return False

    def too_many(self, name: str) -> bool:
        """Whether ``name`` was refused for being a name beyond ``max_names``."""
        return name not in self.names


def _source_values(
    source: str, dimensions: Mapping[str, str] | None, currency: str
) -> tuple[str, ...]:
    """The per-source counter's label values for a described spend; ValueError (one line)
    for an empty source, an unknown dimension or a currency that is not a code."""
    currency = currency_code(currency)
    if not source:
        raise ValueError("source must name the source the spend shows up in")
    if dimensions is not None and not isinstance(dimensions, Mapping):
        raise ValueError("dimensions must map dimension names to values")
    dims = dict(dimensions or {})
    unknown = sorted(set(dims) - set(SOURCE_DIMENSIONS))
    if unknown:
        raise ValueError(
            f"dimension {unknown[0]!r} cannot be recorded (known: {', '.join(SOURCE_DIMENSIONS)})"
        )
    return (source, *(str(dims.get(d, "")) for d in SOURCE_DIMENSIONS), currency)


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


def declare(budget: str, *, models: tuple[str, ...] = ("",), currency: str = "USD") -> None:
    """Create series at zero with the default meter; see :meth:`Meter.declare`."""
    default_meter().declare(budget, models=models, currency=currency)


def record_tokens(budget: str, model: str, *counts: int, **named: int) -> Decimal:
    """Price and record one call's tokens with the default meter; see :meth:`Meter.record_tokens`."""
    return default_meter().record_tokens(budget, model, *counts, **named)


def record_spend(
    source: str, cost: Amount, *, dimensions: Mapping[str, str] | None = None, currency: str = "USD"
) -> Decimal:
    """Record a described spend with the default meter; see :meth:`Meter.record_spend`."""
    return default_meter().record_spend(source, cost, dimensions=dimensions, currency=currency)


def declare_spend(
    source: str,
    *,
    dimensions: Mapping[str, str] | Iterable[Mapping[str, str]] = ({},),
    currency: str = "USD",
) -> None:
    """Create per-source series at zero with the default meter; see :meth:`Meter.declare_spend`."""
    default_meter().declare_spend(source, dimensions=dimensions, currency=currency)
