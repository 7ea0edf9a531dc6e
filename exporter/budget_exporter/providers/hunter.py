"""``hunter``: Hunter.io credit quotas, and their cost against a money budget.

Reads ``GET {base_url}/account`` (free: it uses no credits).  Emits::

    budget_source_quota_used{quota}
    budget_source_quota_limit{quota}
    budget_source_quota_warning_threshold_ratio{quota}
    budget_source_quota_reset_timestamp_seconds
    budget_source_cost_amount{period="monthly", currency, charge_category}   used x price

Quota buckets and credit cycles: docs/providers-llm-saas.md#hunter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import Field, field_validator, model_validator

from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import Currency, Money, Ratio
from budget_exporter.core.model import Period, PollResult, Sample, SpendLine, Window
from budget_exporter.core.money import parse_amount
from budget_exporter.providers import register
from budget_exporter.providers._http import HttpStatusError
from budget_exporter.providers.base import BaseUrl, Provider, SourceConfig

log = logging.getLogger(__name__)

QUOTA_USED = "budget_source_quota_used"
QUOTA_LIMIT = "budget_source_quota_limit"
QUOTA_WARNING = "budget_source_quota_warning_threshold_ratio"
QUOTA_RESET = "budget_source_quota_reset_timestamp_seconds"
_HELP = {
    QUOTA_USED: "Units of a provider quota used in the current quota cycle.",
    QUOTA_LIMIT: "Units of a provider quota available in the current quota cycle.",
    QUOTA_WARNING: "Share of a provider quota at which BudgetQuotaNearlyExhausted fires.",
    QUOTA_RESET: "Unix time at which the provider's quotas next reset.",
}


class HunterConfig(SourceConfig):
    api_key: str = Field(min_length=1)
    base_url: BaseUrl = "https://api.hunter.io/v2"
    price_per_credit: Money | None = None
    prices: dict[str, Money] = Field(default_factory=dict)
    currency: Currency = "USD"
    quota_warning_ratio: Ratio = 0.8

    secret_fields = frozenset({"api_key"})

    @field_validator("price_per_credit")
    @classmethod
    def _price_not_negative(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("prices")
    @classmethod
    def _prices_not_negative(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for quota, price in value.items():
            if price < 0:
                raise ValueError(f"price of {quota!r} must not be negative")
        return value

    @model_validator(mode="after")
    def _priced(self) -> HunterConfig:
        if self.price_per_credit is None and not self.prices:
            raise ValueError(
                "set price_per_credit (or per-quota prices) to turn credits into spend; "
                "0 reports the quotas only"
            )
        return self

    def price(self, quota: str) -> Decimal | None:
        return self.prices.get(quota, self.price_per_credit)


@register
class HunterProvider(Provider):
    name = "hunter"
    config_model = HunterConfig
    default_poll_interval = timedelta(minutes=15)
    supported_periods = frozenset({Period.MONTHLY})

    def __init__(self, config: HunterConfig, context: Any) -> None:
        super().__init__(config, context)
        self.log = log.getChild(context.source)
        self.http = context.http_client()

    def close(self) -> None:
        self.http.close()

    def poll(self, windows: Sequence[Window]) -> PollResult:
        config: HunterConfig = self.config
        try:
            document = self.http.json(
                "GET", f"{config.base_url}/account", params={"api_key": config.api_key}
            )
        except HttpStatusError as exc:
            if exc.status in (401, 403):
                raise SourceError(f"{exc} -- check the Hunter API key") from None
            raise
        return self.parse(document, windows)

    def parse(self, document: Any, windows: Sequence[Window]) -> PollResult:
        """The ``/account`` answer as quota gauges and, for the monthly window, the credits
        used priced as spend."""
        config: HunterConfig = self.config
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict):
            raise SourceError("unexpected answer from /account: no data object")
        quotas = parse_quotas(data)
        if not quotas:
            raise SourceError("the /account answer has no quota (requests or calls)")
        samples: list[Sample] = []
        for quota, (used, limit) in sorted(quotas.items()):
            labels = {"quota": quota}
            samples.append(Sample.of(QUOTA_USED, _HELP[QUOTA_USED], float(used), labels))
            samples.append(Sample.of(QUOTA_LIMIT, _HELP[QUOTA_LIMIT], float(limit), labels))
            samples.append(
                Sample.of(QUOTA_WARNING, _HELP[QUOTA_WARNING], config.quota_warning_ratio, labels)
            )
        reset = reset_timestamp(data.get("reset_date"))
        if reset is not None:
            samples.append(Sample.of(QUOTA_RESET, _HELP[QUOTA_RESET], reset))
        elif data.get("reset_date") is not None:
            self.log.warning("ignoring a reset_date that is not a YYYY-MM-DD date")
        lines = []
        for window in windows:
            if window.period != Period.MONTHLY:
                continue
            for quota, (used, _) in sorted(quotas.items()):
                price = config.price(quota)
                if price is None:
                    self.log.warning(
                        "no price for Hunter quota %r (set price_per_credit or prices.%s): "
                        "its use is not counted as spend",
                        quota,
                        quota,
                    )
                    continue
                dims = {"charge_category": quota}
                lines.append(SpendLine.of(window.period, used * price, config.currency, dims))
        return PollResult(lines=tuple(lines), samples=tuple(samples))


def parse_quotas(data: dict[str, Any]) -> dict[str, tuple[Decimal, Decimal]]:
    """Quota name -> (used, limit), from ``requests`` buckets, else the deprecated ``calls``.

    A bucket's limit is ``available``; when it also has ``remaining`` (credit
    packs on top of the plan), the limit is ``used + remaining`` if larger.
    """
    buckets: dict[str, Any] = {}
    requests_ = data.get("requests")
    if isinstance(requests_, dict):
        buckets = {k: v for k, v in requests_.items() if isinstance(v, dict)}
    if not buckets and isinstance(data.get("calls"), dict):
        buckets = {"calls": data["calls"]}  # only when there is nothing better: it is a sum
    quotas: dict[str, tuple[Decimal, Decimal]] = {}
    for name, bucket in buckets.items():
        used = parse_amount(bucket.get("used"), f"{name}.used")
        limit = parse_amount(bucket.get("available"), f"{name}.available")
        if bucket.get("remaining") is not None:
            remaining = parse_amount(bucket.get("remaining"), f"{name}.remaining")
            limit = max(limit, used + remaining)
        quotas[str(name)] = (used, limit)
    return quotas


def reset_timestamp(value: Any) -> float | None:
    """``"2026-08-01"`` -> 00:00 UTC that day, Unix seconds."""
    if not isinstance(value, str):
        return None
    try:
        day = date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
