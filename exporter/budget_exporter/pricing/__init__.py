"""Estimate what an LLM call costs from its model and token counts, with the shipped price
table or your own (see docs/providers-llm-saas.md).

    >>> from budget_exporter.pricing import estimate
    >>> estimate("gpt-4o-2024-08-06", input_tokens=12_000, output_tokens=800)
    Decimal('0.038')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from budget_exporter.core.fields import Currency, Money, resolve_path

TOKEN_TYPES = ("input", "cached_input", "cache_write", "cache_write_1h", "output")
"""Token types the exporter knows, as used in ``budget_source_usage_tokens{token_type}``."""

_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class PricingError(ValueError):
    """A price table cannot be read or is invalid."""


class UnknownModelError(LookupError):
    """No price for a model, and the table has no default."""

    def __init__(self, model: str, taken: date) -> None:
        self.model = model
        super().__init__(
            f"no price for model {model!r} in the price table (taken {taken.isoformat()}): "
            "add it to your price table or set a default price"
        )

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


class ModelPrice(BaseModel):
    """Prices of one model per ``per_tokens`` tokens, by token type.

    ``input`` and ``output`` are required: a forgotten output price must not
    silently price output tokens at 0 (write ``output: 0`` for embeddings).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Money
    output: Money
    cached_input: Money | None = None
    cache_write: Money | None = None
    cache_write_1h: Money | None = None

    @field_validator("*")
    @classmethod
    def _not_negative(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value < 0:
            raise ValueError("prices cannot be negative")
        return value

    def of(self, token_type: str) -> Decimal:
        """The price of ``token_type``; cache prices fall back to the input price."""
        if token_type == "input":
            return self.input
        if token_type == "output":
            return self.output
        if token_type == "cached_input":
            return self.input if self.cached_input is None else self.cached_input
        if token_type == "cache_write":
            return self.input if self.cache_write is None else self.cache_write
        if token_type == "cache_write_1h":
            if self.cache_write_1h is not None:
                return self.cache_write_1h
            return self.of("cache_write")
        raise ValueError(f"unknown token type {token_type!r} (known: {', '.join(TOKEN_TYPES)})")


class _TableFile(BaseModel):
    """The YAML layout of a price table file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    taken: date
    currency: Currency = "USD"
    per_tokens: int = Field(default=1_000_000, ge=1)
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    default: ModelPrice | None = None


class PricingConfig(BaseModel):
    """``pricing:`` in a source's configuration: overrides of the shipped table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str | None = None
    """A price table file (same layout as the shipped one) merged over the shipped table.
    A relative path is relative to the configuration file's folder (the validation
    context's ``config_dir``), else to the working directory; it is stored absolute."""
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    """Inline prices per million tokens, merged last."""
    default: ModelPrice | None = None
    """Price used for models the table does not know (else they are not estimated)."""

    @field_validator("file")
    @classmethod
    def _file_readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = resolve_path(value, (info.context or {}).get("config_dir"))
        try:
            load_price_table(path)
        except PricingError as exc:
            raise ValueError(str(exc)) from None
        return str(path)

    def table(self) -> PriceTable:
        return load_price_table(self.file, models=self.models, default=self.default)


@dataclass(frozen=True)
class PriceTable:
    """Model prices, the date they were taken, and an optional default."""

    taken: date
    currency: str
    per_tokens: int
    models: Mapping[str, ModelPrice] = field(default_factory=dict)
    default: ModelPrice | None = None

    def lookup(self, model: str) -> ModelPrice:
        """The price of ``model``: exact name, then without a trailing date, then the default."""
        name = model.strip().lower()
        for candidate in (name, _DATE_SUFFIX.sub("", name)):
            if candidate in self.models:
                return self.models[candidate]
        if self.default is not None:
            return self.default
        raise UnknownModelError(model, self.taken)

    def knows(self, model: str) -> bool:
        try:
            self.lookup(model)
        except UnknownModelError:
            return False
        return True

    def cost(self, model: str, tokens: Mapping[str, int | float | Decimal]) -> Decimal:
        """Cost of ``tokens`` (token type -> count) of ``model``, in :attr:`currency`."""
        price = self.lookup(model)
        total = Decimal(0)
        for token_type, count in tokens.items():
            if count < 0:
                raise ValueError(f"{token_type} token count cannot be negative")
            total += price.of(token_type) * Decimal(str(count))
        return total / self.per_tokens

    def estimate(self, model: str, *counts: int, **named: int) -> Decimal:
        """Cost of one call; the token counts as for :class:`TokenCounts`."""
        return self.cost(model, TokenCounts(*counts, **named).by_type())


@dataclass(frozen=True)
class TokenCounts:
    """One call's token counts, as every ``estimate``/``record_tokens`` function takes
    them: ``input_tokens`` and ``output_tokens`` by position or name, the cache
    counts by name only.  ``input_tokens`` excludes cached and cache-write tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    _: KW_ONLY
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    def by_type(self) -> dict[str, int]:
        """Token type (see :data:`TOKEN_TYPES`) -> count."""
        return {
            "input": self.input_tokens,
            "output": self.output_tokens,
            "cached_input": self.cached_input_tokens,
            "cache_write": self.cache_write_tokens,
        }


def _read(source: Any, what: str) -> _TableFile:
    try:
        raw = yaml.safe_load(source)
    except yaml.YAMLError:
        raise PricingError(f"{what}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise PricingError(f"{what}: must be a mapping with taken, currency and models")
    try:
        parsed = _TableFile.model_validate(raw)
    except ValidationError as exc:
        raise PricingError(f"{what}: {_first_error(exc)}") from None
    return parsed.model_copy(update={"models": {k.lower(): v for k, v in parsed.models.items()}})


@lru_cache(maxsize=1)
def _shipped() -> _TableFile:
    text = files("budget_exporter.pricing").joinpath("data/prices.yml").read_text(encoding="utf-8")
    return _read(text, "shipped price table")


def load_price_table(
    path: str | Path | None = None,
    *,
    models: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None,
    default: ModelPrice | Mapping[str, Any] | None = None,
) -> PriceTable:
    """The shipped table, with ``path`` (a table file) and then ``models`` merged over it.

    A user file's ``taken`` date and ``currency`` replace the shipped ones (its
    currency must then be the shipped one if it keeps shipped models).
    """
    table = _shipped()
    merged = dict(table.models)
    taken, currency, per_tokens, fallback = table.taken, table.currency, table.per_tokens, None
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise PricingError(f"price table {path}: {reason}") from None
        user = _read(text, f"price table {path}")
        if user.currency != currency:
            merged = {}  # prices in another currency: use the user's table alone
        if user.per_tokens != per_tokens:
            scale = Decimal(user.per_tokens) / Decimal(per_tokens)
            merged = {name: _scaled(price, scale) for name, price in merged.items()}
        merged.update(user.models)
        taken, currency, per_tokens = user.taken, user.currency, user.per_tokens
        fallback = user.default
    for name, price in (models or {}).items():
        merged[name.lower()] = _model_price(price)
    if default is not None:
        fallback = _model_price(default)
    return PriceTable(taken, currency, per_tokens, merged, fallback)


def _scaled(price: ModelPrice, scale: Decimal) -> ModelPrice:
    values = {k: (v * scale if v is not None else None) for k, v in price.model_dump().items()}
    return ModelPrice.model_validate(values)


def _model_price(value: ModelPrice | Mapping[str, Any]) -> ModelPrice:
    if isinstance(value, ModelPrice):
        return value
    try:
        return ModelPrice.model_validate(dict(value))
    except ValidationError as exc:
        raise PricingError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    """``models.x.input: Field required``: where and what is wrong, never the input."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"]
    if error["type"] == "missing" and error["loc"] and error["loc"][-1] == "output":
        message = "field required: the price of output tokens (0 for models with no output)"
    return f"{where}: {message}"


@lru_cache(maxsize=1)
def default_table() -> PriceTable:
    """The shipped table alone."""
    return load_price_table()


def estimate(model: str, *counts: int, table: PriceTable | None = None, **named: int) -> Decimal:
    """Estimated cost of one call, in the table's currency (USD for the shipped table).

    Token counts as for :class:`TokenCounts` (``input_tokens`` are uncached input
    tokens); raise :class:`UnknownModelError` for a model the table does not price
    (and has no default for).
    """
    return (table or default_table()).estimate(model, *counts, **named)
