"""What the azure_cost_management tests share: answers of Cost Management and Microsoft
Entra ID, a provider built with a test context, config files.

azure-identity sends its token requests through azure-core's ``RequestsTransport``
(``requests`` underneath), so ``responses`` intercepts them exactly like the
query calls; anything not registered fails with a ConnectionError instead of
reaching the network.

The answers are recorded in ``tests/providers/azure_cost_management/fixtures/``, shaped as
Microsoft's public references describe them: the Cost Management REST API's "Query - Usage"
operation (api-version 2023-11-01: ``properties.columns``, positional ``properties.rows``,
``properties.nextLink``) and the Microsoft identity platform's OpenID Connect discovery
document and client-credentials token answer.  What the provider asks and reads is in
docs/providers-azure.md.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period, Window
from budget_exporter.core.periods import window_at
from budget_exporter.providers.azure_cost_management import (
    AzureCostManagementConfig,
    AzureCostManagementProvider,
)
from budget_exporter.providers.base import ProviderContext
from tests.support.fixtures import load_fixture

AUTHORITY = "https://login.example.test"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "5b1a1f9e-3c1d-4c8e-9a55-0d2f3c4b5a61"
SECRET = "kQ8~s3cret.Value_not-for-logs"
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
BASE = "https://management.example.test"
QUERY_URL = f"{BASE}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.CostManagement/query"
ACCESS_TOKEN: str = load_fixture("azure_cost_management", "entra_token")["access_token"]
ARM_SCOPE = "https://management.example.test/.default"

_AZURE_ENV = (
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_REGIONAL_AUTHORITY_NAME",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture(autouse=True)
def clean_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No host setting may steer azure-identity anywhere but the mocks."""
    for name in _AZURE_ENV:
        monkeypatch.delenv(name, raising=False)


def answer(name: str, **options: Any) -> Any:
    """The recorded answer ``name`` (``tests/providers/azure_cost_management/fixtures/``);
    ``options`` go to :func:`tests.support.fixtures.load_fixture`."""
    return load_fixture("azure_cost_management", name, **options)


def cost_columns(*dimensions: str) -> list[tuple[str, str]]:
    """The columns of a grouped answer: the cost, one per grouping dimension, the currency."""
    return [("Cost", "Number"), *((name, "String") for name in dimensions), ("Currency", "String")]


def query_page(
    rows: list[list[Any]],
    columns: list[tuple[str, str]] | None = None,
    next_link: str | None = None,
) -> dict[str, Any]:
    """A variant of the recorded query answer ``by_service`` (cost by ServiceName): its
    ``rows``, ``nextLink`` and, when given, ``columns`` replaced."""
    page: dict[str, Any] = answer("by_service")
    properties = page["properties"]
    properties["rows"] = rows
    properties["nextLink"] = next_link
    if columns is not None:
        properties["columns"] = [{"name": n, "type": t} for n, t in columns]
    return page


def arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def refuse_query(
    rs: Any,
    status: int,
    code: str,
    message: str,
    *,
    url: str = QUERY_URL,
    headers: dict[str, str] | None = None,
) -> None:
    """Cost Management answers the next query with an ARM error."""
    rs.post(url, status=status, json=arm_error(code, message), headers=headers)


def throttle_query(rs: Any, headers: dict[str, str]) -> None:
    """Cost Management's 429 for the next query, with its rate-limit ``headers``."""
    refuse_query(rs, 429, "429", "Too many requests. Please retry.", headers=headers)


def mock_login(rs: Any, *, status: int = 200, body: dict[str, Any] | None = None) -> None:
    """Tenant discovery (GET openid-configuration) and the client-credentials token POST."""
    rs.get(
        f"{AUTHORITY}/{TENANT}/v2.0/.well-known/openid-configuration",
        json=openid_configuration(AUTHORITY),
    )
    rs.post(
        f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token",
        status=status,
        json=body or answer("entra_token"),
    )


def openid_configuration(authority: str) -> dict[str, Any]:
    """The recorded discovery document of :data:`TENANT` (``entra_openid_configuration``,
    published at :data:`AUTHORITY`), its endpoints moved to ``authority``."""
    text = json.dumps(answer("entra_openid_configuration"))
    return cast(dict[str, Any], json.loads(text.replace(AUTHORITY, authority)))


def context(requests: Counter[str], **overrides: Any) -> ProviderContext:
    values: dict[str, Any] = {
        "source": "azure",
        "timeout": timedelta(seconds=5),
        "retries": 2,
        "retry_backoff": timedelta(0),
        "max_retry_after": timedelta(seconds=30),
        "record_request": lambda status: requests.update([status]),
        "now": lambda: datetime.now(UTC),
        "logger": logging.getLogger("test.azure"),
    }
    values.update(overrides)
    return ProviderContext(**values)


def make_config(**overrides: Any) -> AzureCostManagementConfig:
    values: dict[str, Any] = {
        "name": "azure",
        "provider": "azure_cost_management",
        "scope": f"/subscriptions/{SUBSCRIPTION}",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "authority": AUTHORITY,
        "base_url": BASE,
    }
    values.update(overrides)
    return AzureCostManagementConfig.model_validate(values)


def make_provider(
    requests: Counter[str] | None = None, ctx: dict[str, Any] | None = None, **overrides: Any
) -> AzureCostManagementProvider:
    counter = Counter() if requests is None else requests
    return AzureCostManagementProvider(make_config(**overrides), context(counter, **(ctx or {})))


def monthly() -> tuple[Window, ...]:
    return (window_at(Period.MONTHLY, datetime.now(UTC)),)


def poll_error(requests: Counter[str] | None = None, **overrides: Any) -> str:
    """The SourceError message of one monthly poll, which must fail."""
    with pytest.raises(SourceError) as info:
        make_provider(requests, **overrides).poll(monthly())
    return str(info.value)


def source_file(tmp_path: Path, *settings: str) -> Path:
    """A config file with one azure source on SUBSCRIPTION, plus ``settings`` (YAML lines)."""
    path = tmp_path / "c.yml"
    lines = [
        "sources:",
        "  - name: azure",
        "    provider: azure_cost_management",
        f"    scope: /subscriptions/{SUBSCRIPTION}",
        *(f"    {line}" for line in settings),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def query_calls(rs: Any) -> list[Any]:
    return [c for c in rs.calls if "/providers/Microsoft.CostManagement/query" in c.request.url]


def by_dims(result: Any) -> dict[tuple[tuple[str, str], ...], tuple[Decimal, str]]:
    return {line.dimensions: (line.amount, line.currency) for line in result.lines}
