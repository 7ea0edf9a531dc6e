"""Holds: amounts set aside for operations in flight, and recorded costs no meter poll
has covered yet, counted against every budget they touch (see docs/check-api.md#holds).

Data and arithmetic only; the stores live in :mod:`budget_exporter.runtime.holds`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.schema import Config

KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""What an idempotency key or a client name may be."""
HOLD_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class HoldSettings:
    """``global.check.holds``: how long holds last and how many there may be."""

    default_ttl: float = 60.0
    """Seconds a hold lasts when the request does not say."""
    max_ttl: float = 900.0
    """The longest a request may ask for."""
    max_per_client: int = 1000
    """Holds in flight one client (its ``client`` name) may have."""
    max_total: int = 20_000
    """Holds in flight in all."""
    visible_after: float = 120.0
    """Seconds after a record before a meter poll can be trusted to include it
    (the application's scrape interval plus Prometheus' lag)."""
    record_ttl: float = 3600.0
    """The longest a recorded cost counts (when no meter poll covers it first)."""


class HoldRefused(Exception):
    """A hold request the exporter will not take: nothing was changed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Entry:
    """One hold, or, once its operation recorded its cost, one recorded cost."""

    id: str
    client: str
    key: str | None
    budgets: tuple[str, ...]
    amount: Decimal
    currency: str
    created: float
    expires: float
    recorded_at: float | None = None
    """When the operation recorded its actual cost; None while the hold is in flight."""
    sources: tuple[str, ...] = ()
    """The metered sources whose polls will show the recorded cost (none: only expiry ends it)."""

    @property
    def in_flight(self) -> bool:
        return self.recorded_at is None

    def counts(self, now: float, covered_until: Mapping[str, float]) -> bool:
        """Whether the entry still counts against its budgets at ``now``."""
        if self.expires <= now:
            return False
        return self.in_flight or not is_covered(self, covered_until)


def is_covered(entry: Entry, covered_until: Mapping[str, float]) -> bool:
    """A recorded cost is covered once every one of its metered sources has a
    successful poll that started ``visible_after`` or more after the record.

    ``covered_until`` maps a metered source to its last successful poll's start
    minus ``visible_after``: costs recorded at or before it are in its figures.
    """
    if entry.recorded_at is None or not entry.sources:
        return False
    return all(covered_until.get(s, -math.inf) >= entry.recorded_at for s in entry.sources)


@dataclass(frozen=True)
class Room:
    """What the current figures leave a budget before its stop threshold."""

    budget: str
    headroom: Decimal | None
    """Stop amount minus spend; None when there are no figures to compare with."""
    deny: bool = False
    """Denied whatever the holds (stale data under ``fail_closed``)."""

    def fits(self, held: Decimal, cost: Decimal) -> bool:
        """Whether spend plus ``held`` plus ``cost`` stays below the stop threshold."""
        if self.deny:
            return False
        return self.headroom is None or held + cost < self.headroom


@dataclass(frozen=True)
class HoldRequest:
    """An allowed check's wish to hold its cost."""

    client: str
    ttl: float
    key: str | None = None
    sources: tuple[str, ...] = ()
    """The metered sources whose polls will cover the cost once recorded."""


@dataclass(frozen=True)
class Outcome:
    """What a store decided for one check, atomically with the hold it made."""

    allowed: bool
    held: dict[str, Decimal] = field(default_factory=dict)
    """Per budget, the amount held before this operation (what the decision counted)."""
    hold: Entry | None = None
    """The hold made (or found again by its idempotency key)."""
    replayed: bool = False
    """The idempotency key named a hold made earlier: nothing new was held."""
    store_error: str | None = None
    """Why the store could not be asked (its failure policy decided), if it could not."""


class HoldStore(Protocol):
    """Where holds live: one exporter's memory, or a Redis several exporters share."""

    kind: str

    def check(
        self,
        rooms: tuple[Room, ...],
        cost: Decimal,
        currency: str,
        request: HoldRequest | None,
        now: float,
        covered_until: Mapping[str, float],
    ) -> Outcome:
        """Decide against every room with the amounts held, and hold ``cost`` when all fit."""
        ...

    def release(self, hold_id: str, actual: Decimal | None, now: float) -> Entry | None:
        """End hold ``hold_id``: record ``actual`` (None or 0: nothing spent). The entry as it
        is now (None when it was dropped); :class:`HoldRefused` (404) for an unknown hold."""
        ...

    def held(self, now: float, covered_until: Mapping[str, float]) -> dict[str, Decimal]:
        """Every budget's held amount (in flight plus recorded, not yet covered)."""
        ...

    def up(self) -> bool:
        """Whether the store answered its last request."""
        ...

    def configure(self, settings: HoldSettings) -> None: ...

    def close(self) -> None: ...


def check_ttl(value: object, settings: HoldSettings) -> float:
    """``hold_seconds`` of a request: a number above 0 and at most ``max_ttl``."""
    if value is None:
        return settings.default_ttl
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HoldRefused(400, "hold_seconds must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise HoldRefused(400, "hold_seconds must be above 0")
    if value > settings.max_ttl:
        raise HoldRefused(
            400, f"hold_seconds must be at most {settings.max_ttl:g} (global.check.holds.max_ttl)"
        )
    return float(value)


def check_name(value: object, what: str) -> str:
    """An idempotency key or client name: 1 to 128 of ``A-Z a-z 0-9 . _ : -``."""
    if not isinstance(value, str) or not KEY_PATTERN.match(value):
        raise HoldRefused(
            400, f"{what} must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'"
        )
    return value


def covered_until(
    config: Config, states: Iterable[SourceState], visible_after: float
) -> dict[str, float]:
    """Per metered source: costs recorded at or before this time are in its figures
    (its last successful poll started ``visible_after`` seconds after them)."""
    found = {}
    for state in states:
        source = config.source_named(state.name)
        if source is None or state.last_success is None:
            continue
        if config.provider_class(source).metered:  # every window's figures, a failed one's too
            found[state.name] = (state.oldest_success or state.last_success) - visible_after
    return found
