"""azure_cost_management: Cost Management query answers turned into spend lines.

The answers are read as the provider reads them, numbers as ``Decimal``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period
from budget_exporter.providers.azure_cost_management import parse_query_result
from tests.support.azure import (
    SUBSCRIPTION,
    answer,
    clean_azure_env,  # noqa: F401 (autouse fixture)
    query_page,
)
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture: belt and braces)


def rows(page: Any, *args: Any) -> list[tuple[dict[str, str], Decimal, str]]:
    """``(dimensions, amount, currency)`` of each spend line parsed from ``page``."""
    result = parse_query_result(page, *args)
    assert all(line.period is Period.MONTHLY for line in result.lines)
    return [(line.dims, line.amount, line.currency) for line in result.lines]


def test_parse_reads_rows_through_columns() -> None:
    # Columns Currency, ResourceGroupName, PreTaxCost, SubscriptionId, in that order.
    page = answer("pretax_cost_by_resource_group_and_subscription", parse_float=Decimal)
    assert rows(page, ["ResourceGroup", "SubscriptionId"]) == [
        (
            {"x_resource_group_name": "rg-ml", "sub_account_id": SUBSCRIPTION},
            Decimal("12.5"),
            "USD",
        ),
        ({"x_resource_group_name": "", "sub_account_id": SUBSCRIPTION}, Decimal("0.25"), "USD"),
    ]


def test_parse_cost_usd_is_in_usd_whatever_the_currency_column() -> None:
    page = answer("cost_usd", parse_float=Decimal)  # CostUSD 3.75, Currency EUR
    assert rows(page, ["ServiceName"], "CostUSD") == [
        ({"service_name": "Virtual Machines"}, Decimal("3.75"), "USD")
    ]


def test_parse_prefers_the_requested_cost_column() -> None:
    page = answer("cost_usd_and_cost", parse_float=Decimal)  # CostUSD 3.75, Cost 4.10 EUR
    assert rows(page, ["ServiceName"]) == [({"service_name": "Storage"}, Decimal("4.10"), "EUR")]


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (
            query_page([["Storage", "USD"]], [("ServiceName", "String"), ("Currency", "String")]),
            "no cost column",
        ),
        (
            query_page([[1, "Storage"]], [("Cost", "Number"), ("ServiceName", "String")]),
            "no Currency",
        ),
        (
            query_page([[1, "USD"]], [("Cost", "Number"), ("Currency", "String")]),
            "no ServiceName column",
        ),
        (query_page([[1, "Storage"]]), "does not match the columns"),
        (query_page([["n/a", "Storage", "USD"]]), "not a number"),
        (query_page([[1, "Storage", "US Dollar"]]), "3-letter currency"),
        ([], "not a JSON object"),
    ],
)
def test_parse_rejects_malformed_answers(page: Any, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_query_result(page, ["ServiceName"])


def test_parse_empty_month() -> None:
    assert rows(answer("empty_month"), ["ServiceName"]) == []
    assert rows({"properties": None}, ["ServiceName"]) == []
