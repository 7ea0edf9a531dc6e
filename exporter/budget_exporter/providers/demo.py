"""``demo``: simulated spend that grows through the period; no credentials, no network.

Reads nothing: each value gets a fixed share of ``monthly_spend`` with a day-to-day wobble,
deterministic for a ``seed`` and a time.  Emits::

    budget_source_cost_amount{period, currency, <dimension>}

docs/providers-generic.md#demo.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field

from budget_exporter.core.fields import Currency, Money
from budget_exporter.core.model import DIMENSION_NAME, PollResult, SpendLine, Window, label_clash
from budget_exporter.providers import register
from budget_exporter.providers.base import Provider, SourceConfig

_DAY = timedelta(days=1)
_QUANTUM = Decimal("0.0001")  # amounts to a hundredth of a cent


def _no_clash(value: str) -> str:
    if label_clash(value):
        raise ValueError(label_clash(value))
    return value


class DemoConfig(SourceConfig):
    monthly_spend: Money = Decimal(1000)
    currency: Currency = "USD"
    seed: int = 0
    dimension: Annotated[str, AfterValidator(_no_clash)] = Field(
        default="service_name", pattern=DIMENSION_NAME.pattern
    )
    values: tuple[str, ...] = Field(default=("compute", "storage", "network"), min_length=1)
    wobble: float = Field(default=0.3, ge=0, lt=1)


def _unit(*parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) from ``parts``."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@register
class DemoProvider(Provider):
    name = "demo"
    config_model = DemoConfig

    def poll(self, windows: Sequence[Window]) -> PollResult:
        now = self.context.now()
        return PollResult(
            lines=tuple(line for w in windows for line in self.lines(w, now)),
            polled_at=now,
        )

    def lines(self, window: Window, now: datetime) -> list[SpendLine]:
        config: DemoConfig = self.config
        weights = [0.2 + _unit(config.seed, "share", v) for v in config.values]
        total_weight = sum(weights)
        daily = float(config.monthly_spend) / 30
        out = []
        for value, weight in zip(config.values, weights, strict=True):
            amount = 0.0
            day = window.start
            while day < min(now, window.end):
                covered = (min(day + _DAY, now, window.end) - day) / _DAY
                wobble = 1 + config.wobble * (2 * _unit(config.seed, value, day.date()) - 1)
                amount += daily * weight / total_weight * wobble * covered
                day += _DAY
            out.append(
                SpendLine.of(
                    window.period,
                    Decimal(repr(amount)).quantize(_QUANTUM),
                    config.currency,
                    {config.dimension: value},
                )
            )
        return out
