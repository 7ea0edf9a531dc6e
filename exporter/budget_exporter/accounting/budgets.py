"""Turn source results into budget figures (pure functions, no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, localcontext

from budget_exporter.accounting.conversion import Conversion, LeftOut, RateBook, convert
from budget_exporter.accounting.lineindex import LineIndex, match_pattern
from budget_exporter.accounting.nowcast import SpendPart, has_data, joined_part, plain_part
from budget_exporter.accounting.sourcestate import ConfiguredSource, SourceState
from budget_exporter.config.schema import BudgetConfig, Config
from budget_exporter.config.tuning import AlertTuning
from budget_exporter.core.model import PollResult, ProviderBudget, SpendLine, Window
from budget_exporter.core.periods import elapsed_fraction, forecast_floor_fraction, window_at

_WIDE = Context(prec=28, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _ratio(amount: Decimal, limit: Decimal) -> float:
    """``amount / limit`` as a float; never raises (an absurd ratio becomes inf)."""
    with localcontext(_WIDE):
        return float(amount / limit)


@dataclass(frozen=True)
class BudgetView:
    """One budget's figures for its current window."""

    name: str
    currency: str
    period: str
    labels: tuple[tuple[str, str], ...]
    window: Window
    limit: Decimal
    spend: Decimal
    forecast: Decimal
    warning_ratio: float
    stop_ratio: float
    tuning: AlertTuning = field(default_factory=AlertTuning)
    """Settings of the spend-rate alerts, exported as gauges."""
    parts: tuple[SpendPart, ...] = ()
    """Where ``spend`` comes from, per source (billed and metered, see nowcast)."""
    conversions: tuple[Conversion, ...] = ()
    """The spend in other currencies counted, converted (part of ``parts``' amounts)."""
    left_out: tuple[LeftOut, ...] = ()
    """The spend in other currencies not counted: no rate, or only a stale one."""

    @property
    def billed(self) -> Decimal:
        return sum((p.billed for p in self.parts), Decimal(0))

    @property
    def metered(self) -> Decimal:
        return sum((p.metered for p in self.parts), Decimal(0))

    @property
    def usage_ratio(self) -> float:
        return _ratio(self.spend, self.limit)

    @property
    def forecast_ratio(self) -> float:
        return _ratio(self.forecast, self.limit)

    @property
    def state(self) -> str:
        return budget_state(self.usage_ratio, self.warning_ratio, self.stop_ratio)


def budget_state(ratio: float, warning_ratio: float, stop_ratio: float) -> str:
    """``ok``, ``warning``, ``stop`` or ``exceeded`` for spend at ``ratio`` of the limit."""
    if ratio >= 1:
        return "exceeded"
    if ratio >= stop_ratio:
        return "stop"
    if ratio >= warning_ratio:
        return "warning"
    return "ok"


def line_matches(line: SpendLine, match: Mapping[str, str]) -> bool:
    """Exact values, or ``/regex/`` (fully anchored); a missing dimension is ``""``."""
    if not match:
        return True
    dims = line.dims
    for key, wanted in match.items():
        value = dims.get(key, "")
        pattern = match_pattern(wanted)
        if pattern is None:
            if value != wanted:
                return False
        elif not pattern.fullmatch(value):
            return False
    return True


def compute_budgets(
    config: Config,
    states: Mapping[str, SourceState],
    now: datetime,
    indexes: IndexCache | None = None,
) -> list[BudgetView]:
    """Every budget whose sources all have data for its current window.

    Lines in another currency than the budget's are converted at the rates of the rates
    sources (:mod:`budget_exporter.accounting.conversion`), or left out without a fresh
    rate (see :func:`currency_mismatches` for counting them without any rates source).
    ``indexes``, kept by the
    caller between calls, lets a source whose result has not changed since
    keep its :class:`LineIndex` (and the sums it remembers); it must not be
    shared by calls running at the same time.
    """
    views = []
    cache = LineIndexes(indexes)
    book = RateBook.of(config, states, now)
    for budget in config.budgets:
        view = _compute(config, budget, states, now, cache, book)
        if view is not None:
            views.append(view)
    if indexes is not None:  # keep what this round used, for the next one
        indexes.clear()
        indexes.update(cache.used)
    return views


