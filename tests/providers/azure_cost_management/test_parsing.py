"""azure_cost_management: Cost Management query answers turned into spend lines."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from budget_exporter.core.errors import SourceError
from budget_exporter.providers.azure_cost_management import parse_query_result
from tests.support.azure import (
    SUBSCRIPTION,
    clean_azure_env,  # noqa: F401 (autouse fixture)
    cost_columns,
    query_page,
)
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture: belt and braces)


def test_parse_reads_rows_through_columns() -> None:
    page = query_page(
        [
            ["USD", "rg-ml", Decimal("12.5"), SUBSCRIPTION],
            ["USD", None, Decimal("0.25"), SUBSCRIPTION],
        ],
        columns=[
            ("Currency", "String"),
            ("ResourceGroupName", "String"),
            ("PreTaxCost", "Number"),
            ("SubscriptionId", "String"),
        ],
    )
    rows = parse_query_result(page, ["ResourceGroup", "SubscriptionId"])
    assert rows == [
        (
            {"x_resource_group_name": "rg-ml", "sub_account_id": SUBSCRIPTION},
            Decimal("12.5"),
            "USD",
        ),
        ({"x_resource_group_name": "", "sub_account_id": SUBSCRIPTION}, Decimal("0.25"), "USD"),
    ]


def test_parse_cost_usd_is_in_usd_whatever_the_currency_column() -> None:
    page = query_page(
        [[Decimal("3.75"), "Virtual Machines", "EUR"]],
        columns=[("CostUSD", "Number"), ("ServiceName", "String"), ("Currency", "String")],
    )
    assert parse_query_result(page, ["ServiceName"], "CostUSD") == [
        ({"service_name": "Virtual Machines"}, Decimal("3.75"), "USD")
    ]


def test_parse_prefers_the_requested_cost_column() -> None:
    page = query_page(
        [[Decimal("3.75"), Decimal("4.10"), "Storage", "EUR"]],
        columns=[("CostUSD", "Number"), *cost_columns("ServiceName")],
    )
    assert parse_query_result(page, ["ServiceName"]) == [
        ({"service_name": "Storage"}, Decimal("4.10"), "EUR")
    ]


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
    assert parse_query_result(query_page([]), ["ServiceName"]) == []
    assert parse_query_result({"properties": None}, ["ServiceName"]) == []
