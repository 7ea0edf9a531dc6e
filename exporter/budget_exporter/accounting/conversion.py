"""Currency conversion with provenance: the rates the rates sources last reported, which
one converts a currency into another, and whether it is still fresh (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext

from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.schema import Config
from budget_exporter.core.model import Rate


@dataclass(frozen=True)
class Quote:
    """How one ``currency`` converts into another: ``value`` of the other per unit."""

    value: Decimal
    source: str
    """The rates source that published it."""
    day: date | None
    """The day it was published for (None: a fixed rate)."""

    @property
    def date_label(self) -> str:
        return "" if self.day is None else self.day.isoformat()

    how: str
    """``direct``, ``inverse`` (1 / the published rate) or ``cross`` (through the
    published rates of both currencies from a third)."""


@dataclass(frozen=True)
class Conversion:
    """One source's spend in another currency, counted in a budget's currency."""

    source: str
    currency: str
    native: Decimal
    quote: Quote
    amount: Decimal
    """``native`` times the rate, in the budget's currency."""


@dataclass(frozen=True)
class LeftOut:
    """One source's spend in another currency that a budget does not count."""

    source: str
    currency: str
    native: Decimal
    reason: str
    """``no_rate`` (no rates source publishes one) or ``stale_rate`` (the newest is
    older than its source's ``max_age``)."""
    stale: Quote | None = None
    """The newest stale rate there is, for the reason's sake."""


_ORDER = {"direct": 0, "inverse": 1, "cross": 2}


@dataclass(frozen=True)
class _Published:
    rate: Rate
    source: str
    max_age: timedelta


class RateBook:
    """The rates of every rates source's last good poll, looked up by currency pair."""

    def __init__(self, published: list[_Published], now: datetime) -> None:
        self.published = published
        self.today = now.date()

    @classmethod
    def of(cls, config: Config, states: Mapping[str, SourceState], now: datetime) -> RateBook:
        published = []
        for source in config.rate_sources:
            state = states.get(source.name)
            if state is None or state.result is None:
                continue
            max_age = getattr(source, "max_age", timedelta(0))
            published.extend(_Published(r, source.name, max_age) for r in state.result.rates)
        return cls(published, now)

    def __bool__(self) -> bool:
        return bool(self.published)

    def quote(self, currency: str, into: str) -> Quote | LeftOut:
        """The rate converting ``currency`` into ``into``: the freshest direct rate, else an
        inverse one, else a cross rate from one source; a :class:`LeftOut` without one."""
        fresh: list[tuple[Quote, bool]] = []
        for quote, max_age in self._candidates(currency, into):
            stale = quote.day is not None and self.today - quote.day > max_age
            fresh.append((quote, stale))
        usable = [q for q, stale in fresh if not stale]
        if usable:
            return min(usable, key=_preference)
        if fresh:
            newest = min((q for q, _ in fresh), key=_preference)
            return LeftOut("", currency, Decimal(0), "stale_rate", newest)
        return LeftOut("", currency, Decimal(0), "no_rate")

    def _candidates(self, currency: str, into: str) -> list[tuple[Quote, timedelta]]:
        found: list[tuple[Quote, timedelta]] = []
        by_source: dict[str, dict[str, list[_Published]]] = {}
        for p in self.published:
            r = p.rate
            if (r.base, r.quote) == (currency, into):
                found.append((Quote(r.value, p.source, _date(r.day), "direct"), p.max_age))
            elif (r.base, r.quote) == (into, currency):
                found.append((Quote(_divide(Decimal(1), r.value), p.source, _date(r.day), "inverse"),
                              p.max_age))  # fmt: skip
            by_source.setdefault(p.source, {}).setdefault(r.base, []).append(p)
        for source, bases in by_source.items():
            for base, items in bases.items():
                quotes = {p.rate.quote: p for p in items}
                if base in (currency, into) or currency not in quotes or into not in quotes:
                    continue
                a, b = quotes[currency], quotes[into]
                if a.rate.day != b.rate.day:
                    continue  # one day's rates only
                value = _divide(b.rate.value, a.rate.value)
                found.append((Quote(value, source, _date(a.rate.day), "cross"), a.max_age))
        return found


def _date(moment: datetime | None) -> date | None:
    return None if moment is None else moment.date()


def _preference(quote: Quote) -> tuple[int, int]:
    """Newest first (a fixed rate counts as newest), then direct before inverse and cross."""
    day = date.max if quote.day is None else quote.day
    return (-day.toordinal(), _ORDER[quote.how])


def _divide(a: Decimal, b: Decimal) -> Decimal:
    with localcontext() as context:
        context.prec = 28
        return a / b


def convert(native: Decimal, quote: Quote) -> Decimal:
    """``native`` in the other currency (exact product; 28 digits for a divided rate)."""
    with localcontext() as context:
        context.prec = 34
        return native * quote.value
