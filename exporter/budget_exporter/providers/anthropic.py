"""``anthropic``: month-to-date organization costs from Anthropic's Admin API.

``GET {base_url}/v1/organizations/cost_report`` with an Admin key
(``x-api-key``, ``anthropic-version``), daily buckets from the first of the
month (UTC), every page followed, ``group_by[]=workspace_id`` and
``group_by[]=description``.  Amounts come in **cents** as decimal strings and
are converted to dollars.  The default workspace (``workspace_id: null``)
shows as ``sub_account_id="default"``.  Optionally, month-to-date tokens per
model from ``/v1/organizations/usage_report/messages`` and an estimated cost
per model from the price table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from budget_exporter.errors import SourceError
from budget_exporter.httpclient import HttpStatusError
from budget_exporter.model import Period, PollResult, Sample, SpendLine, Window
from budget_exporter.providers import register
from budget_exporter.providers._llm import (
    LineSum,
    LlmSourceConfig,
    Tokens,
    admin_key_error,
    count,
    currency_of,
    estimate_samples,
    monthly_window,
    pages,
    results,
    token_samples,
)
from budget_exporter.providers.base import Provider
from budget_exporter.providers.http_json import parse_amount

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
    base_url: str = Field(default="https://api.anthropic.com", pattern=r"^https?://")
    anthropic_version: str = "2023-06-01"
    group_by: tuple[Literal["workspace_id", "description"], ...] = ("workspace_id", "description")


@register
class AnthropicProvider(Provider):
    name = "anthropic"
    config_model = AnthropicConfig
    default_poll_interval = timedelta(minutes=30)
    supported_periods = frozenset({Period.MONTHLY})

    def __init__(self, config: AnthropicConfig, context: Any) -> None:
        super().__init__(config, context)
        self.http = context.http_client()
        self.table = config.price_table() if config.estimate_cost else None

    def close(self) -> None:
        self.http.close()

    @property
    def headers(self) -> dict[str, str]:
        return {
            "x-api-key": self.config.admin_key,
            "anthropic-version": self.config.anthropic_version,
        }

    def poll(self, windows: Sequence[Window]) -> PollResult:
        window = monthly_window(windows)
        if window is None:
            return PollResult()
        try:
            lines = self.costs(window)
            samples: list[Sample] = []
            if self.config.usage_tokens or self.config.estimate_cost:
                tokens = self.tokens(window)
                if self.config.usage_tokens:
                    samples.extend(token_samples(tokens))
                if self.table is not None:
                    samples.extend(estimate_samples(tokens, self.table, self.context.logger))
        except HttpStatusError as exc:
            if exc.status in (401, 403):
                raise admin_key_error(exc, "Anthropic Admin API") from None
            raise
        return PollResult(lines=lines, samples=tuple(samples))

    def _params(self, window: Window) -> list[tuple[str, str]]:
        return [
            ("starting_at", window.start.strftime("%Y-%m-%dT%H:%M:%SZ")),
            ("bucket_width", "1d"),
            ("limit", str(self.config.page_size)),
        ]

    def costs(self, window: Window) -> tuple[SpendLine, ...]:
        config: AnthropicConfig = self.config
        params = self._params(window) + [("group_by[]", g) for g in config.group_by]
        sums = LineSum()
        url = f"{config.base_url}/v1/organizations/cost_report"
        for data in pages(self.http, url, params, self.headers, config.max_pages):
            for bucket in data:
                if not _in_window(bucket, window):
                    continue
                for index, item in enumerate(results(bucket)):
                    where = f"cost_report result {index}"
                    cents = parse_amount(item.get("amount"), f"{where} amount")
                    currency = currency_of(item.get("currency"), where)
                    sums.add(cents / CENTS, currency, self.dimensions(item))
        return sums.lines(window.period)

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
        params = [*self._params(window), ("group_by[]", "model")]
        tokens: Tokens = defaultdict(lambda: defaultdict(int))
        url = f"{config.base_url}/v1/organizations/usage_report/messages"
        for data in pages(self.http, url, params, self.headers, config.max_pages):
            for bucket in data:
                if not _in_window(bucket, window):
                    continue
                for index, item in enumerate(results(bucket)):
                    where = f"usage_report result {index}"
                    model = item.get("model") if isinstance(item.get("model"), str) else "unknown"
                    creation = item.get("cache_creation")
                    creation = creation if isinstance(creation, dict) else {}
                    kinds = tokens[model]
                    kinds["input"] += count(item.get("uncached_input_tokens"), f"{where} input")
                    kinds["cached_input"] += count(
                        item.get("cache_read_input_tokens"), f"{where} cache_read_input_tokens"
                    )
                    kinds["cache_write"] += count(
                        creation.get("ephemeral_5m_input_tokens"), f"{where} cache_creation"
                    )
                    kinds["cache_write_1h"] += count(
                        creation.get("ephemeral_1h_input_tokens"), f"{where} cache_creation"
                    )
                    kinds["output"] += count(item.get("output_tokens"), f"{where} output_tokens")
        return {m: dict(k) for m, k in tokens.items()}


def _in_window(bucket: dict[str, Any], window: Window) -> bool:
    """Buckets are daily; keep those that start inside the window."""
    start = bucket.get("starting_at")
    if not isinstance(start, str):
        raise SourceError("a bucket has no starting_at")
    try:
        moment = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        raise SourceError("a bucket's starting_at is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise SourceError("a bucket's starting_at has no time zone")
    return window.start <= moment < window.end