def _compute(
    config: Config,
    budget: BudgetConfig,
    states: Mapping[str, SourceState],
    now: datetime,
    cache: LineIndexes,
    book: RateBook,
) -> BudgetView | None:
    window = window_at(budget.period, now)
    elapsed = max(elapsed_fraction(window, now), forecast_floor_fraction(window))
    external = provider_budget(budget, states, window) if budget.limit_from else None
    if budget.limit_from is not None and external is None:
        return None
    spend = forecast = Decimal(0)
    parts: list[SpendPart] = []
    conversions: list[Conversion] = []
    left_out: list[LeftOut] = []
    sources = config.budget_sources(budget)
    meters = _joined_meters(sources)
    joined = {name for names in meters.values() for name in names}
    for source in sources:
        if source.name in joined:
            continue  # counted with the billed source it continues
        state = states.get(source.name)
        if state is None or not has_data(state, window):
            return None  # no data for this window yet: show nothing rather than a fake zero
        assert state.result is not None
        if source.name in meters:
            part = joined_part(
                state,
                [(name, states.get(name)) for name in meters[source.name]],
                window,
                lambda lines: _sum(lines, budget),
            )
            own = part.amount
        else:
            totals = _totals(state, budget, cache)
            own = totals.get(budget.currency, Decimal(0))
            converted = _convert(source.name, totals, budget.currency, book)
            conversions.extend(c for c in converted if isinstance(c, Conversion))
            left_out.extend(c for c in converted if isinstance(c, LeftOut))
            extra = sum((c.amount for c in converted if isinstance(c, Conversion)), Decimal(0))
            part = plain_part(state, own + extra)
        parts.append(part)
        spend += part.amount
        forecast += _source_forecast(state, budget, own, elapsed)
        if part.amount != own:  # converted spend: projected at the same rate
            rest = part.amount - own
            forecast += rest / Decimal(repr(elapsed)) if state.accrues else rest
    warning, stop = config.warning_ratio(budget), config.stop_ratio(budget)
    if external is not None:
        if budget.spend_from_provider:
            if external.actual is None:
                return None
            spend = external.actual
            forecast = external.forecast or spend / Decimal(repr(elapsed))
            assert budget.limit_from is not None
            parts = [SpendPart(budget.limit_from.source, spend)]  # the provider budget's own
        if budget.limit_from is not None and budget.limit_from.thresholds:
            warning, stop = _provider_thresholds(budget, external, warning, stop)
    limit = budget.limit if budget.limit is not None else external.limit  # type: ignore[union-attr]
    return BudgetView(
        name=budget.name,
        currency=budget.currency,
        period=str(budget.period),
        labels=tuple(sorted(budget.labels.items())),
        window=window,
        limit=limit,
        spend=spend,
        forecast=max(forecast, spend),
        warning_ratio=warning,
        stop_ratio=stop,
        tuning=config.alert_tuning(budget),
        parts=tuple(parts),
        conversions=tuple(conversions),
        left_out=tuple(left_out),
    )


def _convert(
    source: str, totals: Mapping[str, Decimal], currency: str, book: RateBook
) -> list[Conversion | LeftOut]:
    """The source's totals in other currencies than ``currency``: each converted at the
    book's rate, or left out (with why) when there is no fresh one."""
    found: list[Conversion | LeftOut] = []
    for other, native in sorted(totals.items()):
        if other == currency:
            continue
        quote = book.quote(other, currency)
        if isinstance(quote, LeftOut):
            found.append(LeftOut(source, other, native, quote.reason, quote.stale))
        else:
            found.append(Conversion(source, other, native, quote, convert(native, quote)))
    return found


def _joined_meters(sources: Sequence[ConfiguredSource]) -> dict[str, list[str]]:
    """Billed source -> the metered sources of the same budget joined to it."""
    names = {s.name for s in sources}
    found: dict[str, list[str]] = {}
    for source in sources:
        billed = source.billed_source()
        if billed is not None and billed in names:
            found.setdefault(billed, []).append(source.name)
    return found


def _sum(lines: Iterable[SpendLine], budget: BudgetConfig) -> Decimal:
    """The budget's share of ``lines``: its period, its currency, its ``match``."""
    return sum(
        (
            line.amount
            for line in lines
            if line.period == budget.period
            and line.currency == budget.currency
            and line_matches(line, budget.match)
        ),
        Decimal(0),
    )


def provider_budget(
    budget: BudgetConfig, states: Mapping[str, SourceState], window: Window
) -> ProviderBudget | None:
    """The provider budget named by ``limit_from``, if polled for this window and usable."""
    assert budget.limit_from is not None
    state = states.get(budget.limit_from.source)
    if state is None or state.result is None or state.window(budget.period) != window:
        return None
    for found in state.result.budgets:
        if found.key == budget.limit_from.budget:
            usable = (
                found.period == budget.period
                and found.currency == budget.currency
                and found.limit > 0
            )
            return found if usable else None
    return None


def _provider_thresholds(
    budget: BudgetConfig, external: ProviderBudget, warning: float, stop: float
) -> tuple[float, float]:
    """Configured ratios win; the provider's fill the gaps when they stay ordered."""
    new_warning = budget.warning_ratio or external.warning_ratio or warning
    new_stop = budget.stop_ratio or external.stop_ratio or stop
    if new_warning < new_stop:
        return new_warning, new_stop
    return warning, stop


