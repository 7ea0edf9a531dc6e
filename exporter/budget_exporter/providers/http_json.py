"""``http_json``: spend from any JSON usage endpoint, fields picked with JMESPath.

Reads ``GET`` or ``POST {url}`` (placeholders of the current window filled in, pages
followed through ``next_page``).  Emits::

    budget_source_cost_amount{period, currency, <configured dimensions>}
    budget_source_data_through_timestamp_seconds                  with data_through

Settings and an example: docs/providers-generic.md#http_json.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urljoin, urlsplit

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import AfterValidator, Field, model_validator

from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import Currency, Money
from budget_exporter.core.messages import first_line
from budget_exporter.core.model import (
    DIMENSION_NAME,
    Period,
    PollResult,
    SpendLine,
    Window,
    label_clash,
)
from budget_exporter.core.money import NUMBER, parse_amount
from budget_exporter.providers import register
from budget_exporter.providers._http import describe_url
from budget_exporter.providers.base import Provider, SourceConfig, checked_url, label_value

_RESERVED = frozenset({"source", "provider", "currency"})


def _compiles(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        reason = first_line(str(exc)) or type(exc).__name__
        raise ValueError(f"invalid JMESPath expression: {reason}") from None
    return expression


JMESPath = Annotated[str, AfterValidator(_compiles)]


class HttpJsonConfig(SourceConfig):
    url: Annotated[str, AfterValidator(checked_url)] = Field(pattern=r"^https?://")
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    amount: JMESPath
    lines: JMESPath | None = None
    dimensions: dict[str, JMESPath] = Field(default_factory=dict)
    currency: Currency | None = None
    currency_path: JMESPath | None = None
    amount_scale: Money = Field(default=Decimal(1), gt=0)
    period: Period = Period.MONTHLY
    next_page: JMESPath | None = None
    page_param: str | None = None
    max_pages: int = Field(default=50, ge=1, le=10_000)
    data_through: JMESPath | None = None
    """JMESPath to the data horizon on the (first) document: Unix seconds or an RFC 3339
    time; the endpoint's figures fully cover spend before it."""

    secret_fields = frozenset({"url", "headers", "params", "body"})
    multiline_fields = frozenset({"body"})

    @model_validator(mode="after")
    def _consistent(self) -> HttpJsonConfig:
        if (self.currency is None) == (self.currency_path is None):
            raise ValueError("set exactly one of currency or currency_path")
        if self.dimensions and self.lines is None:
            raise ValueError("dimensions need lines (a JMESPath to the list of items)")
        for label in self.dimensions:
            if not DIMENSION_NAME.match(label) or label in _RESERVED:
                raise ValueError(f"dimension {label!r} is not a usable label name")
            if label_clash(label):
                raise ValueError(f"dimension {label_clash(label)}")
        if self.body is not None and self.method != "POST":
            raise ValueError("body needs method: POST")
        return self


def _placeholders(window: Window) -> dict[str, str]:
    return {
        "{start}": window.start.date().isoformat(),
        "{end}": window.end.date().isoformat(),
        "{start_time}": window.start.isoformat().replace("+00:00", "Z"),
        "{end_time}": window.end.isoformat().replace("+00:00", "Z"),
        "{start_unix}": str(int(window.start.timestamp())),
        "{end_unix}": str(int(window.end.timestamp())),
    }


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for token, text in values.items():
            value = value.replace(token, text)
        return value
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def _same_origin(current: str, following: str) -> str:
    """``following``, if it is on the same scheme, host and port as ``current``.

    The configured headers (credentials) go with every page, so a page link
    must never lead them to another server or down to plain HTTP.
    """
    a, b = urlsplit(current), urlsplit(following)
    if (a.scheme, a.hostname, a.port) != (b.scheme, b.hostname, b.port):
        raise SourceError(
            f"next_page leads to {describe_url(following)}, not to the configured server; "
            "refusing to send credentials there"
        )
    return following


