"""azure_cost_management: configuration, scopes, secrets and the query body."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.model import Period
from budget_exporter.providers import get_provider
from budget_exporter.providers.azure_cost_management import AzureCostManagementProvider
from tests.support.azure import (
    BASE,
    CLIENT_ID,
    SECRET,
    SUBSCRIPTION,
    TENANT,
    clean_azure_env,  # noqa: F401 (autouse fixture)
    make_config,
    source_file,
)
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture: belt and braces)


@pytest.mark.extra("azure")
def test_registered_under_its_name() -> None:
    assert get_provider("azure_cost_management") is AzureCostManagementProvider
    assert AzureCostManagementProvider.periods_for(make_config()) == {Period.MONTHLY, Period.ANY}
    assert AzureCostManagementProvider.default_poll_interval == timedelta(hours=4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scope": "subscription/abc"}, "must be subscriptions/<subscription id>"),
        ({"scope": "providers/Microsoft.Management/managementGroups/x"}, "billingAccounts"),
        (
            {"group_by": ["ServiceName", "ResourceGroup", "SubscriptionId"]},
            "at most two dimensions",
        ),
        ({"group_by": ["ServiceName", "ServiceName"]}, "twice"),
        ({"group_by": ["MeterCategory"]}, "ServiceName"),
        ({"client_secret": None}, "needs client_secret"),
        ({"tenant_id": None, "client_id": None}, "needs tenant_id, client_id"),
        ({"base_url": "http://management.example.test"}, "https"),
        ({"base_url": "https://management.example.test/?x=1"}, "query"),
        ({"authority": "http://login.example.test"}, "https"),
        ({"tenant_id": "bad tenant/"}, "tenant"),
        ({"auth": "managed_identity"}, "client_secret is only used"),
        ({"auth": "managed_identity", "client_secret": None}, "neither tenant_id"),
        ({"token_file": "/var/run/token"}, "token_file is only used"),
        ({"cost_type": "Usage"}, "ActualCost"),
        ({"api_version": "latest"}, "pattern"),
    ],
)
def test_config_rejects(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        make_config(**overrides)
    assert message in str(info.value)


@pytest.mark.extra("azure")
def test_config_scopes_and_defaults() -> None:
    config = make_config(scope=f"subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ml(prod)/")
    assert config.scope == f"subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ml(prod)"
    assert config.scope_kind == "resource group"
    assert config.query_url == (
        f"{BASE}/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ml(prod)"
        "/providers/Microsoft.CostManagement/query"
    )
    account = make_config(
        scope="/providers/Microsoft.Billing/billingAccounts/1234abcd-0000-1111-2222-333344445555:"
        "aaaa0000-bbbb-1111-cccc-2222dddd3333_2019-05-31"
    )
    assert account.scope_kind == "billing account"
    assert make_config(base_url="http://127.0.0.1:8080/").base_url == "http://127.0.0.1:8080"
    assert make_config(base_url="https://management.azure.com").oauth_scope == (
        "https://management.azure.com/.default"
    )
    assert make_config(token_scope="https://management.azure.com/.default").oauth_scope == (
        "https://management.azure.com/.default"
    )
    managed = make_config(
        auth="managed_identity", client_secret=None, tenant_id=None, authority=None
    )
    assert managed.client_id == CLIENT_ID


@pytest.mark.extra("azure")
def test_config_file_reads_secret_file_and_registers_it(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    path = source_file(
        tmp_path, f"tenant_id: {TENANT}", f"client_id: {CLIENT_ID}", "client_secret_file: secret"
    )
    config = load_config(path)
    assert config.sources[0].client_secret == SECRET
    assert SECRET in config.secrets


def test_config_error_is_one_line_without_the_secret(tmp_path: Path) -> None:
    path = source_file(tmp_path, "auth: managed_identity", f"client_secret: {SECRET}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "sources[0]" in str(info.value)
    assert SECRET not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.extra("azure")
def test_query_body_matches_the_api() -> None:
    body = make_config(cost_type="AmortizedCost", group_by=["ResourceGroup", "SubscriptionId"])
    assert body.query_body() == {
        "type": "AmortizedCost",
        "timeframe": "MonthToDate",
        "dataset": {
            "granularity": "None",
            "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
            "grouping": [
                {"type": "Dimension", "name": "ResourceGroup"},
                {"type": "Dimension", "name": "SubscriptionId"},
            ],
        },
    }
