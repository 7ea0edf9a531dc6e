"""aws_cost_explorer in the whole exporter: the engine, several accounts, and
``--once`` against a moto_server on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from tests.support import aws
from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
from tests.support.aws_cost_explorer import (
    NOW,
    answer,
    expect_forecast,
    group,
    grouped,
    queue,
)
from tests.support.net import free_port


def test_whole_exporter_exports_spend_forecast_and_health(make_engine) -> None:
    with mock_aws():
        # EC2 41.25 (ml) and S3 8.75 (web), then a token; Lambda 10.00 (ml).
        queue(answer("by_service_and_team_page1"), answer("by_service_and_team_page2"))
        engine = aws.engine_without_retries(
            make_engine,
            """
            sources:
              - name: aws
                provider: aws_cost_explorer
                group_by: [SERVICE, "TAG:team"]
            budgets:
              - name: aws-total
                limit: 100
                currency: USD
                sources: [aws]
              - name: aws-ml
                limit: 40
                currency: USD
                sources: [aws]
                match: {tag_team: ml}
            """,
            NOW,
        )
        provider = engine.runners["aws"].provider
        client = provider.aws.new_client("ce")
        stubber = Stubber(client)
        expect_forecast(stubber, "110.0", "2026-08-21")
        stubber.activate()
        provider._forecast_client = lambda: client
        assert engine.poll_all_once()
        stubber.assert_no_pending_responses()
    text = engine.snapshot.rendered.text.decode()
    assert aws.metric_value(text, "budget_spend_amount", budget="aws-total") == 60.0
    assert aws.metric_value(text, "budget_forecast_amount", budget="aws-total") == 170.0
    assert aws.metric_value(text, "budget_spend_amount", budget="aws-ml") == 51.25
    ec2_ml = {"service_name": "Amazon Elastic Compute Cloud - Compute", "tag_team": "ml"}
    labels = {"source": "aws", "provider": "aws_cost_explorer", "currency": "USD", **ec2_ml}
    assert aws.metric_value(text, "budget_source_cost_amount", **labels) == 41.25
    assert aws.metric_value(text, "budget_source_up", source="aws") == 1
    assert (
        aws.metric_value(text, "budget_source_api_requests_total", source="aws", status="ok") == 2
    )
    assert aws.metric_value(text, "budget_source_cost_estimated", source="aws") == 1
    assert aws.metric_value(text, "budget_source_poll_interval_seconds", source="aws") == 8 * 3600


def test_one_failing_account_leaves_the_others_alone(make_engine, monkeypatch) -> None:
    monkeypatch.setenv("PAYER_EXTERNAL_ID", "payer-external-id-42")
    dead = f"http://127.0.0.1:{free_port()}"
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "11.11")]), account="111111111111")
        queue(grouped([group(["Amazon RDS"], "22.22")]), account="222222222222")
        engine = aws.engine_without_retries(
            make_engine,
            f"""
            sources:
              - name: payer
                provider: aws_cost_explorer
                forecast: false
                role_arn: arn:aws:iam::111111111111:role/budget-reader
                external_id: ${{PAYER_EXTERNAL_ID}}
              - name: member
                provider: aws_cost_explorer
                forecast: false
                role_arn: arn:aws:iam::222222222222:role/budget-reader
              - name: broken
                provider: aws_cost_explorer
                forecast: false
                endpoint_url: {dead}
            """,
            NOW,
        )
        assert not engine.poll_all_once()
        payer_roles = sts_backends["111111111111"]["aws"].assumed_roles
        member_roles = sts_backends["222222222222"]["aws"].assumed_roles
    assert [r.external_id for r in payer_roles] == ["payer-external-id-42"]
    assert [r.external_id for r in member_roles] == [None]
    assert payer_roles[0].session_name == "budget-exporter"
    text = engine.snapshot.rendered.text.decode()
    assert "payer-external-id-42" not in text
    assert aws.metric_value(text, "budget_source_up", source="payer") == 1
    assert aws.metric_value(text, "budget_source_up", source="member") == 1
    assert aws.metric_value(text, "budget_source_up", source="broken") == 0
    assert aws.metric_value(text, "budget_source_cost_amount", source="payer") == 11.11
    assert aws.metric_value(text, "budget_source_cost_amount", source="member") == 22.22
    # AssumeRole and GetCostAndUsage, each sent once per account.
    assert (
        aws.metric_value(text, "budget_source_api_requests_total", source="payer", status="ok") == 2
    )
    states = engine.live_states()
    assert "network error" in (states["broken"].last_error or "")


@pytest.fixture
def moto_server() -> Any:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    yield url
    requests.post(f"{url}/moto-api/reset", timeout=5)
    server.stop()


def test_exporter_once_against_moto_server(moto_server: str, write_config) -> None:
    today = datetime.now(UTC).date()
    month_start = today.replace(day=1)
    page = grouped(
        [group(["Amazon Elastic Compute Cloud - Compute"], "123.45")],
        start=month_start.isoformat(),
        end=today.isoformat(),
    )
    posted = requests.post(
        f"{moto_server}/moto-api/static/ce/cost-and-usage-results",
        json={"results": [page]},
        timeout=5,
    )
    assert posted.status_code == 201
    budgets = boto3.client("budgets", region_name="us-east-1", endpoint_url=moto_server)
    budgets.create_budget(
        AccountId=DEFAULT_ACCOUNT_ID,
        Budget={
            "BudgetName": "monthly-aws",
            "BudgetLimit": {"Amount": "500", "Unit": "USD"},
            "TimeUnit": "MONTHLY",
            "BudgetType": "COST",
        },
    )
    path = write_config(
        f"""
        global:
          retries: 0
          timeout: 10s
        sources:
          - name: aws
            provider: aws_cost_explorer
            endpoint_url: {moto_server}
            forecast: false
          - name: aws-budgets
            provider: aws_budgets
            endpoint_url: {moto_server}
        budgets:
          - name: aws
            limit_from: {{source: aws-budgets, budget: monthly-aws}}
            currency: USD
            sources: [aws]
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    run = subprocess.run(
        [sys.executable, "-m", "budget_exporter", "--config.file", str(path), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert aws.metric_value(text, "budget_source_up", source="aws") == 1
    assert aws.metric_value(text, "budget_source_up", source="aws-budgets") == 1
    assert aws.metric_value(text, "budget_limit_amount", budget="aws") == 500
    if today.day == 1:  # empty month-to-date range: nothing asked, nothing spent
        assert aws.metric_value(text, "budget_spend_amount", budget="aws") == 0
        assert aws.metric_value(text, "budget_source_cost_amount", source="aws") is None
    else:
        assert aws.metric_value(text, "budget_spend_amount", budget="aws") == 123.45
        ec2 = "Amazon Elastic Compute Cloud - Compute"
        cost = aws.metric_value(text, "budget_source_cost_amount", source="aws", service_name=ec2)
        assert cost == 123.45
        assert (
            aws.metric_value(text, "budget_source_api_requests_total", source="aws", status="ok")
            == 1
        )
