"""Spend lines indexed by dimension value, so that budgets' ``match`` sums cost little."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import cached_property, lru_cache

from budget_exporter.core.model import Period, SpendLine

Summary = tuple[dict[str, Decimal], dict[str, int]]
"""Sum and number of the matching lines, per currency."""


@lru_cache(maxsize=4096)
def match_pattern(value: str) -> re.Pattern[str] | None:
    """The compiled pattern of a ``/regex/`` match value, or None for an exact value."""
    if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
        return re.compile(value[1:-1])
    return None


class LineIndex:
    """The lines of one poll result for one period, with lookups by dimension value.

    Built lazily: a dimension is indexed the first time a ``match`` names it.
    Not thread-safe; build one per rebuild (or per poll) and drop it after.
    """

    def __init__(self, lines: Iterable[SpendLine]) -> None:
        self._lines: tuple[SpendLine, ...] = tuple(lines)
        self._by_value: dict[str, dict[str, list[int]]] = {}
        self._selected: dict[tuple[str, str], list[int]] = {}
        self._summaries: dict[tuple[tuple[str, str], ...], Summary] = {}

    @classmethod
    def of(cls, lines: Iterable[SpendLine], period: Period) -> LineIndex:
        return cls(ln for ln in lines if ln.period == period)

    def __len__(self) -> int:
        return len(self._lines)

    @cached_property
    def dimensions(self) -> frozenset[str]:
        """Every dimension name some line has."""
        return frozenset(key for ln in self._lines for key, _ in ln.dimensions)

    def _values(self, key: str) -> dict[str, list[int]]:
        """Line positions by their value of dimension ``key`` (``""`` when absent)."""
        found = self._by_value.get(key)
        if found is None:
            found = {}
            for i, line in enumerate(self._lines):
                value = next((v for k, v in line.dimensions if k == key), "")
                found.setdefault(value, []).append(i)
            self._by_value[key] = found
        return found

    def _select(self, key: str, wanted: str) -> list[int]:
        """Positions of the lines whose ``key`` is ``wanted`` (or fully matches it)."""
        cached = self._selected.get((key, wanted))
        if cached is not None:
            return cached
        values = self._values(key)
        pattern = match_pattern(wanted)
        if pattern is None:
            chosen = values.get(wanted, [])
        else:  # the pattern runs once per distinct value, not once per line
            hits = [ids for value, ids in values.items() if pattern.fullmatch(value)]
            chosen = hits[0] if len(hits) == 1 else sorted(i for ids in hits for i in ids)
        self._selected[(key, wanted)] = chosen
        return chosen

    def select(self, match: Mapping[str, str]) -> Sequence[int]:
        """Positions of the lines passing every condition of ``match``, in line order."""
        if not match:
            return range(len(self._lines))
        parts = sorted((self._select(k, w) for k, w in match.items()), key=len)
        if len(parts) == 1:
            return parts[0]
        chosen = set(parts[0])
        for part in parts[1:]:
            if not chosen:
                break
            chosen.intersection_update(part)
        return sorted(chosen)

    def summary(self, match: Mapping[str, str]) -> Summary:
        """Sum and count of the matching lines per currency (summed in line order)."""
        key = tuple(sorted(match.items()))
        found = self._summaries.get(key)
        if found is None:
            sums: dict[str, Decimal] = {}
            counts: dict[str, int] = {}
            lines = self._lines
            for i in self.select(match):
                line = lines[i]
                sums[line.currency] = sums.get(line.currency, Decimal(0)) + line.amount
                counts[line.currency] = counts.get(line.currency, 0) + 1
            found = self._summaries[key] = (sums, counts)
        return found
