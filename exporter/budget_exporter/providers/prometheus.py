"""``prometheus``: metered spend from PromQL, through the Prometheus HTTP query API.

Reads ``GET {url}/api/v1/query`` (Prometheus, Thanos, Mimir, Cortex, VictoriaMetrics), the
query template filled with the window its figures must cover.  Emits metered spend lines, and gauges of what the query answered::

    budget_source_cost_amount{period, currency, <configured dimensions>}
    budget_source_cost_amount{period, currency, <dimensions>, model, token_type}   mode: tokens
    budget_source_metered_series{period}
    budget_source_unpriced_tokens{period, model, token_type}                      mode: tokens

Each window's query fails on its own (a ``FailedWindow`` of the result); the poll fails only
when every window does.  Placeholders, token pricing, failures and joining a billed source:
docs/realtime.md.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from budget_exporter.core.durations import format_duration, parse_duration
from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import ConfigPath, Currency, Duration, Name
from budget_exporter.core.messages import one_line, shorten
from budget_exporter.core.model import (
    DIMENSION_NAME,
    FailedWindow,
    Period,
    PollResult,
    Sample,
    SpendLine,
    Window,
    label_clash,
)
from budget_exporter.core.money import AmountError, Problem, read_amount
from budget_exporter.core.redaction import basic_auth_forms, redactor
from budget_exporter.core.secretfiles import SecretFileError, read_secret_file, secrets_of
from budget_exporter.pricing import TOKEN_TYPES, PriceTable, PricingConfig, UnknownModelError
from budget_exporter.providers import register
from budget_exporter.providers._http import HttpStatusError, describe_url, is_loopback
from budget_exporter.providers.base import (
    LineSum,
    Provider,
    ProviderContext,
    SourceConfig,
    checked_url,
)

QUERY_PATH = "/api/v1/query"
FLAGS_PATH = "/api/v1/status/flags"
RETENTION_FLAG = "storage.tsdb.retention.time"
RETENTION_CHECKED_FROM = timedelta(days=2)
"""Queries reaching back less than this (a meter joined to a daily bill) are not checked
against the server's retention: every backend keeps that much."""
RETENTION_RELEARNED = timedelta(days=1)
DEFAULT_RETENTION = timedelta(days=15)
"""Prometheus' retention when neither a time nor a size is set."""
TENANT_HEADER = "X-Scope-OrgID"
Answer = list[tuple[dict[str, str], Decimal]]
"""``(labels, value)`` of each series of a query's answer."""
_RESERVED = frozenset({"source", "provider", "currency"})
_PLACEHOLDERS = ("{range}", "{start_unix}", "{end_unix}")
CACHE_TOKEN_TYPES = frozenset({"cached_input", "cache_write", "cache_write_1h"})
_MAX_WARNINGS_SHOWN = 3
MAX_RETRIES = 1
MAX_POLLS_PER_SECOND = 10.0
"""Polls of all ``prometheus`` sources together that may start per second."""
SERIES = "budget_source_metered_series"
SERIES_HELP = (
    "Series the meter's query answered with, by period: 0 means it matched nothing (a "
    "renamed metric or label), and counts as no spend."
)
UNPRICED = "budget_source_unpriced_tokens"
UNPRICED_HELP = (
    "Tokens of a mode: tokens meter that the price table cannot price (unknown model), by "
    "period, model and token type: not counted as spend."
)


def _base_url(url: str) -> str:
    parts = urlsplit(checked_url(url))
    if parts.query or parts.fragment:
        raise ValueError("must be the server's base URL, without a query string")
    path = parts.path.rstrip("/")
    if path.endswith(QUERY_PATH):
        raise ValueError(f"must be the base URL; the exporter adds {QUERY_PATH}")
    return url.rstrip("/")


