"""The provider contract: a source's config model, its context, and :class:`Provider`.

A provider declares a pydantic config model (a :class:`SourceConfig`) and turns one poll
into a :class:`~budget_exporter.core.model.PollResult`.  docs/writing-a-provider.md.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import ByteSize, Duration, Name, Timeout
from budget_exporter.core.model import Period, PollResult, SpendLine, Window
from budget_exporter.providers._http import (
    DEFAULT_MAX_RESPONSE_SIZE,
    HttpClient,
    RequestStatus,
    require_tls_off_loopback,
)

ALL_PERIODS = frozenset(Period)


def checked_url(value: str) -> str:
    """``value`` if it names a host, any port is well formed and it holds no white space."""
    if any(c.isspace() for c in value):
        raise ValueError("contains white space (write a space in a URL as %20)")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not parts.hostname:
        raise ValueError("has no host")
    return value


def checked_base_url(value: str) -> str:
    """``value`` without a trailing slash; plain http only to a loopback host (keys travel)."""
    if any(c.isspace() for c in value):
        raise ValueError("contains white space (write a space in a URL as %20)")
    if not urlsplit(value).hostname:
        raise ValueError("must be an http(s) URL with a host")
    require_tls_off_loopback(value)
    return value.rstrip("/")


def label_value(value: Any, what: str) -> str:
    """A dimension's value from a JSON scalar (``None`` is empty, booleans are lower case);
    a list or an object is a configuration mistake, reported naming ``what``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        raise SourceError(f"{what} selected a JSON {type(value).__name__}, not a single value")
    return str(value)


class LineSum:
    """Sums amounts of identical (currency, dimensions) into spend lines, in a stable order;
    a dimension with an empty value is left out (daily buckets, series of a query)."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, tuple[tuple[str, str], ...]], Decimal] = defaultdict(Decimal)

    def add(self, amount: Decimal, currency: str, dims: Mapping[str, str]) -> None:
        key = tuple(sorted((k, v) for k, v in dims.items() if v))
        self._sums[(currency, key)] += amount

    def lines(self, period: Period) -> tuple[SpendLine, ...]:
        return tuple(
            SpendLine.of(period, amount, currency, dict(dims))
            for (currency, dims), amount in sorted(self._sums.items())
        )


BaseUrl = Annotated[str, Field(pattern=r"^https?://"), AfterValidator(checked_base_url)]
"""An API's base URL in a source's config: http(s), a host, no trailing slash."""


class SourceConfig(BaseModel):
    """Fields every source has; providers subclass this with their own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    provider: str
    poll_interval: Duration | None = None
    timeout: Timeout | None = None
    max_series: int | None = Field(default=None, ge=1)
    max_response_size: ByteSize = DEFAULT_MAX_RESPONSE_SIZE
    """The largest answer (decompressed) a request of this source may get."""
    max_data_age: Duration | None = None
    """How old this source's figures may be before the check API calls a budget
    counting it stale (see :meth:`budget_exporter.config.schema.Config.max_data_age`)."""

    secret_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields holding credentials: each also accepts a ``<field>_file`` twin,
    and their values are scrubbed from every log line, error and page."""
    multiline_fields: ClassVar[frozenset[str]] = frozenset()
    """Secret fields whose values may span lines (a request body); every other secret
    value ends up in a URL or a header, where CR or LF is a configuration error."""

    def billed_source(self) -> str | None:
        """The billed source this (metered) source counts after, if joined to one."""
        return None

    def dimension_names(self) -> frozenset[str] | None:
        """The dimensions every line of this source has, when the configuration fixes
        them (a meter's ``dimensions``); None when only its answers tell."""
        return None


@dataclass(frozen=True)
class ProviderContext:
    """What the core hands a provider: settings and services it may use."""

    source: str
    timeout: timedelta
    retries: int
    retry_backoff: timedelta
    max_retry_after: timedelta
    record_request: Callable[[RequestStatus], None]
    now: Callable[[], datetime]
    logger: logging.Logger
    horizon: Callable[[], datetime | None] = lambda: None
    """For a metered source joined to a billed one: the billed source's current
    data horizon (None until it has one); the metered figures start there."""
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE

    def http_client(self) -> HttpClient:
        """A fresh HTTP client wired to this source's timeout, retries and counters."""
        return HttpClient(
            timeout=self.timeout.total_seconds(),
            retries=self.retries,
            backoff=self.retry_backoff.total_seconds(),
            record=self.record_request,
            max_retry_after=self.max_retry_after.total_seconds(),
            max_response_size=self.max_response_size,
        )


class Provider(ABC):
    """One configured source of spend."""

    name: ClassVar[str]
    config_model: ClassVar[type[SourceConfig]] = SourceConfig
    default_poll_interval: ClassVar[timedelta | None] = None
    supported_periods: ClassVar[frozenset[Period]] = ALL_PERIODS
    accrues: ClassVar[bool] = True
    """Spend grows through the period (usage); False for fixed amounts (invoices,
    commitments), which are their own forecast instead of being projected."""
    reports_horizon: ClassVar[bool] = False
    """Its results carry ``data_through`` (see :meth:`has_horizon`)."""
    metered: ClassVar[bool] = False
    """Its figures are metered (current to the last scrape, polled often), not billed:
    its data goes stale after a few of its own poll intervals, not after hours."""
    max_polls_per_second: ClassVar[float | None] = None
    """At most this many polls of the provider's sources start per second, all sources
    together (None: no limit beyond ``global.poll_workers``).  Spreads the start-up and
    period-boundary bursts of many sources over time, within the API's rate limits."""

    def __init__(self, config: Any, context: ProviderContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def periods_for(cls, config: Any) -> frozenset[Period]:
        """Periods a source with ``config`` can report; budgets are checked against it."""
        return cls.supported_periods

    @classmethod
    def has_horizon(cls, config: Any) -> bool:
        """Whether a source with ``config`` reports a data horizon, so that a metered
        source can be joined to it (``metered_after``)."""
        return cls.reports_horizon

    @abstractmethod
    def poll(self, windows: Sequence[Window]) -> PollResult:
        """Fetch spend for each window (at least the monthly one is always asked).

        Raise :class:`~budget_exporter.core.errors.SourceError` (or anything else) on
        failure: the poller keeps the last good result and marks the source down.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients; called when the source is removed or reconfigured."""


def base_url_hint(config: SourceConfig, error: Exception) -> str:
    """A hint for an answer of 404 when the source's ``base_url`` lacks the path of the
    provider's default (``https://api.openai.com/v1`` set as ``https://proxy``): else ""."""
    if getattr(error, "status", None) != 404:
        return ""
    field = type(config).model_fields.get("base_url")
    configured = getattr(config, "base_url", None)
    if field is None or not isinstance(field.default, str) or not isinstance(configured, str):
        return ""
    path = urlsplit(field.default).path.rstrip("/")
    if not path or urlsplit(configured).path.rstrip("/").endswith(path):
        return ""
    return (
        f" (base_url {configured} has no {path} at its end, unlike the default "
        f"{field.default}: a proxy or mirror keeps the API's path)"
    )
