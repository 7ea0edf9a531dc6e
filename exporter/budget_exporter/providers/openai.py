"""``openai``: month-to-date organization costs from OpenAI's Costs API.

``GET {base_url}/organization/costs`` with an Admin key, daily buckets from
the first of the month (UTC), every page followed, grouped by project and
line item.  Line items such as ``"gpt-4o-2024-08-06, input"`` also give the
``model`` and ``token_type`` dimensions.  Optionally, month-to-date tokens
per model from ``/organization/usage/completions`` and an estimated cost per
model from the price table.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field

from budget_exporter.errors import SourceError
from budget_exporter.httpclient import HttpStatusError
from budget_exporter.model import Period, PollResult, Sample, Window
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

# A model id has no spaces and a digit or a colon ("gpt-4o", "o3", "ft:gpt-4o-mini:acme::x");
# "web search tool calls" or "Image models" do not name one.
_MODEL = re.compile(r"^(?=[^\s,]*[\d:])[A-Za-z0-9][^\s,]*$")


class OpenAIConfig(LlmSourceConfig):
    base_url: str = Field(default="https://api.openai.com/v1", pattern=r"^https?://")
    group_by: tuple[Literal["project_id", "line_item"], ...] = ("project_id", "line_item")
    project_ids: tuple[str, ...] = ()


def split_line_item(line_item: str) -> tuple[str | None, str | None]:
    """``"gpt-4o-2024-08-06, cached input"`` -> ``("gpt-4o-2024-08-06", "cached_input")``."""
    head, sep, tail = line_item.partition(",")
    model = head.strip()
    if not _MODEL.match(model):
        return None, None
    kind = "_".join(tail.lower().split()) if sep else ""
    return model, kind or None


@register
class OpenAIProvider(Provider):
    name = "openai"
    config_model = OpenAIConfig
    default_poll_interval = timedelta(hours=1)
    supported_periods = frozenset({Period.MONTHLY})

    def __init__(self, config: OpenAIConfig, context: Any) -> None:
        super().__init__(config, context)
        self.http = context.http_client()
        self.table = config.price_table() if config.estimate_cost else None

    def close(self) -> None:
        self.http.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.admin_key}"}

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
                raise admin_key_error(exc, "OpenAI Costs/Usage API") from None
            raise
        return PollResult(lines=lines, samples=tuple(samples))

    def _params(self, window: Window, limit: int) -> list[tuple[str, str]]:
        return [
            ("start_time", str(int(window.start.timestamp()))),
            ("bucket_width", "1d"),
            ("limit", str(limit)),
        ]

    def costs(self, window: Window) -> tuple[Any, ...]:
        config: OpenAIConfig = self.config
        params = self._params(window, config.page_size)
        params += [("group_by", g) for g in config.group_by]
        params += [("project_ids", p) for p in config.project_ids]
        sums = LineSum()
        url = f"{config.base_url}/organization/costs"
        for data in pages(self.http, url, params, self.headers, config.max_pages):
            for bucket in data:
                if not _in_window(bucket, window):
                    continue
                for index, item in enumerate(results(bucket)):
                    where = f"costs result {index}"
                    amount = item.get("amount")
                    if not isinstance(amount, dict):
                        raise SourceError(f"{where}: amount is not an object")
                    value = parse_amount(amount.get("value"), f"{where} amount.value")
                    currency = currency_of(amount.get("currency"), where)
                    sums.add(value, currency, self.dimensions(item))
        return sums.lines(window.period)

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
        params = [*self._params(window, min(config.page_size, 31)), ("group_by", "model")]
        params += [("project_ids", p) for p in config.project_ids]
        tokens: Tokens = defaultdict(lambda: defaultdict(int))
        url = f"{config.base_url}/organization/usage/completions"
        for data in pages(self.http, url, params, self.headers, config.max_pages):
            for bucket in data:
                if not _in_window(bucket, window):
                    continue
                for index, item in enumerate(results(bucket)):
                    where = f"usage result {index}"
                    model = item.get("model") if isinstance(item.get("model"), str) else "unknown"
                    total_in = count(item.get("input_tokens"), f"{where} input_tokens")
                    cached = count(item.get("input_cached_tokens"), f"{where} input_cached_tokens")
                    kinds = tokens[model]
                    kinds["input"] += max(total_in - cached, 0)
                    kinds["cached_input"] += cached
                    kinds["output"] += count(item.get("output_tokens"), f"{where} output_tokens")
        return {m: dict(k) for m, k in tokens.items()}


def _in_window(bucket: dict[str, Any], window: Window) -> bool:
    """Buckets are daily; keep those that start inside the window."""
    start = bucket.get("start_time")
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise SourceError("a bucket has no numeric start_time")
    return window.start.timestamp() <= start < window.end.timestamp()
