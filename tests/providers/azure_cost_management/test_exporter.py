"""azure_cost_management in the whole exporter, and the example configuration against
mocked Azure.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.config.loader import load_config
from budget_exporter.runtime.engine import Engine
from tests.support.azure import (
    ACCESS_TOKEN,
    AUTHORITY,
    BASE,
    CLIENT_ID,
    QUERY_URL,
    SECRET,
    SUBSCRIPTION,
    TENANT,
    answer,
    clean_azure_env,  # noqa: F401 (autouse fixture)
    mock_login,
    openid_configuration,
    query_calls,
    refuse_query,
)
from tests.support.net import loopback_only  # noqa: F401 (autouse fixture: belt and braces)
from tests.support.paths import ROOT


def _write_config(tmp_path: Path) -> Path:
    (tmp_path / "azure-secret").write_text(SECRET)
    path = tmp_path / "budget-exporter.yml"
    path.write_text(
        f"""
global:
  retries: 1
  retry_backoff: 10ms
  timeout: 5s
sources:
  - name: azure-prod
    provider: azure_cost_management
    scope: /subscriptions/{SUBSCRIPTION}
    group_by: [ServiceName]
    tenant_id: {TENANT}
    client_id: {CLIENT_ID}
    client_secret_file: azure-secret
    authority: {AUTHORITY}
    base_url: {BASE}
budgets:
  - name: azure
    limit: 500
    currency: USD
    sources: [azure-prod]
"""
    )
    return path


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.extra("azure")
def test_whole_exporter_exports_azure_spend(
    rs: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mock_login(rs)
    first = answer("spend_page1")  # Storage 19.54, Virtual Machines 100.46, then a nextLink
    rs.post(QUERY_URL, json=first)
    rs.post(first["properties"]["nextLink"], json=answer("spend_page2"))  # Azure OpenAI 30
    engine = Engine(load_config(_write_config(tmp_path)))
    assert engine.poll_all_once()
    text = engine.snapshot.rendered.text
    samples = _samples(text)
    source = (("provider", "azure_cost_management"), ("source", "azure-prod"))

    assert (
        samples[
            (
                "budget_spend_amount",
                (("budget", "azure"), ("currency", "USD"), ("period", "monthly")),
            )
        ]
        == 150.0
    )
    assert (
        samples[
            (
                "budget_limit_amount",
                (("budget", "azure"), ("currency", "USD"), ("period", "monthly")),
            )
        ]
        == 500.0
    )
    for service, amount in (
        ("Storage", 19.54),
        ("Virtual Machines", 100.46),
        ("Azure OpenAI", 30.0),
    ):
        labels = tuple(
            sorted((*source, ("currency", "USD"), ("period", "monthly"), ("service_name", service)))
        )
        assert samples[("budget_source_cost_amount", labels)] == amount
    assert samples[("budget_source_up", source)] == 1
    assert samples[("budget_source_api_requests_total", (*source, ("status", "ok")))] == 4
    assert samples[("budget_source_api_requests_total", (*source, ("status", "throttled")))] == 0
    assert samples[("budget_source_poll_interval_seconds", source)] == 4 * 3600
    assert SECRET.encode() not in text and ACCESS_TOKEN.encode() not in text
    assert SECRET not in caplog.text


@pytest.mark.extra("azure")
def test_whole_exporter_keeps_running_when_azure_refuses(
    rs: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mock_login(rs)
    refuse_query(
        rs,
        403,
        "AuthorizationFailed",
        f"The client '{CLIENT_ID}' does not have authorization to perform action "
        "'Microsoft.CostManagement/query/action'.",
    )
    engine = Engine(load_config(_write_config(tmp_path)))
    with caplog.at_level(logging.WARNING):
        assert not engine.poll_all_once()
    samples = _samples(engine.snapshot.rendered.text)
    source = (("provider", "azure_cost_management"), ("source", "azure-prod"))
    assert samples[("budget_source_up", source)] == 0
    assert samples[("budget_source_api_requests_total", (*source, ("status", "client_error")))] == 1
    assert not any(name == "budget_spend_amount" for name, _ in samples)  # no fake zero
    error = engine.live_states()["azure-prod"].last_error or ""
    assert "Cost Management Reader" in error
    assert "Cost Management Reader" in caplog.text
    assert SECRET not in caplog.text and SECRET not in error


@pytest.mark.extra("azure")
def test_example_config_runs_against_mocked_azure(rs: Any, tmp_path: Path) -> None:
    """examples/azure.yml, on the real Azure endpoints (mocked), gives the documented budgets."""
    prod, dev = SUBSCRIPTION, "55555555-6666-7777-8888-999999999999"
    (tmp_path / "secret").write_text(SECRET)
    example = ROOT / "examples" / "azure.yml"
    config = load_config(
        example,
        env={
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_PROD_SUBSCRIPTION_ID": prod,
            "AZURE_DEV_SUBSCRIPTION_ID": dev,
            "AZURE_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
        },
    )
    login = "https://login.microsoftonline.com"
    rs.get(
        f"{login}/{TENANT}/v2.0/.well-known/openid-configuration",
        json=openid_configuration(login),
    )
    rs.post(f"{login}/{TENANT}/oauth2/v2.0/token", json=answer("entra_token"))
    arm = "https://management.azure.com/subscriptions"
    # prod: Virtual Machines 1200 (rg-web), Azure OpenAI 150.25 (rg-ml), Storage 80
    # (rg-ml-data), Azure Monitor 12.5 (no resource group); dev: Azure OpenAI 40, Storage 9.75.
    rs.post(
        f"{arm}/{prod}/providers/Microsoft.CostManagement/query",
        json=answer("prod_by_service_and_resource_group"),
    )
    rs.post(f"{arm}/{dev}/providers/Microsoft.CostManagement/query", json=answer("dev_by_service"))
    engine = Engine(config)
    assert engine.poll_all_once()
    samples = _samples(engine.snapshot.rendered.text)

    spends = {
        dict(labels)["budget"]: value
        for (name, labels), value in samples.items()
        if name == "budget_spend_amount"
    }
    assert spends == {
        "azure-prod": 1442.75,
        "azure-ml": 230.25,
        "azure-openai": 190.25,
        "azure-total": 1492.5,
    }
    bodies = {
        call.request.url.split("/subscriptions/")[1].split("/")[0]: json.loads(call.request.body)
        for call in query_calls(rs)
    }
    assert bodies[prod]["type"] == "ActualCost"
    assert bodies[dev]["type"] == "AmortizedCost"
