"""Exchange-rate sources (plumbing of ``static_rates``, ``file_rates``, ``ecb_rates`` and
``json_rates``, each registered by its own module): budgets in one currency count lines in others at their rates.

A rates source is polled like any source (its own interval, retries, ``budget_source_up``)
but reports no spend: its poll returns :class:`~budget_exporter.core.model.Rate` values,
each with the day it was published.  Four providers:

* ``static_rates``: a table in the configuration (fixed internal rates);
* ``file_rates``: a YAML or JSON file, read again whenever it changes;
* ``ecb_rates``: the European Central Bank's daily euro reference rates (its XML);
* ``json_rates``: any JSON endpoint, the rates picked with JMESPath.

Each emits ``budget_exchange_rate{base, quote, date}``.  How budgets use the rates
(which one, when one is stale): docs/currencies.md.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any

import jmespath
import yaml
from pydantic import AfterValidator, Field, model_validator

from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import ConfigPath, Currency, Duration, Money
from budget_exporter.core.model import PollResult, Rate, Sample, Window
from budget_exporter.core.money import parse_amount
from budget_exporter.providers.base import Provider, SourceConfig, checked_url
from budget_exporter.providers.http_json import JMESPath

RATE = "budget_exchange_rate"
RATE_DOC = (
    "An exchange rate a rates source published: one unit of base in quote currency, "
    "with the day it applies to (label date)."
)
ECB_DAILY = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-daily.xml"
_CODE = re.compile(r"^[A-Z]{3}$")
_ECB = "{http://www.ecb.int/vocabulary/2002-08-01/eurofxref}"


class RatesConfig(SourceConfig):
    """What every rates source has."""

    max_age: Duration = timedelta(days=4)
    """A rate whose day is longer ago than this is stale: budgets leave the lines it would
    convert out (the ECB publishes on working days only: a long weekend is 4 days)."""


def _rate(base: str, quote: str, value: Any, day: date, where: str) -> Rate:
    """One rate, checked; ``day`` kept as its midnight UTC."""
    base, quote = base.strip().upper(), quote.strip().upper()
    for code in (base, quote):
        if not _CODE.match(code):
            raise SourceError(f"{where}: {code[:16]!r} is not a 3-letter currency code")
    amount = parse_amount(value, f"{where} {base}/{quote}")
    if amount <= 0:
        raise SourceError(f"{where}: the rate {base}/{quote} is not positive")
    return Rate(base, quote, amount, datetime.combine(day, time(), UTC))


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), UTC)


def _day(value: Any, where: str) -> date:
    """A day from ``YYYY-MM-DD`` (or a full time) or Unix seconds."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC).date()
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise SourceError(f"{where}: {str(value)[:32]!r} is not a date") from None


def rates_of(table: Mapping[str, Any], base: str, day: date, where: str) -> tuple[Rate, ...]:
    """``{quote: value}`` as rates from ``base``."""
    if not isinstance(table, Mapping) or not table:
        raise SourceError(f"{where}: no rates (expected an object of currency: rate)")
    return tuple(_rate(base, str(quote), value, day, where) for quote, value in table.items())


def samples(rates: Sequence[Rate]) -> tuple[Sample, ...]:
    return tuple(
        Sample.of(
            RATE,
            RATE_DOC,
            float(r.value),
            {
                "base": r.base,
                "quote": r.quote,
                "date": "" if r.day is None else f"{r.day:%Y-%m-%d}",
            },
        )
        for r in rates
    )


class _RatesProvider(Provider):
    """Reports rates, never spend: budgets do not count its lines (it has none)."""

    supplies_rates = True
    default_poll_interval = timedelta(hours=1)

    def poll(self, windows: Sequence[Window]) -> PollResult:
        rates = self.rates()
        return PollResult(rates=rates, samples=samples(rates), polled_at=self.context.now())

    def rates(self) -> tuple[Rate, ...]:
        raise NotImplementedError


# -- static_rates ------------------------------------------------------------------------


class StaticRatesConfig(RatesConfig):
    rates: dict[Currency, dict[Currency, Annotated[Money, Field(gt=0)]]] = Field(min_length=1)
    """``{EUR: {USD: 1.085}}``: one euro is 1.085 US dollars."""
    date: dt.date | None = None
    """The day the table applies from; unset, the rates are fixed and never stale."""


class StaticRatesProvider(_RatesProvider):
    name = "static_rates"
    config_model = StaticRatesConfig

    def rates(self) -> tuple[Rate, ...]:
        config: StaticRatesConfig = self.config
        return tuple(
            Rate(base, quote, value, _midnight(config.date))
            for base, quotes in config.rates.items()
            for quote, value in quotes.items()
        )


# -- file_rates --------------------------------------------------------------------------


class FileRatesConfig(RatesConfig):
    path: ConfigPath
    """A YAML or JSON file: ``{base: EUR, date: 2026-12-04, rates: {USD: 1.085, ...}}``."""
    poll_interval: Duration | None = timedelta(minutes=1)


