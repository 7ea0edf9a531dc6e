"""Shared by ``openai`` and ``anthropic``: pages of daily buckets, cost lines and their horizon,
token counts and their estimate.

Both APIs answer with pages of daily UTC buckets (``data``, ``has_more``, ``next_page``),
each with its start and end, and need an organization Admin key; docs/providers-llm-saas.md.
Every budget period is a window of whole UTC days, so one request range from the earliest
window's start answers them all: each bucket counts in every window it starts in.
"""

from __future__ import annotations

import logging
import re
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import Duration
from budget_exporter.core.model import Period, PollResult, Sample, SpendLine, Window
from budget_exporter.core.money import parse_amount
from budget_exporter.pricing import PriceTable, PricingConfig, PricingError, UnknownModelError
from budget_exporter.providers._http import HttpClient, HttpStatusError
from budget_exporter.providers.base import (
    ALL_PERIODS,
    BaseUrl,
    LineSum,
    Provider,
    ProviderContext,
    SourceConfig,
)

log = logging.getLogger(__name__)

USAGE_TOKENS = "budget_source_usage_tokens"
USAGE_TOKENS_HELP = (
    "Tokens used so far in the current month (UTC), by model and token type, "
    "from the provider's usage API (input excludes cached and cache-write tokens)."
)
ESTIMATED_COST = "budget_source_estimated_cost_amount"
ESTIMATED_COST_HELP = (
    "ESTIMATE, not billed spend: month-to-date token usage priced with the price table "
    "taken on price_table_date (list prices, no discounts)."
)
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")

Tokens = dict[str, dict[str, int]]
"""model -> token type -> month-to-date count."""

DEFAULT_SETTLE_LAG = timedelta(hours=6)
"""How long a closed daily bucket is still taken as filling: neither provider states how long
its cost report lags; integrators of Anthropic's report describe batches landing within about
four hours (occasionally a day), and OpenAI's costs fill a few hours after the day too."""
MAX_SETTLE_LAG = timedelta(hours=48)


def _zero_duration(value: object) -> object:
    """``0`` (or ``0h``, ``0s``): no lag; other values are read as durations."""
    if value == 0 or (isinstance(value, str) and value.strip() in {"0", "0s", "0m", "0h", "0d"}):
        return timedelta(0)
    return value


SettleLag = Annotated[Duration, BeforeValidator(_zero_duration)]


class LlmSourceConfig(SourceConfig):
    """Fields shared by the LLM providers; ``admin_key`` is a secret."""

    admin_key: str = Field(min_length=1)
    base_url: BaseUrl
    page_size: int = Field(default=31, ge=1, le=31)
    max_pages: int = Field(default=100, ge=1, le=10_000)
    usage_tokens: bool = False
    estimate_cost: bool = False
    pricing: PricingConfig | None = None
    settle_lag: SettleLag = DEFAULT_SETTLE_LAG
    """How long after a daily bucket closes its costs are still arriving: until then the
    bucket is reported as unsettled and the data horizon stays at its start, so a meter
    joined with ``metered_after`` keeps counting that day (docs/realtime.md)."""

    secret_fields = frozenset({"admin_key"})

    @field_validator("settle_lag")
    @classmethod
    def _settle_lag_range(cls, value: timedelta) -> timedelta:
        if value < timedelta(0) or value > MAX_SETTLE_LAG:
            raise ValueError("settle_lag must be from 0 to 48h")
        return value

    @field_validator("pricing")
    @classmethod
    def _pricing_needs_estimates(
        cls, value: PricingConfig | None, info: ValidationInfo
    ) -> PricingConfig | None:
        # PricingConfig has already checked its file (relative to the config file's
        # folder), so a bad file is reported at pricing.file, this at pricing.
        if value is not None and info.data.get("estimate_cost") is False:
            raise ValueError("pricing is only used with estimate_cost: true")
        return value

    def price_table(self) -> PriceTable:
        return (self.pricing or PricingConfig()).table()


