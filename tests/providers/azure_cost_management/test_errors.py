"""azure_cost_management: refused queries, rejected logins, unreachable endpoints and a
missing or broken azure-identity, each explained without secrets.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from tests.support.azure import (
    ACCESS_TOKEN,
    AUTHORITY,
    BASE,
    CLIENT_ID,
    SECRET,
    SUBSCRIPTION,
    TENANT,
    clean_azure_env,  # noqa: F401 (autouse fixture)
    make_provider,
    mock_login,
    monthly,
    poll_error,
    query_calls,
    refuse_query,
    source_file,
)
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture: belt and braces)


@pytest.mark.extra("azure")
def test_forbidden_names_the_role(rs: Any) -> None:
    mock_login(rs)
    refuse_query(
        rs,
        403,
        "AuthorizationFailed",
        f"The client '{CLIENT_ID}' with object id '1c3e8f0a-0000-4444-8888-aaaaaaaaaaaa' "
        "does not have authorization to perform action "
        "'Microsoft.CostManagement/query/action' over scope "
        f"'/subscriptions/{SUBSCRIPTION}' or the scope is invalid.",
    )
    requests: Counter[str] = Counter()
    message = poll_error(requests)
    assert "Cost Management Reader" in message
    assert "Microsoft.CostManagement/query/read" in message
    assert "AuthorizationFailed" in message
    assert f"subscription scope subscriptions/{SUBSCRIPTION}" in message
    assert SECRET not in message and ACCESS_TOKEN not in message
    assert requests == Counter({"ok": 2, "client_error": 1})


@pytest.mark.extra("azure")
def test_forbidden_at_billing_account_names_a_billing_role(rs: Any) -> None:
    mock_login(rs)
    scope = "providers/Microsoft.Billing/billingAccounts/12345678"
    url = f"{BASE}/{scope}/providers/Microsoft.CostManagement/query"
    refuse_query(rs, 403, "RBACAccessDenied", "The user does not have authorization.", url=url)
    assert "Billing account reader" in poll_error(scope=scope)


@pytest.mark.extra("azure")
@pytest.mark.parametrize(
    ("status", "code", "upstream", "overrides", "expected"),
    [
        pytest.param(
            # Cost Management often answers a missing role with 401, not 403.
            401,
            "RBACAccessDenied",
            "The client does not have authorization to perform action. "
            "Request ID: aefe2d4c-3134-4658-b9d1-f6a1b5c96cb2",
            {},
            ["HTTP 401 RBACAccessDenied", "Cost Management Reader"],
            id="rbac_access_denied_401_names_the_role",
        ),
        pytest.param(
            400,
            "AccountCostDisabled",
            "Access to cost data has been disabled for account admins.",
            {},
            ["AO view charges"],
            id="ea_cost_view_disabled_is_explained",
        ),
        pytest.param(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
            {},
            ["HTTP 401", "tenant_id"],
            id="unauthorized_token_is_explained",
        ),
        pytest.param(
            404,
            "SubscriptionNotFound",
            f"The subscription '{SUBSCRIPTION}' could not be found.",
            {},
            [r"was not found .*check scope"],
            id="unknown_scope_is_explained",
        ),
        pytest.param(
            400,
            "BadRequest",
            "Invalid dataset grouping: 'ResourceLocation'.",
            {"group_by": ["ResourceLocation"]},
            [r"refused the query.*Invalid dataset grouping"],
            id="bad_request_shows_the_upstream_reason",
        ),
    ],
)
def test_refused_query_is_explained(
    rs: Any,
    status: int,
    code: str,
    upstream: str,
    overrides: dict[str, Any],
    expected: list[str],
) -> None:
    """Each refusal is a SourceError that matches every ``expected`` pattern and leaks nothing."""
    mock_login(rs)
    refuse_query(rs, status, code, upstream)
    message = poll_error(**overrides)
    for pattern in expected:
        assert re.search(pattern, message), pattern
    assert SECRET not in message and ACCESS_TOKEN not in message


@pytest.mark.extra("azure")
def test_wrong_client_secret(rs: Any) -> None:
    mock_login(
        rs,
        status=401,
        body={
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
            "secret being sent in the request is the client secret value, not the client "
            f"secret ID, for a secret added to app '{CLIENT_ID}'. Trace ID: "
            "0b7c1b8e-2a4c-4d5e-9f00-1a2b3c4d5e6f Correlation ID: "
            "6e5d4c3b-2a19-4f8e-8d7c-6b5a49382716 Timestamp: 2024-05-01 10:00:00Z",
            "error_codes": [7000215],
            "timestamp": "2024-05-01 10:00:00Z",
            "trace_id": "0b7c1b8e-2a4c-4d5e-9f00-1a2b3c4d5e6f",
            "correlation_id": "6e5d4c3b-2a19-4f8e-8d7c-6b5a49382716",
        },
    )
    requests: Counter[str] = Counter()
    message = poll_error(requests)
    assert "Microsoft Entra ID refused" in message
    assert "AADSTS7000215" in message
    assert "Trace ID" not in message
    assert SECRET not in message
    assert query_calls(rs) == []
    assert requests == Counter({"ok": 1, "client_error": 1})


@pytest.mark.extra("azure")
def test_unknown_tenant(rs: Any) -> None:
    rs.get(
        f"{AUTHORITY}/{TENANT}/v2.0/.well-known/openid-configuration",
        status=400,
        json={
            "error": "invalid_tenant",
            "error_description": f"AADSTS90002: Tenant '{TENANT}' not found.",
        },
    )
    with pytest.raises(SourceError, match=r"Microsoft Entra ID refused.*authority configuration"):
        make_provider().poll(monthly())


@pytest.mark.extra("azure")
def test_login_unreachable_is_counted_as_network(rs: Any) -> None:
    requests: Counter[str] = Counter()  # nothing registered: responses refuses every call
    with pytest.raises(SourceError, match=f"could not reach Microsoft Entra ID at {AUTHORITY}"):
        make_provider(requests, ctx={"retries": 0}).poll(monthly())
    assert requests == Counter({"network": 1})


def test_missing_azure_identity_fails_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "azure.identity", None)  # as if not installed
    path = source_file(tmp_path, "auth: managed_identity")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).endswith(
        "sources[0]: provider azure_cost_management needs azure-identity: "
        "install the azure extra: pip install 'budget-exporter[azure]' (source 'azure', line 2)"
    )


@pytest.mark.extra("azure")
def test_configuration_check_imports_no_azure_sdk(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = source_file(tmp_path, "auth: managed_identity")
    code = (
        "import sys\n"
        "from budget_exporter.config.loader import load_config\n"
        f"assert load_config({str(path)!r}).sources[0].auth == 'managed_identity'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('azure.', 'msal'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.extra("azure")
def test_azure_identity_broken_after_loading_fails_the_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    provider = make_provider()  # the configuration was fine
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # import now fails
    with pytest.raises(SourceError, match=r"cannot be imported.*budget-exporter\[azure\]'"):
        provider.poll(monthly())
