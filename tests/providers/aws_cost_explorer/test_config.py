"""aws_cost_explorer: configuration (group_by, endpoints, profiles, secrets) and the example.

Fake credentials come from the environment and a socket guard refuses anything
but loopback, so no test can reach real AWS.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.providers._aws import IAM_ACTIONS
from budget_exporter.providers.aws_cost_explorer import (
    CostExplorerConfig,
    CostExplorerProvider,
)
from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
from tests.support.aws_cost_explorer import (
    Harness,
    by_dims,
    group,
    grouped,
    queue,
)
from tests.support.paths import ROOT


def test_group_by_forms_map_to_focus_labels() -> None:
    config = CostExplorerConfig.model_validate(
        {
            "name": "aws",
            "provider": "aws_cost_explorer",
            "group_by": ["service", "tag:Cost-Center"],
        }
    )
    assert [(g.type, g.key, g.dimension) for g in config.group_by] == [
        ("DIMENSION", "SERVICE", "service_name"),
        ("TAG", "Cost-Center", "tag_cost_center"),
    ]
    config = CostExplorerConfig.model_validate(
        {
            "name": "aws",
            "provider": "aws_cost_explorer",
            "group_by": [
                "LINKED_ACCOUNT",
                {"type": "cost_category", "key": "Team", "label": "team"},
            ],
        }
    )
    assert [g.dimension for g in config.group_by] == ["sub_account_id", "team"]
    assert config.group_by[1].request() == {"Type": "COST_CATEGORY", "Key": "Team"}
    default = CostExplorerConfig(name="aws", provider="aws_cost_explorer")
    assert [g.dimension for g in default.group_by] == ["service_name"]
    assert default.metric == "UnblendedCost"
    assert CostExplorerProvider.default_poll_interval >= timedelta(hours=4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"group_by": ["SERVICE", "REGION", "LINKED_ACCOUNT"]}, "at most 2"),
        ({"group_by": ["USAGE_TYPE"]}, "needs a label"),
        ({"group_by": [{"type": "TAG", "key": "x", "label": "service"}]}, "not a usable label"),
        ({"group_by": ["TAG:team", {"type": "TAG", "key": "Team"}]}, "different labels"),
        ({"metric": "UnblendedCosts"}, "metric"),
        ({"external_id": "abcd1234"}, "external_id needs role_arn"),
        ({"role_arn": "arn:aws:iam::12:role/x"}, "role_arn"),
        ({"forecast_interval": "10m"}, "at least 1h"),
        ({"settle_lag": "12h"}, "whole days, from 1d to 7d"),
        ({"settle_lag": "8d"}, "whole days, from 1d to 7d"),
        ({"filter": {}}, "non-empty"),
        # Requests carry the session token: plain http only to a loopback address.
        (
            {"endpoint_url": "http://ce.us-east-1.amazonaws.com"},
            "sources[0].endpoint_url: must use https (plain http only to a loopback address)",
        ),
        ({"endpoint_url": "http://10.1.2.3:4566"}, "endpoint_url: must use https"),
        (
            {"filter": {"Dimensions": {"Kay": "SERVICE", "Values": ["Amazon EC2"]}}},
            'filter is not a valid Cost Explorer expression: Unknown parameter in Dimensions: "Kay"',
        ),
    ],
)
def test_invalid_settings_are_one_line_config_errors(
    write_config, settings: dict[str, Any], message: str
) -> None:
    source = {"name": "aws", "provider": "aws_cost_explorer", **settings}
    path = write_config(json.dumps({"sources": [source]}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["https://vpce-0a1b.ce.us-east-1.vpce.amazonaws.com", "http://127.0.0.1:5000"]
)
def test_https_and_loopback_endpoints_are_accepted(url: str) -> None:
    config = CostExplorerConfig(name="aws", provider="aws_cost_explorer", endpoint_url=url)
    assert config.endpoint_url == url


def test_clients_use_adaptive_retries_and_the_source_timeout() -> None:
    h = Harness(retries=3, endpoint_url="http://127.0.0.1:4566")
    client = h.provider.aws.client("ce")
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert client.meta.config.read_timeout == 5
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"
    assert h.provider.aws.client("ce") is client


def test_named_profile_from_shared_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[billing]\naws_access_key_id = profilekey\naws_secret_access_key = profilesecret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "1.25")]))
        result = Harness(profile="billing").poll()
        with pytest.raises(SourceError, match=r"AWS credentials: .*profile \(nope\)"):
            Harness(profile="nope").poll()
    assert by_dims(result) == {(("service_name", "Amazon EC2"),): Decimal("1.25")}


def test_without_boto3_the_config_names_the_extra(write_config) -> None:
    path = write_config(
        """
        sources:
          - name: aws
            provider: aws_cost_explorer
            filter: {Dimensions: {Key: SERVICE, Values: [Amazon EC2]}}
        """
    )
    script = (
        "import sys\n"
        "sys.modules['boto3'] = sys.modules['botocore'] = None  # as if not installed\n"
        "from budget_exporter.config.loader import load_config\n"
        "from budget_exporter.core.errors import ConfigError\n"
        "try:\n"
        f"    load_config({str(path)!r})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "sources[0]: provider aws_cost_explorer needs boto3" in run.stdout
    assert "pip install 'budget-exporter[aws]'" in run.stdout


def test_external_id_from_file_is_a_secret(write_config, tmp_path: Path) -> None:
    (tmp_path / "external-id").write_text("ext-0123456789\n")
    path = write_config(
        """
        sources:
          - name: payer
            provider: aws_cost_explorer
            role_arn: arn:aws:iam::111111111111:role/budget-reader
            external_id_file: external-id
        """
    )
    config = load_config(path)
    assert config.sources[0].external_id == "ext-0123456789"
    assert "ext-0123456789" in config.secrets


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SANDBOX_EXTERNAL_ID", "example-external-id")
    example = ROOT / "examples" / "aws.yml"
    config = load_config(example)
    providers = {s.name: s.provider for s in config.sources}
    assert providers == {
        "aws": "aws_cost_explorer",
        "aws-budgets": "aws_budgets",
        "aws-sandbox": "aws_cost_explorer",
    }
    assert "example-external-id" in config.secrets
    iam = example.parent / "iam"
    policy = json.loads((iam / "aws-budget-exporter-policy.json").read_text())
    actions: set[str] = set()
    for statement in policy["Statement"]:
        action = statement["Action"]
        actions.update([action] if isinstance(action, str) else action)
    # Exactly the actions the providers need (GetCallerIdentity needs no permission).
    assert actions == set(IAM_ACTIONS.values()) - {"sts:AssumeRole"}
    assume = json.loads((iam / "aws-assume-reader-roles-policy.json").read_text())
    assert [s["Action"] for s in assume["Statement"]] == ["sts:AssumeRole"]
    trust = json.loads((iam / "aws-reader-role-trust-policy.json").read_text())
    assert "sts:ExternalId" in trust["Statement"][0]["Condition"]["StringEquals"]