class FileRatesProvider(_RatesProvider):
    name = "file_rates"
    config_model = FileRatesConfig

    def __init__(self, config: FileRatesConfig, context: Any) -> None:
        super().__init__(config, context)
        self._seen: tuple[int, int] | None = None
        self._rates: tuple[Rate, ...] = ()

    def rates(self) -> tuple[Rate, ...]:
        config: FileRatesConfig = self.config
        try:
            info = os.stat(config.path)
        except OSError as exc:
            raise SourceError(f"cannot read {config.path}: {exc.strerror or exc}") from None
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._seen:  # read again only when the file changed
            self._rates = self.read(config.path)
            self._seen = stamp
        return self._rates

    @staticmethod
    def read(path: str) -> tuple[Rate, ...]:
        try:
            with open(path, encoding="utf-8") as handle:
                document = yaml.safe_load(handle)
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (yaml.YAMLError, UnicodeDecodeError):
            raise SourceError(f"{path} is not valid YAML or JSON") from None
        if not isinstance(document, Mapping):
            raise SourceError(f"{path}: expected base, date and rates")
        missing = [key for key in ("base", "date", "rates") if key not in document]
        if missing:
            raise SourceError(f"{path}: missing {', '.join(missing)}")
        day = _day(document["date"], path)
        return rates_of(document["rates"], str(document["base"]), day, path)


# -- ecb_rates ---------------------------------------------------------------------------


def parse_ecb(body: bytes) -> tuple[Rate, ...]:
    """The ECB's ``eurofxref-daily.xml``: ``Cube time=`` and its ``Cube currency= rate=``."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise SourceError("the ECB answer declares a DTD or entities; refused")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise SourceError(f"the ECB answer is not XML ({exc})") from None
    found: list[Rate] = []
    for day_cube in root.iter(f"{_ECB}Cube"):
        when = day_cube.get("time")
        if when is None:
            continue
        day = _day(when, "ECB Cube time")
        for cube in day_cube.findall(f"{_ECB}Cube"):
            currency, rate = cube.get("currency"), cube.get("rate")
            if currency is None or rate is None:
                raise SourceError("an ECB Cube has no currency or rate")
            found.append(_rate("EUR", currency, rate, day, "ECB"))
        break  # the daily file has one day; a history file's first is the newest
    if not found:
        raise SourceError("the ECB answer has no rates (no Cube with a time)")
    return tuple(found)


class EcbRatesConfig(RatesConfig):
    url: Annotated[str, AfterValidator(checked_url)] = Field(
        default=ECB_DAILY, pattern=r"^https?://"
    )


class EcbRatesProvider(_RatesProvider):
    name = "ecb_rates"
    config_model = EcbRatesConfig

    def __init__(self, config: EcbRatesConfig, context: Any) -> None:
        super().__init__(config, context)
        self.http = context.http_client()

    def close(self) -> None:
        self.http.close()

    def rates(self) -> tuple[Rate, ...]:
        response = self.http.request("GET", self.config.url, headers={"Accept": "text/xml"})
        return parse_ecb(response.content)


# -- json_rates --------------------------------------------------------------------------


class JsonRatesConfig(RatesConfig):
    url: Annotated[str, AfterValidator(checked_url)] = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    base: Currency | None = None
    """The base currency of every rate; or ``base_path``."""
    base_path: JMESPath | None = None
    rates: JMESPath
    """JMESPath to an object ``{currency: rate}`` (one base unit in each currency)."""
    date: JMESPath
    """JMESPath to the rates' day: ``YYYY-MM-DD``, an RFC 3339 time or Unix seconds."""

    secret_fields = frozenset({"url", "headers"})

    @model_validator(mode="after")
    def _one_base(self) -> JsonRatesConfig:
        if (self.base is None) == (self.base_path is None):
            raise ValueError("set exactly one of base or base_path")
        return self


class JsonRatesProvider(_RatesProvider):
    name = "json_rates"
    config_model = JsonRatesConfig

    def __init__(self, config: JsonRatesConfig, context: Any) -> None:
        super().__init__(config, context)
        self.http = context.http_client()

    def close(self) -> None:
        self.http.close()

    def rates(self) -> tuple[Rate, ...]:
        config: JsonRatesConfig = self.config
        document = self.http.json("GET", config.url, headers=config.headers)
        return parse_json_rates(document, config)


def parse_json_rates(document: Any, config: JsonRatesConfig) -> tuple[Rate, ...]:
    base = config.base or jmespath.search(config.base_path or "", document)
    if not isinstance(base, str):
        raise SourceError(f"base_path {config.base_path!r} found no currency code")
    day = jmespath.search(config.date, document)
    if day is None:
        raise SourceError(f"date {config.date!r} found nothing")
    table = jmespath.search(config.rates, document)
    return rates_of(table, base, _day(day, "date"), f"rates {config.rates!r}")
