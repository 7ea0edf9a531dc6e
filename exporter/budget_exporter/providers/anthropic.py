"""``anthropic``: organization costs from Anthropic's Admin API, for any period of whole UTC
days.

Reads ``GET {base_url}/v1/organizations/cost_report`` (daily buckets from the start of the
earliest window asked, every page, once per poll; amounts in cents) and, for the month's token
figures, ``/v1/organizations/usage_report/messages``.  Emits::

    budget_source_cost_amount{period, currency,
        sub_account_id, charge_category, model, token_type}
    budget_source_data_through_timestamp_seconds
    budget_source_usage_tokens{model, token_type}                       usage_tokens: true
    budget_source_estimated_cost_amount{model, currency, price_table_date}   estimate_cost: true

Workspaces, the data horizon and estimates: docs/providers-llm-saas.md#anthropic.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Window
from budget_exporter.core.money import parse_amount
from budget_exporter.providers import register
from budget_exporter.providers._llm import (
    LlmProvider,
    LlmSourceConfig,
    Tokens,
    bucket_end,
    count,
    currency_of,
)
from budget_exporter.providers.base import BaseUrl

CENTS = Decimal(100)
DEFAULT_WORKSPACE = "default"
# Token types of the cost report's ``token_type`` field -> the exporter's names.
_TOKEN_TYPES = {
    "uncached_input_tokens": "input",
    "cache_read_input_tokens": "cached_input",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
    "output_tokens": "output",
}


class AnthropicConfig(LlmSourceConfig):
    base_url: BaseUrl = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    group_by: tuple[Literal["workspace_id", "description"], ...] = ("workspace_id", "description")


@register
class AnthropicProvider(LlmProvider):
    name = "anthropic"
    config_model = AnthropicConfig
    default_poll_interval = timedelta(minutes=30)
    max_polls_per_second = 2.0
    api = "Anthropic Admin API"
    cost_results = "cost_report"

    @property
    def headers(self) -> dict[str, str]:
        return {
            "x-api-key": self.config.admin_key,
            "anthropic-version": self.config.anthropic_version,
        }

    def _params(self, start: datetime, end: datetime | None) -> list[tuple[str, str]]:
        params = [("starting_at", _rfc3339(start))]
        if end is not None:
            params.append(("ending_at", _rfc3339(end)))
        return [*params, ("bucket_width", "1d"), ("limit", str(self.config.page_size))]

    def cost_request(
        self, start: datetime, end: datetime | None
    ) -> tuple[str, list[tuple[str, str]]]:
        config: AnthropicConfig = self.config
        params = self._params(start, end) + [("group_by[]", g) for g in config.group_by]
        return f"{config.base_url}/v1/organizations/cost_report", params

    def cost_of(self, item: dict[str, Any], where: str) -> tuple[Decimal, str]:
        cents = parse_amount(item.get("amount"), f"{where} amount")
        return cents / CENTS, currency_of(item.get("currency"), where)

    def dimensions(self, item: dict[str, Any]) -> dict[str, str]:
        dims: dict[str, str] = {}
        if "workspace_id" in self.config.group_by:
            workspace = item.get("workspace_id")
            dims["sub_account_id"] = workspace if isinstance(workspace, str) else DEFAULT_WORKSPACE
        if "description" in self.config.group_by:
            for key, label in (("cost_type", "charge_category"), ("model", "model")):
                value = item.get(key)
                if isinstance(value, str) and value:
                    dims[label] = value
            token_type = item.get("token_type")
            if isinstance(token_type, str) and token_type:
                dims["token_type"] = _TOKEN_TYPES.get(token_type, token_type)
        return dims

    def tokens(self, window: Window) -> Tokens:
        config: AnthropicConfig = self.config
        params = [*self._params(window.start, None), ("group_by[]", "model")]
        url = f"{config.base_url}/v1/organizations/usage_report/messages"
        return self.token_counts(url, params, window, "usage_report")

    def tokens_of(self, item: dict[str, Any], where: str) -> dict[str, int]:
        creation = item.get("cache_creation")
        creation = creation if isinstance(creation, dict) else {}
        return {
            "input": count(item.get("uncached_input_tokens"), f"{where} input"),
            "cached_input": count(
                item.get("cache_read_input_tokens"), f"{where} cache_read_input_tokens"
            ),
            "cache_write": count(
                creation.get("ephemeral_5m_input_tokens"), f"{where} cache_creation"
            ),
            "cache_write_1h": count(
                creation.get("ephemeral_1h_input_tokens"), f"{where} cache_creation"
            ),
            "output": count(item.get("output_tokens"), f"{where} output_tokens"),
        }

    @staticmethod
    def bounds(bucket: dict[str, Any]) -> tuple[datetime, datetime]:
        """``starting_at`` and ``ending_at``, RFC 3339."""
        start = _moment(bucket.get("starting_at"), "starting_at")
        end = bucket.get("ending_at")
        return start, bucket_end(start, None if end is None else _moment(end, "ending_at"))


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise SourceError(f"a bucket has no {name}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"a bucket's {name} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise SourceError(f"a bucket's {name} has no time zone")
    return moment