_Totals = dict[str, Decimal]
IndexCache = dict[tuple[str, str], tuple[PollResult, LineIndex]]
"""Line indexes by (source, period), each with the poll result it was built from."""


class LineIndexes:
    """The line indexes of one computation, reusing those of ``previous`` whose
    poll result is still the source's (see :func:`compute_budgets`)."""

    def __init__(self, previous: IndexCache | None) -> None:
        self.previous = previous or {}
        self.used: IndexCache = {}

    def get(self, state: SourceState, period: str) -> LineIndex:
        assert state.result is not None
        key = (state.name, period)
        found = self.used.get(key) or self.previous.get(key)
        if found is None or found[0] is not state.result:
            found = (state.result, LineIndex.of(state.result.lines, period))
        self.used[key] = found
        return found[1]


def _totals(state: SourceState, budget: BudgetConfig, cache: LineIndexes) -> _Totals:
    """Sum of the source's matching lines per currency, for the budget's period.

    Looked up in one :class:`LineIndex` per source result and period, so many
    budgets over large sources stay cheap to compute.
    """
    return cache.get(state, budget.period).summary(budget.match)[0]


def _source_forecast(
    state: SourceState, budget: BudgetConfig, spend: Decimal, elapsed: float
) -> Decimal:
    """The provider's own forecast where it fits the budget, else a linear projection."""
    assert state.result is not None
    if not state.accrues:
        return spend  # a fixed amount: it will not grow by the end of the period
    if not budget.match:
        for forecast in state.result.forecasts:
            if forecast.period == budget.period and forecast.currency == budget.currency:
                return max(forecast.amount, spend)
    return spend / Decimal(repr(elapsed))


def limit_from_problems(config: Config, source: str, result: PollResult) -> list[str]:
    """Why budgets taking their limit from ``source`` cannot use what it returned."""
    problems = []
    for budget in config.limit_budgets(source):
        ref = budget.limit_from
        assert ref is not None
        found = next((b for b in result.budgets if b.key == ref.budget), None)
        if found is None:
            keys = ", ".join(sorted(b.key for b in result.budgets)) or "none"
            problems.append(
                f"budget {budget.name}: source {source} has no budget {ref.budget!r} (found: {keys})"
            )
        elif found.period != budget.period:
            problems.append(
                f"budget {budget.name}: provider budget {ref.budget!r} is {found.period}, "
                f"not {budget.period}"
            )
        elif found.currency != budget.currency:
            problems.append(
                f"budget {budget.name}: provider budget {ref.budget!r} is in {found.currency}, "
                f"not {budget.currency}"
            )
        elif found.limit <= 0:
            problems.append(f"budget {budget.name}: provider budget {ref.budget!r} has no limit")
    return problems


PeriodIndexes = dict[str, LineIndex]
"""One poll result's line indexes by period, shared by the checks of that poll."""


def _period_index(result: PollResult, period: str, indexes: PeriodIndexes) -> LineIndex:
    index = indexes.get(period)
    if index is None:
        index = indexes[period] = LineIndex.of(result.lines, period)
    return index


def match_problems(
    config: Config, source: str, result: PollResult, indexes: PeriodIndexes | None = None
) -> list[str]:
    """Budgets whose ``match`` names a dimension no line of ``source`` has.

    A typo there (``servce_name``) would otherwise show a quiet zero forever.
    ``indexes`` lets the checks of one poll share the line indexes they build.
    """
    problems = []
    indexes = {} if indexes is None else indexes
    for budget in config.source_budgets(source):
        if not budget.match:
            continue
        index = _period_index(result, budget.period, indexes)
        if not len(index):
            continue
        present = index.dimensions
        for key in sorted(set(budget.match) - present):
            known = ", ".join(sorted(present)) or "none"
            problems.append(
                f"budget {budget.name}: match on {key!r}, but no line from source {source} "
                f"has that dimension (it has: {known})"
            )
    return problems


def currency_mismatches(
    config: Config, source: str, result: PollResult, indexes: PeriodIndexes | None = None
) -> Counter[tuple[str, str, str]]:
    """``(budget, source, currency)`` counts of the source's lines that a budget
    would sum but for their currency, when no rates source is configured (with one,
    each snapshot converts them or says why not: :attr:`BudgetView.left_out`)."""
    found: Counter[tuple[str, str, str]] = Counter()
    if config.rate_sources:
        return found
    indexes = {} if indexes is None else indexes
    for budget in config.source_budgets(source):
        index = _period_index(result, budget.period, indexes)
        for currency, count in index.summary(budget.match)[1].items():
            if currency != budget.currency:
                found[(budget.name, source, currency)] += count
    return found