class TokenLabels(BaseModel):
    """``tokens:``: how a token-mode answer names models and token types."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_label: str = Field(default="model", min_length=1)
    token_type_label: str = Field(default="token_type", min_length=1)
    token_types: dict[str, str] = Field(
        default_factory=lambda: (
            {t: t for t in TOKEN_TYPES} | {"prompt": "input", "completion": "output"}
        )
    )
    """Label value -> price-table token type; any other value fails the poll
    (never a silent zero)."""
    input_includes_cached: bool = False
    """The ``input`` series count cached and cache-write tokens too (OpenTelemetry GenAI's
    input tokens, OpenAI's ``prompt_tokens``): the cache series answered beside them are
    taken out of ``input`` before pricing."""

    @model_validator(mode="after")
    def _known_types(self) -> TokenLabels:
        for value, kind in self.token_types.items():
            if kind not in TOKEN_TYPES:
                raise ValueError(
                    f"token_types[{value!r}]: {kind!r} is not a token type "
                    f"({', '.join(TOKEN_TYPES)})"
                )
        return self


class PrometheusConfig(SourceConfig):
    url: Annotated[str, AfterValidator(_base_url)] = Field(pattern=r"^https?://")
    query: str = Field(min_length=1, max_length=20_000)
    mode: Literal["cost", "tokens"] = "cost"
    currency: Currency | None = None
    dimensions: dict[str, str] = Field(default_factory=dict)
    """FOCUS dimension name -> label of the answer's series."""
    tokens: TokenLabels = TokenLabels()
    pricing: PricingConfig | None = None
    metered_after: Name | None = None
    """A billed source: count this source's spend only after that source's data horizon."""
    duplicates_query: str | None = Field(default=None, min_length=1, max_length=20_000)
    """A PromQL check that answers no series while the counters are not duplicated (e.g.
    ``count without (replica) (litellm_spend_metric_total) > 1``); any series it answers
    fails the poll with them in the error.  May use the window placeholders."""
    retention: Duration | None = None
    """How far back the server keeps the raw counters (Prometheus' retention, Mimir's
    ``max_query_lookback``, Thanos' raw retention); unset: asked of Prometheus
    (``/api/v1/status/flags``) once a day, unknown elsewhere.  A query reaching back
    further fails the poll: ``increase()`` would silently cover less."""
    tenant: str | None = Field(default=None, min_length=1, max_length=1024)
    """Sent as ``X-Scope-OrgID`` (Mimir, Cortex, Loki-style multi-tenancy)."""
    username: str | None = Field(default=None, min_length=1)
    password: str | None = None
    bearer_token: str | None = Field(default=None, min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    ca_file: ConfigPath | None = None
    password_file: str | None = None
    bearer_token_file: str | None = None
    headers_file: str | None = None
    """Set by the loader from ``<secret>_file`` (the value above is the file's content at
    load): these files are read again at every poll, so rotated credentials (Kubernetes'
    projected service-account tokens) are used without a reload."""

    secret_fields = frozenset({"password", "bearer_token", "headers"})

    def billed_source(self) -> str | None:
        return self.metered_after

    def dimension_names(self) -> frozenset[str]:
        extra = {"model", "token_type"} if self.mode == "tokens" else set()
        return frozenset(self.dimensions) | extra

    @model_validator(mode="after")
    def _consistent(self) -> PrometheusConfig:
        if self.mode == "cost":
            if self.currency is None:
                raise ValueError("currency is required (the currency the query's amounts are in)")
            if self.pricing is not None:
                raise ValueError("pricing is only used with mode: tokens")
        elif self.currency is not None:
            table = self.price_table()
            if self.currency != table.currency:
                raise ValueError(
                    f"currency {self.currency} differs from the price table's {table.currency}"
                )
        if not any(p in self.query for p in _PLACEHOLDERS):
            raise ValueError(
                "query must use {range} (or {start_unix}) so that it covers the budget's window"
            )
        for name, label in self.dimensions.items():
            if not DIMENSION_NAME.match(name) or name in _RESERVED:
                raise ValueError(f"dimension {name!r} is not a usable label name")
            if label_clash(name):
                raise ValueError(f"dimension {label_clash(name)}")
            if not label:
                raise ValueError(f"dimension {name!r} names no label")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password (or password_file)")
        if self.username is not None and self.bearer_token is not None:
            raise ValueError("set either basic auth (username/password) or bearer_token, not both")
        credentials = self.password or self.bearer_token or self.headers
        host = urlsplit(self.url).hostname
        if credentials and urlsplit(self.url).scheme == "http" and not is_loopback(host):
            raise ValueError(
                "url must use https when credentials are set (plain http only to a loopback "
                "address)"
            )
        if self.metered_after is not None and self.metered_after == self.name:
            raise ValueError("metered_after must name another source")
        return self

    def price_table(self) -> PriceTable:
        return (self.pricing or PricingConfig()).table()


@dataclass(frozen=True)
class Credentials:
    """What a poll authenticates with (secrets: never logged)."""

    password: str | None = field(repr=False)
    bearer_token: str | None = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)


def evaluation_timeout(timeout: timedelta) -> str:
    """The ``timeout`` parameter sent with a query: nine tenths of the source's timeout, so
    the server gives up on the evaluation (and says so) before the client stops waiting."""
    return f"{max(100, int(timeout.total_seconds() * 900))}ms"


def promql_duration(seconds: float) -> str:
    """Whole seconds, at least one: ``3600.2`` -> ``"3601s"``."""
    return f"{max(1, math.ceil(seconds))}s"


def fill(template: str, start: datetime, end: datetime) -> str:
    """``template`` with the window placeholders replaced (PromQL's own braces are kept)."""
    values = {
        "{range}": promql_duration((end - start).total_seconds()),
        "{start_unix}": str(int(start.timestamp())),
        "{end_unix}": str(int(end.timestamp())),
    }
    for token, text in values.items():
        template = template.replace(token, text)
    return template


def metered_start(window: Window, horizon: datetime | None, now: datetime) -> datetime:
    """Where the metered figures of ``window`` start: the window start, or the billed
    horizon when that is later (never after now)."""
    start = window.start if horizon is None else max(window.start, horizon)
    return min(start, now)


@register
class PrometheusProvider(Provider):
    name = "prometheus"
    config_model = PrometheusConfig
    default_poll_interval = timedelta(seconds=30)
    metered = True
    max_polls_per_second = MAX_POLLS_PER_SECOND

    def __init__(self, config: PrometheusConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        # One retry at most: a Prometheus that timed out or answered 503 is overloaded, and
        # every retry adds a whole query to its load.
        self.http = replace(context, retries=min(context.retries, MAX_RETRIES)).http_client()
        self.table: PriceTable | None = None
        self._unpriced_warned: set[str] = set()
        self._retention: tuple[datetime, timedelta | None] | None = None
        """When the server's retention was last asked for, and its answer."""

    def close(self) -> None:
        self.http.close()

    def credentials(self) -> Credentials:
        """The credentials for this poll: each ``_file`` read again (a rotated token is
        used at once); SourceError, naming the file but no secret, if one is unusable."""
        config: PrometheusConfig = self.config
        found = Credentials(config.password, config.bearer_token, config.headers)
        secrets: set[str] = set()
        for name in ("password", "bearer_token", "headers"):
            path = getattr(config, f"{name}_file")
            if path is None:
                continue
            try:
                value = read_secret_file(path, mapping=name == "headers")
            except SecretFileError as exc:
                raise SourceError(f"{name}_file: {exc}") from None
            if name == "bearer_token" and not value:
                raise SourceError(f"bearer_token_file: {path} is empty")
            if isinstance(value, dict) and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise SourceError(f"headers_file: {path} must map header names to strings")
            secrets |= secrets_of(value)
            found = replace(found, **{name: value})
        if config.username is not None and found.password is not None:
            secrets |= basic_auth_forms(config.username, found.password)  # the header's base64
        if secrets:
            redactor.set_owned(f"source:{config.name}", secrets)
        return found

    def request_headers(self, credentials: Credentials) -> dict[str, str]:
        config: PrometheusConfig = self.config
        headers = {"Accept": "application/json"}
        if config.tenant is not None:
            headers[TENANT_HEADER] = config.tenant
        if credentials.bearer_token is not None:
            headers["Authorization"] = f"Bearer {credentials.bearer_token}"
        headers.update(credentials.headers)
        return headers

    def poll(self, windows: Sequence[Window]) -> PollResult:
        """Each window's query apart: a window that fails (a month's query timing out, a
        range beyond the server's retention) is a :class:`FailedWindow` of the result and
        the others still count; only when every window fails does the poll fail."""
        config: PrometheusConfig = self.config
        now = self.context.now()
        horizon = self.context.horizon() if config.metered_after else None
        credentials = self.credentials()
        lines: list[SpendLine] = []
        samples: list[Sample] = []
        failed: list[FailedWindow] = []
        first_error: SourceError | None = None
        widest: tuple[datetime, datetime] | None = None
        answers: dict[tuple[str, datetime], Answer | SourceError] = {}
        for window in windows:
            end = min(now, window.end)
            start = metered_start(window, horizon, end)
            try:
                answer = self.window_answer(window, start, end, answers, credentials)
                parsed = self.parse(answer, window.period)
            except SourceError as exc:
                first_error = first_error or exc
                failed.append(FailedWindow(window.period, one_line(str(exc))))
                continue
            if widest is None or start < widest[0]:
                widest = (start, end)
            lines.extend(parsed.lines)
            period = {"period": str(window.period)}
            samples.append(Sample.of(SERIES, SERIES_HELP, len(answer), period))
            samples.extend(parsed.samples)
        if first_error is not None and len(failed) == len(windows):
            raise first_error
        if config.duplicates_query is not None and widest is not None:
            # Over the windows that answered: their figures are the ones served.
            self.check_duplicates(fill(config.duplicates_query, *widest), widest[1], credentials)
        return PollResult(
            lines=tuple(lines),
            samples=tuple(samples),
            polled_at=now,
            metered_from=horizon,
            metered=True,
            failed_windows=tuple(failed),
        )

    def window_answer(
        self,
        window: Window,
        start: datetime,
        end: datetime,
        answers: dict[tuple[str, datetime], Answer | SourceError],
        credentials: Credentials,
    ) -> Answer:
        """The answer to ``window``'s query; SourceError if it failed or reaches back beyond
        the server's retention.  ``answers`` holds this poll's answers (and failures) by query:
        windows that both start at the bill's horizon ask the same, once."""
        promql = fill(self.config.query, start, end)
        found = answers.get((promql, end))
        if found is None:
            try:
                found = self.query(promql, end, credentials)
            except SourceError as exc:
                found = exc
            answers[(promql, end)] = found
        if isinstance(found, SourceError):
            raise found
        if end - start >= RETENTION_CHECKED_FROM:  # once the server has answered at all
            self.check_retention(window, start, end, credentials)
        return found

    def check_duplicates(self, promql: str, at: datetime, credentials: Credentials) -> None:
        """SourceError naming the series ``duplicates_query`` answers, if any."""
        found = self.query(promql, at, credentials)
        if not found:
            return
        shown = ", ".join(
            f"{_series(labels)} {value}" for labels, value in found[:_MAX_WARNINGS_SHOWN]
        )
        more = (
            f" and {len(found) - _MAX_WARNINGS_SHOWN} more"
            if len(found) > _MAX_WARNINGS_SHOWN
            else ""
        )
        raise SourceError(
            f"duplicates_query found duplicated counters ({shown}{more}): sum() would count "
            "them more than once; deduplicate them (Thanos replica labels, Mimir HA "
            "deduplication, a multiprocess directory for LiteLLM's workers) -- see "
            "docs/realtime.md"
        )

    def check_retention(
        self, window: Window, start: datetime, end: datetime, credentials: Credentials
    ) -> None:
        """SourceError when the server keeps less than the window's range: the query's
        answer would silently cover only the part it still has."""
        kept, where = self.config.retention, "retention"
        if kept is None:
            kept, where = self.server_retention(end, credentials), RETENTION_FLAG
        if kept is None or end - kept <= start:
            return
        raise SourceError(
            f"the {window.period} window's query reaches back to {start:%Y-%m-%dT%H:%M:%SZ}, "
            f"but the server keeps {format_duration(kept)} of samples ({where}): increase() "
            "would cover less and undercount. Keep the counters longer (Thanos, Mimir), "
            "shorten the budget's period, or join this meter to a bill (metered_after)"
        )

    def server_retention(self, now: datetime, credentials: Credentials) -> timedelta | None:
        """Prometheus' ``storage.tsdb.retention.time``, asked once a day; None where the
        server does not say (Thanos, Mimir and VictoriaMetrics have no such flag)."""
        if self._retention is not None and now - self._retention[0] < RETENTION_RELEARNED:
            return self._retention[1]
        config: PrometheusConfig = self.config
        kwargs: dict[str, Any] = {"headers": self.request_headers(credentials)}
        if config.username is not None:
            kwargs["auth"] = (config.username, credentials.password)
        if config.ca_file is not None:
            kwargs["verify"] = config.ca_file
        kept: timedelta | None = None
        try:
            document = self.http.json("GET", config.url + FLAGS_PATH, **kwargs)
            data = document.get("data") if isinstance(document, dict) else None
            kept = _retention_of(data) if isinstance(data, dict) else None
        except SourceError as exc:
            self.context.logger.debug("server retention unknown: %s", exc)
        self._retention = (now, kept)
        return kept

    def query(self, promql: str, at: datetime, credentials: Credentials | None = None) -> Answer:
        """``(labels, value)`` of each series of the answer to ``promql`` at ``at``."""
        config: PrometheusConfig = self.config
        if credentials is None:
            credentials = self.credentials()
        url = config.url + QUERY_PATH
        kwargs: dict[str, Any] = {
            "params": {
                "query": promql,
                "time": f"{at.timestamp():.3f}",
                "timeout": evaluation_timeout(self.context.timeout),
            },
            "headers": self.request_headers(credentials),
        }
        if config.username is not None:
            kwargs["auth"] = (config.username, credentials.password)
        if config.ca_file is not None:
            kwargs["verify"] = config.ca_file
        try:
            document = self.http.json("GET", url, **kwargs)
        except HttpStatusError as exc:
            raise _api_error(exc, url) from None
        return parse_answer(document)

    def parse(self, answer: Answer, period: Period) -> PollResult:
        """The series of an answer as spend lines: amounts, or (``mode: tokens``) token
        counts priced with the price table."""
        config: PrometheusConfig = self.config
        sums = LineSum()
        if config.mode == "cost":
            assert config.currency is not None
            for labels, value in answer:
                sums.add(value, config.currency, self.dimensions(labels))
            return PollResult(lines=sums.lines(period))
        if self.table is None:
            self.table = config.price_table()
        unpriced: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        priced = False
        problem = ""
        for dims, model, kind, value in self.token_counts(answer):
            try:
                cost = self.table.cost(model, {kind: value})
            except UnknownModelError as exc:
                unpriced[(model, kind)] += value
                problem = str(exc)
                continue
            priced = True
            sums.add(cost, self.table.currency, {**dims, "model": model, "token_type": kind})
        counted = {key: n for key, n in unpriced.items() if n > 0}
        if counted and not priced:
            # Nothing could be priced: a zero here would be silent, so the poll fails.
            raise SourceError(f"{problem}; add it under pricing.models or set pricing.default")
        self.warn_unpriced(sorted({model for model, _ in counted}))
        samples = [
            Sample.of(
                UNPRICED,
                UNPRICED_HELP,
                float(n),
                {"period": str(period), "model": model, "token_type": kind},
            )
            for (model, kind), n in sorted(unpriced.items())
        ]
        return PollResult(lines=sums.lines(period), samples=tuple(samples))

    def token_counts(self, answer: Answer) -> list[tuple[dict[str, str], str, str, Decimal]]:
        """``(dimensions, model, token type, count)`` of the answer's series, summed; with
        ``tokens.input_includes_cached`` the cache tokens answered for the same model and
        dimensions are taken out of ``input`` (never below zero), so each is priced once."""
        counts: dict[tuple[tuple[tuple[str, str], ...], str, str], Decimal] = defaultdict(Decimal)
        for labels, value in answer:
            model, kind = self.token_labels(labels)
            if value < 0:
                raise SourceError(f"series {_series(labels)}: negative token count")
            dims = tuple(sorted(self.dimensions(labels).items()))
            counts[(dims, model, kind)] += value
        if self.config.tokens.input_includes_cached:
            for (dims, model, kind), value in list(counts.items()):
                if kind in CACHE_TOKEN_TYPES and (dims, model, "input") in counts:
                    left = counts[(dims, model, "input")] - value
                    counts[(dims, model, "input")] = max(left, Decimal(0))
        return [(dict(dims), model, kind, n) for (dims, model, kind), n in counts.items()]

    def warn_unpriced(self, models: list[str]) -> None:
        """Log once per model (for this configuration) the models whose tokens are left
        out of the spend for want of a price."""
        new = [m for m in models if m not in self._unpriced_warned]
        if not new:
            return
        self._unpriced_warned.update(new)
        assert self.table is not None
        self.context.logger.warning(
            "no price for model(s) %s in the price table (taken %s): their tokens are not "
            "counted as spend (budget_source_unpriced_tokens); add them under pricing.models "
            "or set pricing.default",
            ", ".join(new),
            self.table.taken.isoformat(),
        )

    def dimensions(self, labels: Mapping[str, str]) -> dict[str, str]:
        config: PrometheusConfig = self.config
        return {name: labels.get(label, "") for name, label in config.dimensions.items()}

    def token_labels(self, labels: Mapping[str, str]) -> tuple[str, str]:
        spec = self.config.tokens
        model = labels.get(spec.model_label, "")
        if not model:
            raise SourceError(
                f"series {_series(labels)} has no {spec.model_label!r} label "
                "(tokens.model_label): keep it in the query's by (...)"
            )
        value = labels.get(spec.token_type_label, "")
        kind = spec.token_types.get(value)
        if kind is None:
            known = ", ".join(sorted(spec.token_types))
            raise SourceError(
                f"series {_series(labels)}: token type {value!r} (label "
                f"{spec.token_type_label!r}) is not in tokens.token_types ({known})"
            )
        return model, kind


def parse_answer(document: Any) -> Answer:
    """The series of a Prometheus query API answer; SourceError for an error,
    a partial answer (``warnings``) or a result that is not an instant vector or scalar."""
    if not isinstance(document, dict):
        raise SourceError("the query API answered something that is not a JSON object")
    if document.get("status") != "success":
        raise SourceError(f"the query failed: {_error_text(document)}")
    warnings = document.get("warnings")
    if warnings:
        shown = "; ".join(str(w) for w in list(warnings)[:_MAX_WARNINGS_SHOWN])
        raise SourceError(f"partial answer (Prometheus warnings): {shown}")
    data = document.get("data")
    if not isinstance(data, dict):
        raise SourceError("the query API's answer has no data object")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return [({}, _sample_value(result, "the scalar"))]
    if kind != "vector":
        raise SourceError(
            f"the query returned a {kind}, not an instant vector: wrap range selectors in "
            "increase(...[{range}]) or sum_over_time(...)"
        )
    if not isinstance(result, list):
        raise SourceError("the query API's data.result is not a list")
    series: Answer = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("metric", {}), dict):
            raise SourceError("a series of the answer is not an object with metric labels")
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        series.append((labels, _sample_value(item.get("value"), f"series {_series(labels)}")))
    return series


def _sample_value(sample: Any, where: str) -> Decimal:
    """The value of ``[<unix time>, "<value>"]``; NaN, infinities and absurd sizes refused."""
    if not isinstance(sample, list) or len(sample) != 2 or not isinstance(sample[1], str):
        raise SourceError(f'{where}: value is not a [time, "number"] pair')
    text = sample[1].strip()
    try:
        return read_amount(text)
    except AmountError as exc:
        if exc.problem in (Problem.NAN, Problem.INFINITE):
            raise SourceError(
                f"{where}: value is {text} (no data, or a division by zero?)"
            ) from None
        if exc.problem is Problem.TOO_LARGE:
            raise SourceError(f"{where}: value is not a plausible amount") from None
        raise SourceError(f"{where}: value is not a number") from None


def _retention_of(flags: Mapping[str, Any]) -> timedelta | None:
    """The retention Prometheus' flags say: the time flag, or its 15-day default when neither
    a time nor a size is set (the flags then show ``0s`` and ``0B``); None when only a size
    bounds it, or the flags are not Prometheus'."""
    value = flags.get(RETENTION_FLAG)
    if not isinstance(value, str):
        return None
    kept = _prometheus_duration(value)
    if kept is not None:
        return kept
    legacy = flags.get("storage.tsdb.retention")
    legacy_kept = _prometheus_duration(legacy) if isinstance(legacy, str) else None
    if legacy_kept is not None:
        return legacy_kept
    size = str(flags.get("storage.tsdb.retention.size", "0B")).strip()
    return DEFAULT_RETENTION if size in {"0", "0B"} else None


def _prometheus_duration(text: str) -> timedelta | None:
    """A Prometheus duration (``15d``, ``1y``, ``2w3d``); None for ``0s`` or unreadable."""
    years, _, rest = text.strip().rpartition("y") if "y" in text else ("", "", text.strip())
    try:
        total = timedelta(days=365 * int(years)) if years else timedelta(0)
        if rest:
            total += parse_duration(rest)
    except ValueError:
        return None
    return total if total > timedelta(0) else None


def _series(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _error_text(document: Mapping[str, Any]) -> str:
    kind = document.get("errorType")
    error = document.get("error")
    text = str(error) if error else "no error message"
    text = shorten(text)
    return f"{kind}: {text}" if kind else text


def _api_error(exc: HttpStatusError, url: str) -> SourceError:
    """An HTTP error, explained by the API's own error JSON when it sent one."""
    if b"org id" in exc.body.lower():  # Mimir/Cortex without a tenant: plain text
        return SourceError(
            f"{exc} (set tenant: the Mimir/Cortex tenant ID, sent as {TENANT_HEADER})"
        )
    try:
        document = json.loads(exc.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return exc
    if not isinstance(document, dict) or "error" not in document:
        return exc
    hint = ""
    if exc.status in (401, 403):
        hint = " (check username/password, bearer_token or headers)"
    return SourceError(
        f"GET {describe_url(url)} answered HTTP {exc.status}: {_error_text(document)}{hint}"
    )
