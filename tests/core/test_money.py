"""The one set of rules by which config values, provider answers and check-API
costs become amounts (budget_exporter.core.money)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budget_exporter.core.errors import SourceError
from budget_exporter.core.money import (
    AmountError,
    Problem,
    given_cost,
    is_plausible,
    parse_amount,
    parse_cost,
    read_amount,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, Decimal(12)),
        ("12.50", Decimal("12.50")),
        (" -3 ", Decimal(-3)),
        ("+.5", Decimal("0.5")),
        ("1e3", Decimal(1000)),
        (0.1, Decimal("0.1")),  # the float's shortest text, not its binary expansion
        (Decimal("7.25"), Decimal("7.25")),
        ("0.00000000000000000001", Decimal("1e-20")),
        ("999999999999999.99", Decimal("999999999999999.99")),
    ],
)
def test_amounts_are_read_exactly(value: object, expected: Decimal) -> None:
    amount = read_amount(value)
    assert isinstance(amount, Decimal) and amount == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, Problem.MISSING),
        (True, Problem.NOT_A_NUMBER),
        ([1], Problem.NOT_A_NUMBER),
        ("", Problem.NOT_A_NUMBER),
        ("12,50", Problem.NOT_A_NUMBER),
        ("1_000", Problem.NOT_A_NUMBER),
        ("١٢", Problem.NOT_A_NUMBER),  # Arabic-Indic digits: Decimal reads them, we do not
        ("0x10", Problem.NOT_A_NUMBER),
        ("1e99999999999999999999", Problem.NOT_A_NUMBER),  # beyond what Decimal holds
        ("NaN", Problem.NAN),
        ("sNaN", Problem.NAN),
        (float("nan"), Problem.NAN),
        (Decimal("NaN"), Problem.NAN),
        ("Infinity", Problem.INFINITE),
        ("+Inf", Problem.INFINITE),  # as Prometheus writes it
        (float("inf"), Problem.INFINITE),
        ("1e15", Problem.TOO_LARGE),
        (10**15, Problem.TOO_LARGE),
        pytest.param(10**5000, Problem.TOO_LARGE, id="5001-digits"),  # never made text
        (Decimal("1e400"), Problem.TOO_LARGE),
    ],
)
def test_what_is_not_an_amount_says_why(value: object, problem: Problem) -> None:
    with pytest.raises(AmountError) as caught:
        read_amount(value)
    assert caught.value.problem is problem


@pytest.mark.parametrize(
    ("value", "negative"),
    [(-(10**15), True), ("-1e20", True), ("1e20", False), ("-Infinity", True), ("inf", False)],
)
def test_a_value_out_of_range_tells_its_sign(value: object, negative: bool) -> None:
    with pytest.raises(AmountError) as caught:
        read_amount(value)
    assert caught.value.problem in (Problem.INFINITE, Problem.TOO_LARGE)
    assert caught.value.negative is negative


def test_plausible_amounts_are_finite_and_below_the_bound() -> None:
    assert is_plausible(Decimal("-999999999999999"))
    assert not is_plausible(Decimal("1e15"))
    assert not is_plausible(Decimal("-Infinity"))
    assert not is_plausible(Decimal("NaN"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "total is missing"),
        ("n/a", "total is not a number"),
        ("NaN", "total is not a number"),
        ("1e20", "total is not a plausible amount"),
        ("-Infinity", "total is not a plausible amount"),
    ],
)
def test_provider_answers_fail_as_source_errors(value: object, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_amount(value, "total")
    assert str(caught.value) == message


def test_provider_answers_keep_their_precision() -> None:
    assert parse_amount("0.1234567890123456789", "x") == Decimal("0.1234567890123456789")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "cost must be a number"),
        (True, "cost must be a number"),
        ("NaN", "cost must be a finite number, not NaN"),
        (-1, "cost must be a finite number, zero or more"),
        ("-Infinity", "cost must be a finite number, zero or more"),
        ("Infinity", "cost must be a finite number below 1e15"),
        (10**15, "cost must be a finite number below 1e15"),
    ],
)
def test_costs_are_amounts_of_zero_or_more(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cost(value)
    assert str(caught.value) == message


def test_a_cost_of_zero_is_allowed() -> None:
    assert parse_cost(0) == 0 and parse_cost("0.25") == Decimal("0.25")


def test_costs_given_by_code_are_numbers_not_text() -> None:
    assert given_cost(0.1) == Decimal("0.1") and given_cost(Decimal(2)) == 2
    with pytest.raises(TypeError):
        given_cost("0.1")
    with pytest.raises(TypeError):
        given_cost(True)
    with pytest.raises(ValueError, match="zero or more"):
        given_cost(-0.5)
