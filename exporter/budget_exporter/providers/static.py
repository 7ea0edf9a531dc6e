"""``static``: a fixed amount, or fixed lines with dimensions (invoices, commitments, tests).

Reads nothing.  Emits the same lines for every period window a budget asks for::

    budget_source_cost_amount{period, currency, <the lines' dimensions>}

docs/providers-generic.md#static.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from budget_exporter.core.fields import Currency, Money
from budget_exporter.core.model import DIMENSION_NAME, PollResult, SpendLine, Window, label_clash
from budget_exporter.providers import register
from budget_exporter.providers.base import Provider, SourceConfig


class StaticLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Money
    dimensions: dict[str, str] = Field(default_factory=dict)

    @field_validator("dimensions")
    @classmethod
    def _usable_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not DIMENSION_NAME.match(key):
                raise ValueError(f"dimension {key!r} must match {DIMENSION_NAME.pattern}")
            if label_clash(key):
                raise ValueError(label_clash(key))
        return value


class StaticConfig(SourceConfig):
    amount: Money | None = None
    lines: tuple[StaticLine, ...] | None = None
    currency: Currency

    @model_validator(mode="after")
    def _one_of(self) -> StaticConfig:
        if (self.amount is None) == (self.lines is None):
            raise ValueError("set exactly one of amount or lines")
        return self


@register
class StaticProvider(Provider):
    name = "static"
    config_model = StaticConfig
    accrues = False

    def poll(self, windows: Sequence[Window]) -> PollResult:
        config: StaticConfig = self.config
        items = config.lines if config.lines is not None else (StaticLine(amount=config.amount),)
        return PollResult(
            lines=tuple(
                SpendLine.of(w.period, item.amount, config.currency, item.dimensions)
                for w in windows
                for item in items
            )
        )
