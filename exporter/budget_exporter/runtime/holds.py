"""The in-memory hold store (one exporter), and choosing a store from the configuration.

Check-and-hold is atomic: one lock covers reading the held amounts, deciding
and adding the hold.  Entries leave on expiry (a heap orders them) and, for
recorded costs, once a meter poll covers them.
"""

from __future__ import annotations

import heapq
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from budget_exporter.accounting.holds import (
    Entry,
    HoldRefused,
    HoldRequest,
    HoldSettings,
    HoldStore,
    Outcome,
    Room,
    is_covered,
)
from budget_exporter.config.schema import Config


def new_hold_id() -> str:
    return secrets.token_hex(16)


def limit_message(kind: str, limit: int) -> str:
    if kind == "client":
        return (
            f"this client has {limit} holds in flight already (global.check.holds.max_per_client): "
            "release some or let them expire"
        )
    return f"{limit} holds are in flight already (global.check.holds.max_total)"


class MemoryHolds:
    """Holds of one exporter process."""

    kind = "memory"

    def __init__(self, settings: HoldSettings | None = None) -> None:
        self.settings = settings or HoldSettings()
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._by_budget: dict[str, set[str]] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._flying: Counter[str] = Counter()
        self._flying_total = 0
        self._expiries: list[tuple[float, str]] = []
        self.on_change: Callable[[], None] | None = None
        """Called (outside the lock) after a hold is taken, released or recorded: the engine
        asks for a save of the state then (coalesced, off the request's path).  Expiry and
        coverage need none: a restart drops what has expired or is covered by then."""

    def _changed(self) -> None:
        hook = self.on_change
        if hook is not None:
            hook()

    def configure(self, settings: HoldSettings) -> None:
        with self._lock:
            self.settings = settings

    def up(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def entries(self) -> list[Entry]:
        """Every hold and recorded cost kept now (for ``--storage.path``)."""
        with self._lock:
            return list(self._entries.values())

    def restore(self, entries: Iterable[Entry], now: float) -> int:
        """Take back saved entries that have not expired by ``now``; how many were taken."""
        taken = 0
        with self._lock:
            for entry in entries:
                if entry.expires > now and entry.id not in self._entries:
                    self._add(entry)
                    taken += 1
        return taken

    # -- bookkeeping (under the lock) --------------------------------------------

    def _add(self, entry: Entry) -> None:
        self._entries[entry.id] = entry
        for budget in entry.budgets:
            self._by_budget.setdefault(budget, set()).add(entry.id)
        if entry.key is not None:
            self._by_key[(entry.client, entry.key)] = entry.id
        if entry.in_flight:
            self._flying[entry.client] += 1
            self._flying_total += 1
        heapq.heappush(self._expiries, (entry.expires, entry.id))

    def _drop(self, entry: Entry) -> None:
        del self._entries[entry.id]
        for budget in entry.budgets:
            ids = self._by_budget.get(budget)
            if ids is not None:
                ids.discard(entry.id)
                if not ids:
                    del self._by_budget[budget]
        if entry.key is not None and self._by_key.get((entry.client, entry.key)) == entry.id:
            del self._by_key[(entry.client, entry.key)]
        if entry.in_flight:
            self._unfly(entry)

    def _unfly(self, entry: Entry) -> None:
        self._flying_total -= 1
        self._flying[entry.client] -= 1
        if self._flying[entry.client] <= 0:
            del self._flying[entry.client]

    def _expire(self, now: float) -> None:
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, hold_id = heapq.heappop(heap)
            entry = self._entries.get(hold_id)
            if entry is not None and entry.expires <= now:
                self._drop(entry)

    def _held(self, budget: str, now: float, covered: Mapping[str, float]) -> Decimal:
        total = Decimal(0)
        done = []
        for hold_id in self._by_budget.get(budget, ()):
            entry = self._entries[hold_id]
            if entry.expires <= now or is_covered(entry, covered):
                done.append(entry)
            else:
                total += entry.amount
        for entry in done:
            self._drop(entry)  # a covered cost stays covered: the meter's figures only grow
        return total

    # -- the store ---------------------------------------------------------------

    def check(
        self,
        rooms: tuple[Room, ...],
        cost: Decimal,
        currency: str,
        request: HoldRequest | None,
        now: float,
        covered_until: Mapping[str, float],
    ) -> Outcome:
        settings = self.settings
        with self._lock:
            self._expire(now)
            held = {room.budget: self._held(room.budget, now, covered_until) for room in rooms}
            if request is not None and request.key is not None:
                earlier = self._by_key.get((request.client, request.key))
                if earlier is not None:
                    return Outcome(True, held, self._entries[earlier], replayed=True)
            allowed = all(room.fits(held[room.budget], cost) for room in rooms)
            if not allowed or request is None:
                return Outcome(allowed, held)
            if self._flying[request.client] >= settings.max_per_client:
                raise HoldRefused(429, limit_message("client", settings.max_per_client))
            if self._flying_total >= settings.max_total:
                raise HoldRefused(429, limit_message("total", settings.max_total))
            entry = Entry(
                id=new_hold_id(),
                client=request.client,
                key=request.key,
                budgets=tuple(room.budget for room in rooms),
                amount=cost,
                currency=currency,
                created=now,
                expires=now + request.ttl,
                sources=request.sources,
            )
            self._add(entry)
        self._changed()
        return Outcome(True, held, entry)

    def release(self, hold_id: str, actual: Decimal | None, now: float) -> Entry | None:
        with self._lock:
            self._expire(now)
            entry = self._entries.get(hold_id)
            if entry is None:
                raise HoldRefused(404, f"no hold {hold_id!r} (released without cost, or expired)")
            if not entry.in_flight:
                return entry  # released already: a retried release changes nothing
            self._drop(entry)
            recorded = None
            if actual:
                recorded = replace(
                    entry, amount=actual, recorded_at=now, expires=now + self.settings.record_ttl
                )
                self._add(recorded)
        self._changed()
        return recorded

    def held(self, now: float, covered_until: Mapping[str, float]) -> dict[str, Decimal]:
        with self._lock:
            self._expire(now)
            found = {b: self._held(b, now, covered_until) for b in list(self._by_budget)}
        return {b: amount for b, amount in found.items() if amount}

    def in_flight(self) -> int:
        with self._lock:
            return self._flying_total


def open_store(settings: HoldSettings, redis: Any = None) -> HoldStore:
    """The store the configuration asks for: Redis when ``redis`` settings are given."""
    if redis is None:
        return MemoryHolds(settings)
    from budget_exporter.runtime.redisholds import RedisHolds  # only when configured

    return RedisHolds(settings, redis)


def hold_config(config: Config) -> tuple[HoldSettings, Any]:
    """``global.check.holds`` as :class:`HoldSettings`, and its Redis settings (None: memory)."""
    holds = getattr(config.global_.check, "holds", None)
    if holds is None:
        return HoldSettings(), None
    settings = HoldSettings(
        default_ttl=holds.default_ttl.total_seconds(),
        max_ttl=holds.max_ttl.total_seconds(),
        max_per_client=holds.max_per_client,
        max_total=holds.max_total,
        visible_after=holds.visible_after.total_seconds(),
        record_ttl=holds.record_ttl.total_seconds(),
    )
    return settings, holds.redis if holds.store == "redis" else None