def monthly_window(windows: Sequence[Window]) -> Window | None:
    return next((w for w in windows if w.period == Period.MONTHLY), None)


def request_range(windows: Sequence[Window], now: datetime) -> tuple[datetime, datetime | None]:
    """The one range of days that covers ``windows`` (none of which starts after ``now``):
    from the earliest start to the latest end, or open-ended (the API answers up to now)
    when a window has not ended yet."""
    start = min(w.start for w in windows)
    end = max(w.end for w in windows)
    return start, (end if end <= now else None)


def pages(
    http: HttpClient,
    url: str,
    params: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    max_pages: int,
) -> Iterator[list[dict[str, Any]]]:
    """Each page's ``data`` list, following ``next_page`` while ``has_more``."""
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(max_pages):
        query = list(params) if cursor is None else [*params, ("page", cursor)]
        document = http.json("GET", url, params=query, headers=dict(headers))
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            raise SourceError(f"unexpected answer from {_path(url)}: no data list")
        yield [b for b in document["data"] if isinstance(b, dict)]
        if not document.get("has_more"):
            return
        cursor = document.get("next_page")
        if not isinstance(cursor, str) or not cursor:
            raise SourceError(f"{_path(url)} said has_more but gave no next_page")
        if cursor in seen:
            raise SourceError(f"{_path(url)} returned the same next_page twice")
        seen.add(cursor)
    raise SourceError(f"{_path(url)}: more than max_pages ({max_pages}) pages")


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1]


