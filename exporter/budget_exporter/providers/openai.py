"""``openai``: organization costs from OpenAI's Costs API, for any period of whole UTC days.

Reads ``GET {base_url}/organization/costs`` (daily buckets from the start of the earliest
window asked, every page, once per poll) and, for the month's token figures,
``/organization/usage/completions``.  Emits::

    budget_source_cost_amount{period, currency,
        sub_account_id, charge_category, model, token_type}
    budget_source_data_through_timestamp_seconds
    budget_source_usage_tokens{model, token_type}                       usage_tokens: true
    budget_source_estimated_cost_amount{model, currency, price_table_date}   estimate_cost: true

Line items, the data horizon and estimates: docs/providers-llm-saas.md#openai.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

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

_NOT_WORD = re.compile(r"[^a-z0-9]+")


class OpenAIConfig(LlmSourceConfig):
    base_url: BaseUrl = "https://api.openai.com/v1"
    page_size: int = Field(default=31, ge=1, le=180)
    """Buckets per page of the Costs API (its ``limit`` goes to 180); the usage API's
    daily pages hold at most 31, so its requests take the smaller of the two."""
    group_by: tuple[Literal["project_id", "line_item"], ...] = ("project_id", "line_item")
    project_ids: tuple[str, ...] = ()


def split_line_item(line_item: str) -> tuple[str | None, str | None]:
    """``"gpt-4o-2024-08-06, cached input"`` -> ``("gpt-4o-2024-08-06", "cached_input")``.

    OpenAI writes a per-model line item as ``"<model>, <kind>"``: the model id
    before the first comma (a model id has no spaces), the kind after it.  Any
    other line item (``"web search tool calls"``, a bare ``"tts-1"``) names no
    model: it keeps only its ``charge_category``.
    """
    head, sep, tail = line_item.partition(",")
    model, kind = head.strip(), _NOT_WORD.sub("_", tail.lower()).strip("_")
    if not sep or not model or not kind or any(c.isspace() for c in model):
        return None, None
    return model, kind


@register
class OpenAIProvider(LlmProvider):
    name = "openai"
    config_model = OpenAIConfig
    default_poll_interval = timedelta(hours=1)
    max_polls_per_second = 2.0
    api = "OpenAI Costs/Usage API"
    cost_results = "costs"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.admin_key}"}

    @staticmethod
    def _params(start: datetime, end: datetime | None, limit: int) -> list[tuple[str, str]]:
        params = [("start_time", str(int(start.timestamp())))]
        if end is not None:
            params.append(("end_time", str(int(end.timestamp()))))
        return [*params, ("bucket_width", "1d"), ("limit", str(limit))]

    def cost_request(
        self, start: datetime, end: datetime | None
    ) -> tuple[str, list[tuple[str, str]]]:
        config: OpenAIConfig = self.config
        params = self._params(start, end, config.page_size)
        params += [("group_by", g) for g in config.group_by]
        params += [("project_ids", p) for p in config.project_ids]
        return f"{config.base_url}/organization/costs", params

    def cost_of(self, item: dict[str, Any], where: str) -> tuple[Decimal, str]:
        amount = item.get("amount")
        if not isinstance(amount, dict):
            raise SourceError(f"{where}: amount is not an object")
        value = parse_amount(amount.get("value"), f"{where} amount.value")
        return value, currency_of(amount.get("currency"), where)

    def dimensions(self, item: dict[str, Any]) -> dict[str, str]:
        dims: dict[str, str] = {}
        project = item.get("project_id")
        if "project_id" in self.config.group_by and isinstance(project, str):
            dims["sub_account_id"] = project
        line_item = item.get("line_item")
        if "line_item" in self.config.group_by and isinstance(line_item, str) and line_item:
            dims["charge_category"] = line_item
            model, kind = split_line_item(line_item)
            if model:
                dims["model"] = model
            if kind:
                dims["token_type"] = kind
        return dims

    def tokens(self, window: Window) -> Tokens:
        config: OpenAIConfig = self.config
        params = [
            *self._params(window.start, None, min(config.page_size, 31)),
            ("group_by", "model"),
        ]
        params += [("project_ids", p) for p in config.project_ids]
        url = f"{config.base_url}/organization/usage/completions"
        return self.token_counts(url, params, window, "usage")

    def tokens_of(self, item: dict[str, Any], where: str) -> dict[str, int]:
        total_in = count(item.get("input_tokens"), f"{where} input_tokens")
        cached = count(item.get("input_cached_tokens"), f"{where} input_cached_tokens")
        return {
            "input": max(total_in - cached, 0),
            "cached_input": cached,
            "output": count(item.get("output_tokens"), f"{where} output_tokens"),
        }

    @staticmethod
    def bounds(bucket: dict[str, Any]) -> tuple[datetime, datetime]:
        """``start_time`` and ``end_time``, Unix seconds."""
        start, end = bucket.get("start_time"), bucket.get("end_time")
        if isinstance(start, bool) or not isinstance(start, int | float):
            raise SourceError("a bucket has no numeric start_time")
        if isinstance(end, bool) or not isinstance(end, int | float):
            end = None
        begins = datetime.fromtimestamp(start, UTC)
        return begins, bucket_end(begins, None if end is None else datetime.fromtimestamp(end, UTC))
