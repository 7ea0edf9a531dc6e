"""What the azure_cost_management tests share: payloads shaped as Cost Management and
Microsoft Entra ID send them, a provider built with a test context, config files.

azure-identity sends its token requests through azure-core's ``RequestsTransport``
(``requests`` underneath), so ``responses`` intercepts them exactly like the
query calls; anything not registered fails with a ConnectionError instead of
reaching the network.  Payloads follow /work/shared/provider-apis.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period, Window
from budget_exporter.core.periods import window_at
from budget_exporter.providers.azure_cost_management import (
    AzureCostManagementConfig,
    AzureCostManagementProvider,
)
from budget_exporter.providers.base import ProviderContext

AUTHORITY = "https://login.example.test"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "5b1a1f9e-3c1d-4c8e-9a55-0d2f3c4b5a61"
SECRET = "kQ8~s3cret.Value_not-for-logs"
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
BASE = "https://management.example.test"
QUERY_URL = f"{BASE}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.CostManagement/query"
ACCESS_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.test-access-token.sig"
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


def cost_columns(*dimensions: str) -> list[tuple[str, str]]:
    """The columns of a grouped answer: the cost, one per grouping dimension, the currency."""
    return [("Cost", "Number"), *((name, "String") for name in dimensions), ("Currency", "String")]


def query_page(
    rows: list[list[Any]],
    columns: list[tuple[str, str]] | None = None,
    next_link: str | None = None,
) -> dict[str, Any]:
    columns = columns or cost_columns("ServiceName")
    return {
        "id": f"subscriptions/{SUBSCRIPTION}/providers/Microsoft.CostManagement/query/"
        "9af9459d-441d-4055-9ed0-83d4c4a363fb",
        "name": "9af9459d-441d-4055-9ed0-83d4c4a363fb",
        "type": "Microsoft.CostManagement/query",
        "location": None,
        "sku": None,
        "eTag": None,
        "properties": {
            "nextLink": next_link,
            "columns": [{"name": n, "type": t} for n, t in columns],
            "rows": rows,
        },
    }


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
        json={
            "token_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{AUTHORITY}/{TENANT}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{AUTHORITY}/{TENANT}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        },
    )
    rs.post(
        f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token",
        status=status,
        json=body
        or {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": ACCESS_TOKEN,
        },
    )


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