def results(bucket: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = bucket.get("results")
    if items is None:
        return []
    if not isinstance(items, list):
        raise SourceError("a bucket's results is not a list")
    return [r for r in items if isinstance(r, dict)]


def currency_of(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value.strip()):
        raise SourceError(f"{where}: currency is not a 3-letter code")
    return value.strip().upper()


def count(value: Any, where: str) -> int:
    """A token count (JSON number or numeric string); missing/null is 0."""
    if value is None:
        return 0
    amount = parse_amount(value, where)
    if amount < 0:
        raise SourceError(f"{where} is negative")
    return int(amount)


def bucket_end(start: datetime, end: datetime | None) -> datetime:
    """A bucket's end, or a day after its start when the API leaves it out."""
    return end if end is not None and end > start else start + timedelta(days=1)


def token_samples(tokens: Tokens) -> list[Sample]:
    return [
        Sample.of(USAGE_TOKENS, USAGE_TOKENS_HELP, n, {"model": model, "token_type": kind})
        for model, kinds in sorted(tokens.items())
        for kind, n in sorted(kinds.items())
    ]


def estimate_samples(tokens: Tokens, table: PriceTable, logger: logging.Logger) -> list[Sample]:
    """Estimated cost per model; models without a price are left out, with a warning."""
    out: list[Sample] = []
    unpriced: list[str] = []
    for model, kinds in sorted(tokens.items()):
        try:
            cost = table.cost(model, kinds)
        except UnknownModelError:
            unpriced.append(model)
            continue
        labels = {
            "model": model,
            "currency": table.currency,
            "price_table_date": table.taken.isoformat(),
        }
        out.append(Sample.of(ESTIMATED_COST, ESTIMATED_COST_HELP, float(cost), labels))
    if unpriced:
        logger.warning(
            "no price for model(s) %s in the price table (taken %s): their cost is not "
            "estimated; add them under pricing.models or set pricing.default",
            ", ".join(unpriced),
            table.taken.isoformat(),
        )
    return out


def admin_key_error(exc: HttpStatusError, api: str) -> SourceError:
    """A clear message for 401/403: these APIs take only organization Admin keys."""
    return SourceError(
        f"{exc} -- the {api} needs an organization Admin key with access to usage and costs; "
        "a project or user API key is refused"
    )


class LlmProvider(Provider):
    """The costs of an LLM organization in every window asked (daily, weekly, monthly, fiscal,
    custom: all made of whole UTC days), and optionally its month's tokens and their estimate.

    A subclass names its API (for the admin-key hint), gives its auth
    ``headers``, how a bucket's start and end are read (:meth:`bounds`), the query
    of its cost and usage endpoints (:meth:`cost_request`, :meth:`tokens`) and how
    one result reads (:meth:`cost_of`, :meth:`dimensions`, :meth:`tokens_of`).
    """

    api: ClassVar[str]
    """The API named in the admin-key hint on a 401/403, e.g. ``"OpenAI Costs/Usage API"``."""
    cost_results: ClassVar[str]
    """What a cost result is called in errors, e.g. ``"costs"`` (``costs result 0: ...``)."""
    supported_periods = ALL_PERIODS
    """Daily buckets with explicit bounds say the spend of any window of whole UTC days;
    ``daily`` included: today's open bucket fills as the day goes (see :meth:`parse_costs`)."""
    reports_horizon = True

    def __init__(self, config: LlmSourceConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.log = log.getChild(context.source)
        self.http = context.http_client()
        self.table: PriceTable | None = None
        # The month (window start) and samples of the last successful usage request.
        self._usage: tuple[datetime, tuple[Sample, ...]] | None = None

    def close(self) -> None:
        self.http.close()

    @property
    @abstractmethod
    def headers(self) -> dict[str, str]:
        """The headers that carry the admin key."""

    @staticmethod
    @abstractmethod
    def bounds(bucket: dict[str, Any]) -> tuple[datetime, datetime]:
        """The daily ``bucket``'s start (inclusive) and end (exclusive), UTC."""

    def in_window(self, bucket: dict[str, Any], window: Window) -> bool:
        """Buckets are daily; keep those that start inside the window."""
        return window.start <= self.bounds(bucket)[0] < window.end

    @abstractmethod
    def cost_request(
        self, start: datetime, end: datetime | None
    ) -> tuple[str, list[tuple[str, str]]]:
        """The cost endpoint's URL and query for the daily buckets from ``start`` to ``end``
        (exclusive; None: up to now)."""

    @abstractmethod
    def tokens(self, window: Window) -> Tokens:
        """Month-to-date tokens per model (through :meth:`token_counts`)."""

    @abstractmethod
    def cost_of(self, item: dict[str, Any], where: str) -> tuple[Decimal, str]:
        """A cost result's amount and currency."""

    @abstractmethod
    def dimensions(self, item: dict[str, Any]) -> dict[str, str]:
        """A cost result's labels."""

    @abstractmethod
    def tokens_of(self, item: dict[str, Any], where: str) -> dict[str, int]:
        """A usage result's counts by token type."""

    def poll(self, windows: Sequence[Window]) -> PollResult:
        """The cost lines of every window that has started (their failure fails the poll)
        and, when enabled, the month's token samples (their failure does not: see
        :meth:`usage_samples`).  A window that starts after now has no spend yet: no lines."""
        started = [w for w in windows if w.start <= self.context.now()]
        if not started:
            return PollResult()
        try:
            costs = self.costs(started)
        except HttpStatusError as exc:
            if exc.status in (401, 403):
                raise admin_key_error(exc, self.api) from None
            raise
        month = monthly_window(started)
        if month is None or not (self.config.usage_tokens or self.config.estimate_cost):
            return costs
        return replace(costs, samples=self.usage_samples(month))

    def costs(self, windows: Sequence[Window]) -> PollResult:
        """The cost lines of ``windows`` from one request range covering them all (every
        page of it), their unsettled part and the horizon (:meth:`parse_costs`)."""
        url, params = self.cost_request(*request_range(windows, self.context.now()))
        found = pages(self.http, url, params, self.headers, self.config.max_pages)
        return self.parse_costs(found, windows, self.cost_results)

    def usage_samples(self, window: Window) -> tuple[Sample, ...]:
        """Token counts and estimates for ``window`` (the month).

        Token usage is an optional extra: when its request (or the price table)
        fails, a warning is logged and the samples of the last successful usage
        request of the same month are returned again (none in a new month), so
        the cost lines of the poll are kept and the source stays up.
        """
        try:
            tokens = self.tokens(window)
            samples: list[Sample] = []
            if self.config.usage_tokens:
                samples.extend(token_samples(tokens))
            if self.config.estimate_cost:
                if self.table is None:
                    self.table = self.config.price_table()
                samples.extend(estimate_samples(tokens, self.table, self.log))
        except (SourceError, PricingError) as exc:
            last = self._usage
            kept = last[1] if last is not None and last[0] == window.start else None
            hint = ""
            if isinstance(exc, HttpStatusError) and exc.status in (401, 403):
                hint = " (the Admin key may lack access to the usage API)"
            self.log.warning(
                "token usage not updated: %s%s; cost lines are still reported, %s",
                exc,
                hint,
                "token figures are those of the last successful usage request"
                if kept is not None
                else "no token figures until a usage request succeeds",
            )
            return kept or ()
        self._usage = (window.start, tuple(samples))
        return self._usage[1]

    def window_results(
        self, url: str, params: Sequence[tuple[str, str]], window: Window
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(index within its bucket, result)`` for every result of every page's
        buckets that start inside ``window``."""
        for data in pages(self.http, url, params, self.headers, self.config.max_pages):
            for bucket in data:
                if self.in_window(bucket, window):
                    yield from enumerate(results(bucket))

    def parse_costs(
        self, found: Iterable[list[dict[str, Any]]], windows: Sequence[Window], what: str
    ) -> PollResult:
        """The cost results of the pages' buckets, summed by currency and dimensions into
        lines per window (with its period; a bucket counts in every window it starts in,
        buckets in none are left out); ``what`` names the results in errors.

        The data horizon is the start of the oldest bucket still open (ending after
        now) or still filling (closed less than ``settle_lag`` ago: its costs are still
        arriving), or the end of the newest bucket when none is (the start of the
        earliest window when there is no bucket at all).  The lines of buckets from the
        horizon on are also returned as unsettled, per window.
        """
        now = self.context.now()
        settled_before = now - self.config.settle_lag
        buckets: list[tuple[datetime, datetime, list[tuple[Decimal, str, dict[str, str]]]]] = []
        for data in found:
            for bucket in data:
                start, end = self.bounds(bucket)
                if not any(w.start <= start < w.end for w in windows):
                    continue
                items = []
                for index, item in enumerate(results(bucket)):
                    amount, currency = self.cost_of(item, f"{what} result {index}")
                    items.append((amount, currency, self.dimensions(item)))
                buckets.append((start, end, items))
        filling = [start for start, end, _ in buckets if end > settled_before]
        if filling:  # the oldest bucket still open or filling: no figure from it on is final
            horizon = min(filling)
        else:
            earliest = min((w.start for w in windows), default=now)
            horizon = max((end for _, end, _ in buckets), default=earliest)
        horizon = min(horizon, now)
        lines: list[SpendLine] = []
        unsettled: list[SpendLine] = []
        for window in windows:
            sums, still_open = LineSum(), LineSum()
            for start, _, items in buckets:
                if not window.start <= start < window.end:
                    continue
                for amount, currency, dims in items:
                    sums.add(amount, currency, dims)
                    if start >= horizon:
                        still_open.add(amount, currency, dims)
            lines.extend(sums.lines(window.period))
            unsettled.extend(still_open.lines(window.period))
        return PollResult(lines=tuple(lines), unsettled=tuple(unsettled), data_through=horizon)

    def token_counts(
        self, url: str, params: Sequence[tuple[str, str]], window: Window, what: str
    ) -> Tokens:
        """The usage results in ``window``, summed by model (``"unknown"`` when it has
        none) and token type; ``what`` names the results in errors."""
        tally: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        for index, item in self.window_results(url, params, window):
            model = item.get("model") if isinstance(item.get("model"), str) else "unknown"
            kinds = tally[model]
            for kind, n in self.tokens_of(item, f"{what} result {index}").items():
                kinds[kind] += n
        return {m: dict(k) for m, k in tally.items()}
