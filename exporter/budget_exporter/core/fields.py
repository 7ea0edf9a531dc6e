"""Annotated pydantic types shared by the config models."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
)

from budget_exporter.core.durations import format_duration, parse_duration
from budget_exporter.core.money import AmountError, Problem, read_amount


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("must be a duration string such as 30s, 5m, 4h or 1d")


def _money(value: object) -> Decimal:
    try:
        return read_amount(value)
    except AmountError as exc:  # never echo the value: it may be a secret
        if exc.problem in (Problem.INFINITE, Problem.TOO_LARGE):
            raise ValueError("must be a finite number below 1e15") from None
        raise ValueError("must be a number") from None


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]


def _at_most_an_hour(value: timedelta) -> timedelta:
    if value > timedelta(hours=1):
        raise ValueError("must be at most 1h")
    return value


Timeout = Annotated[Duration, AfterValidator(_at_most_an_hour)]
"""A per-request timeout: a billing API that needs more than an hour is down."""
Money = Annotated[Decimal, BeforeValidator(_money)]
Name = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=63),
]


def _currency(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value.strip()):
        raise ValueError("must be a three-letter ISO 4217 currency code such as USD or EUR")
    return value.strip().upper()


Currency = Annotated[str, BeforeValidator(_currency)]

_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}
_SIZE_UNITS |= {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _byte_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = int(match[1]) * _SIZE_UNITS[match[2]]
    else:
        raise ValueError("must be a size such as 8MiB, 500KB or a number of bytes")
    if not 1024 <= size <= 2**30:
        raise ValueError("must be between 1KiB and 1GiB")
    return size


ByteSize = Annotated[int, BeforeValidator(_byte_size)]
"""A size in bytes, written as a number or with a unit (``B``, ``KB``/``KiB``, ``MB``/``MiB``, ``GB``/``GiB``)."""
Ratio = Annotated[float, Field(gt=0, le=1)]


def resolve_path(path: str | Path, base: str | Path | None) -> Path:
    """``path`` made absolute: relative to ``base`` (a folder) when given, else to the
    working directory."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and base is not None:
        candidate = Path(base) / candidate
    return candidate.absolute()


def _config_relative(value: str, info: ValidationInfo) -> str:
    return str(resolve_path(value, (info.context or {}).get("config_dir")))


ConfigPath = Annotated[str, AfterValidator(_config_relative)]
"""A file path; relative paths are relative to the configuration file's folder."""