@register
class HttpJsonProvider(Provider):
    name = "http_json"
    config_model = HttpJsonConfig

    def __init__(self, config: HttpJsonConfig, context: Any) -> None:
        super().__init__(config, context)
        self.http = context.http_client()

    @classmethod
    def periods_for(cls, config: Any) -> frozenset[Period]:
        return frozenset({config.period})

    def close(self) -> None:
        self.http.close()

    def poll(self, windows: Sequence[Window]) -> PollResult:
        config: HttpJsonConfig = self.config
        window = next((w for w in windows if w.period == config.period), None)
        if window is None:
            return PollResult()
        lines: list[SpendLine] = []
        horizon: datetime | None = None
        for number, document in enumerate(self.pages(window)):
            page = self.parse(document, window.period, first_page=number == 0)
            lines.extend(page.lines)
            horizon = horizon or page.data_through
        return PollResult(lines=tuple(lines), data_through=horizon)

    @classmethod
    def has_horizon(cls, config: Any) -> bool:
        return config.data_through is not None

    def pages(self, window: Window) -> Any:
        config: HttpJsonConfig = self.config
        values = _placeholders(window)
        url = _fill(config.url, values)
        params = _fill(config.params, values)
        body = _fill(config.body, values)
        for _ in range(config.max_pages):
            kwargs: dict[str, Any] = {"headers": config.headers, "params": params}
            if config.method == "POST":
                kwargs["json"] = body
            document = self.http.json(config.method, url, **kwargs)
            yield document
            token = jmespath.search(config.next_page, document) if config.next_page else None
            if token in (None, "", False):
                return
            if config.page_param:
                params = {**params, config.page_param: str(token)}
            else:
                url = _same_origin(url, urljoin(url, str(token)))
                params = {}
        raise SourceError(f"more than max_pages ({config.max_pages}) pages")

    def parse(self, document: Any, period: Period, *, first_page: bool = True) -> PollResult:
        """One page as spend lines; the data horizon is read from the first page only."""
        config: HttpJsonConfig = self.config
        horizon = None
        if first_page and config.data_through is not None:
            horizon = _moment(jmespath.search(config.data_through, document), config)
        return PollResult(lines=tuple(self.lines(document, period)), data_through=horizon)

    def lines(self, document: Any, period: Period) -> list[SpendLine]:
        config: HttpJsonConfig = self.config
        scale = config.amount_scale
        if config.lines is None:
            amount = parse_amount(
                jmespath.search(config.amount, document), f"amount ({config.amount})"
            )
            return [SpendLine.of(period, amount * scale, self.currency(document))]
        items = jmespath.search(config.lines, document)
        if not isinstance(items, list):
            raise SourceError(f"lines ({config.lines}) did not select a list")
        out = []
        for index, item in enumerate(items):
            amount = parse_amount(
                jmespath.search(config.amount, item), f"lines[{index}] amount ({config.amount})"
            )
            dims = {
                label: label_value(jmespath.search(expr, item), f"lines[{index}] {label} ({expr})")
                for label, expr in config.dimensions.items()
            }
            out.append(SpendLine.of(period, amount * scale, self.currency(item, document), dims))
        return out

    def currency(self, node: Any, document: Any = None) -> str:
        """The fixed currency, or ``currency_path`` on the item, else on the whole document."""
        config: HttpJsonConfig = self.config
        if config.currency is not None:
            return config.currency
        value = jmespath.search(config.currency_path, node)
        if value is None and document is not None:
            value = jmespath.search(config.currency_path, document)
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value.strip()):
            raise SourceError(f"currency ({config.currency_path}) is not a 3-letter currency code")
        return value.strip().upper()


def _moment(value: Any, config: HttpJsonConfig) -> datetime:
    """The data horizon: Unix seconds (a number or numeric string) or an RFC 3339 time."""
    what = f"data_through ({config.data_through})"
    if isinstance(value, str) and not NUMBER.fullmatch(value.strip()):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise SourceError(f"{what} is not Unix seconds or an RFC 3339 time") from None
        if moment.tzinfo is None:
            raise SourceError(f"{what} has no time zone")
        return moment.astimezone(UTC)
    seconds = parse_amount(value, what)
    try:
        return datetime.fromtimestamp(float(seconds), UTC)
    except (OverflowError, OSError, ValueError):
        raise SourceError(f"{what} is not a plausible time") from None
