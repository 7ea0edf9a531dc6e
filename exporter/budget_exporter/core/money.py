"""Money: the one set of rules by which text and JSON numbers become :class:`~decimal.Decimal`
amounts, with wording for the config, a provider's answer and an operation's cost.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import MAX_AMOUNT

NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
"""A plain decimal number: no digit separators, no non-ASCII digits."""

_NON_FINITE = re.compile(r"[-+]?(?:inf|infinity|s?nan\d*)", re.ASCII | re.IGNORECASE)


class Problem(StrEnum):
    MISSING = "missing"
    NOT_A_NUMBER = "not a number"
    NAN = "NaN"
    INFINITE = "infinite"
    TOO_LARGE = "too large"
    """At or beyond :data:`MAX_AMOUNT` in size (either sign)."""


class AmountError(ValueError):
    """``value`` is not an amount; :attr:`problem` says why, :attr:`negative`
    whether a value infinite or too large was below zero."""

    def __init__(self, problem: Problem, negative: bool = False) -> None:
        super().__init__(str(problem))
        self.problem = problem
        self.negative = negative


def is_plausible(amount: Decimal) -> bool:
    """``amount`` is finite and below :data:`MAX_AMOUNT` in size."""
    return amount.is_finite() and abs(amount) < MAX_AMOUNT


def read_amount(value: object) -> Decimal:
    """``value`` (an int, float, Decimal or numeric string) as a plausible Decimal."""
    if value is None:
        raise AmountError(Problem.MISSING)
    if isinstance(value, bool):
        raise AmountError(Problem.NOT_A_NUMBER)
    if isinstance(value, int):
        if abs(value) >= MAX_AMOUNT:  # before Decimal(): it may have thousands of digits
            raise AmountError(Problem.TOO_LARGE, negative=value < 0)
        return Decimal(value)
    if isinstance(value, float):
        amount = Decimal(repr(value)) if math.isfinite(value) else Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        amount = _from_text(value.strip())
    else:
        raise AmountError(Problem.NOT_A_NUMBER)
    if amount.is_nan():
        raise AmountError(Problem.NAN)
    if amount.is_infinite():
        raise AmountError(Problem.INFINITE, negative=amount.is_signed())
    if not is_plausible(amount):
        raise AmountError(Problem.TOO_LARGE, negative=amount.is_signed())
    return amount


def _from_text(text: str) -> Decimal:
    if not (NUMBER.fullmatch(text) or _NON_FINITE.fullmatch(text)):
        raise AmountError(Problem.NOT_A_NUMBER)
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond what Decimal can hold
        raise AmountError(Problem.NOT_A_NUMBER) from None


def parse_amount(value: object, what: str) -> Decimal:
    """An amount in a provider's answer (``what`` names where); SourceError otherwise."""
    try:
        return read_amount(value)
    except AmountError as exc:
        if exc.problem is Problem.MISSING:
            raise SourceError(f"{what} is missing") from None
        if exc.problem in (Problem.INFINITE, Problem.TOO_LARGE):
            raise SourceError(f"{what} is not a plausible amount") from None
        raise SourceError(f"{what} is not a number") from None


COST_TOO_LARGE = f"cost must be a finite number below 1e{MAX_AMOUNT.adjusted()}"
_COST_NEGATIVE = "cost must be a finite number, zero or more"


def parse_cost(value: object) -> Decimal:
    """The cost of an operation: an amount, zero or more; ValueError saying why not."""
    try:
        cost = read_amount(value)
    except AmountError as exc:
        if exc.problem is Problem.NAN:
            raise ValueError("cost must be a finite number, not NaN") from None
        if exc.problem in (Problem.INFINITE, Problem.TOO_LARGE):
            raise ValueError(_COST_NEGATIVE if exc.negative else COST_TOO_LARGE) from None
        raise ValueError("cost must be a number") from None
    if cost < 0:
        raise ValueError(_COST_NEGATIVE)
    return cost


def given_cost(value: object) -> Decimal:
    """A cost handed over by Python code: like :func:`parse_cost`, but an int, float
    or Decimal only (TypeError for text or anything else)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TypeError("cost must be a number")
    return parse_cost(value)
