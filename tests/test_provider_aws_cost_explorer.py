"""aws_cost_explorer against moto (queued Cost Explorer results), botocore's
Stubber (GetCostForecast, error answers) and a moto_server on 127.0.0.1.

Payloads are shaped as in shared/provider-apis.md: amounts are strings, tag
keys come as ``Key$Value``, pages carry ``NextPageToken``.  Fake credentials
come from the environment and a socket guard refuses anything but loopback,
so no test can reach real AWS.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from moto import mock_aws
from moto.ce.models import ce_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from budget_exporter.config import load_config
from budget_exporter.errors import ConfigError, SourceError
from budget_exporter.model import Period, PollResult
from budget_exporter.periods import window_at
from budget_exporter.providers._aws import IAM_ACTIONS
from budget_exporter.providers.aws_cost_explorer import (
    CostExplorerConfig,
    CostExplorerProvider,
    parse_pages,
)
from tests.support import aws
from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
from tests.support.net import free_port

NOW = datetime(2026, 8, 21, 12, 0, tzinfo=UTC)
MONTH = window_at(Period.MONTHLY, NOW)
SERVICE_AND_TAG = [
    {"Type": "DIMENSION", "Key": "SERVICE"},
    {"Type": "TAG", "Key": "Environment"},
]

# -- helpers -------------------------------------------------------------------------


class Harness(aws.Harness):
    """Cost Explorer with forecasts off unless asked, and one retry by default."""

    provider_class = CostExplorerProvider
    source = "aws"

    def __init__(self, now: datetime = NOW, retries: int = 1, **settings: Any) -> None:
        super().__init__(now, retries, **{"forecast": False, **settings})

    def poll(self, *periods: Period) -> PollResult:
        windows = [window_at(p, self.now) for p in periods or (Period.MONTHLY,)]
        return self.provider.poll(windows)

    def stub_forecast(self) -> Stubber:
        """A Stubber on a second CE client of the same session, used for forecasts only."""
        client = self.provider.aws.new_client("ce")
        stubber = Stubber(client)
        stubber.activate()
        self.provider._forecast_client = lambda: client  # type: ignore[method-assign]
        return stubber


def queue(*results: dict[str, Any], account: str = DEFAULT_ACCOUNT_ID) -> None:
    """Queue GetCostAndUsage answers in moto, in the order the exporter asks."""
    ce_backends[account]["global"].cost_usage_results_queue.extend(results)


def sent(account: str = DEFAULT_ACCOUNT_ID) -> list[dict[str, Any]]:
    """The GetCostAndUsage request bodies moto answered from the queue, in order."""
    return [json.loads(body) for body in ce_backends[account]["global"].cost_usage_results]


def group(keys: list[str], amount: str, metric: str = "UnblendedCost") -> dict[str, Any]:
    return {"Keys": keys, "Metrics": {metric: {"Amount": amount, "Unit": "USD"}}}


def grouped(
    groups: list[dict[str, Any]],
    *,
    start: str = "2026-08-01",
    end: str = "2026-08-21",
    estimated: bool = True,
    token: str | None = None,
    definitions: list[dict[str, str]] | None = None,
    attributes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    page: dict[str, Any] = {
        "GroupDefinitions": definitions or [{"Type": "DIMENSION", "Key": "SERVICE"}],
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": start, "End": end},
                "Total": {},
                "Groups": groups,
                "Estimated": estimated,
            }
        ],
        "DimensionValueAttributes": attributes or [],
    }
    if token:
        page["NextPageToken"] = token
    return page


def total(amount: str, *, start: str, end: str, estimated: bool) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": start, "End": end},
        "Total": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}},
        "Groups": [],
        "Estimated": estimated,
    }


def by_dims(result: PollResult, period: Period = Period.MONTHLY) -> dict[tuple, Decimal]:
    return {ln.dimensions: ln.amount for ln in result.lines if ln.period == period}


def sample(result: PollResult, name: str, **labels: str) -> float | None:
    for s in result.samples:
        if s.name == name and dict(s.labels) == labels:
            return s.value
    return None


def forecast_answer(amount: str, start: str, end: str) -> dict[str, Any]:
    return {
        "Total": {"Amount": amount, "Unit": "USD"},
        "ForecastResultsByTime": [
            {"TimePeriod": {"Start": start, "End": end}, "MeanValue": amount}
        ],
    }


def expect_forecast(
    stubber: Stubber, amount: str, start: str, end: str = "2026-09-01", **request: Any
) -> None:
    """Stub one GetCostForecast answer of ``amount`` for [start, end).

    Given ``request`` fields (Metric, Filter...), the Stubber also checks that the exporter
    asks for exactly that period, monthly, with those fields.
    """
    expected = None
    if request:
        expected = {"TimePeriod": {"Start": start, "End": end}, "Granularity": "MONTHLY", **request}
    stubber.add_response("get_cost_forecast", forecast_answer(amount, start, end), expected)


def refuse_forecast(stubber: Stubber, code: str, message: str) -> None:
    """Stub one GetCostForecast error answer (HTTP 400, as Cost Explorer sends them)."""
    stubber.add_client_error(
        "get_cost_forecast",
        service_error_code=code,
        service_message=message,
        http_status_code=400,
    )


# -- configuration -------------------------------------------------------------------


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
        "from budget_exporter.config import load_config\n"
        "from budget_exporter.errors import ConfigError\n"
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


# -- GetCostAndUsage through moto ------------------------------------------------------


def test_every_page_groups_tags_and_estimated_flag() -> None:
    with mock_aws():
        queue(
            grouped(
                [
                    group(["Amazon Simple Storage Service", "Environment$Dev"], "0.2682364644"),
                    group(["Amazon Elastic Compute Cloud - Compute", "Environment$Prod"], "812.5"),
                ],
                definitions=SERVICE_AND_TAG,
                token="page-2-token",
            ),
            grouped(
                [
                    group(
                        ["Amazon Elastic Compute Cloud - Compute", "Environment$"], "40.0000000001"
                    ),
                    group(["Tax", "Environment$"], "-3.10"),
                ],
                definitions=SERVICE_AND_TAG,
            ),
        )
        h = Harness(group_by=["SERVICE", "TAG:Environment"])
        result = h.poll()
        bodies = sent()

    assert by_dims(result) == {
        (("service_name", "Amazon Simple Storage Service"), ("tag_environment", "Dev")): Decimal(
            "0.2682364644"
        ),
        (("service_name", "Amazon Elastic Compute Cloud - Compute"), ("tag_environment", "Prod")): (
            Decimal("812.5")
        ),
        (("service_name", "Amazon Elastic Compute Cloud - Compute"), ("tag_environment", "")): (
            Decimal("40.0000000001")
        ),
        (("service_name", "Tax"), ("tag_environment", "")): Decimal("-3.10"),
    }
    assert {ln.currency for ln in result.lines} == {"USD"}
    assert sample(result, "budget_source_cost_estimated") == 1
    # Two pages: two billed requests, both counted; the second carries the token.
    assert h.requests == Counter({"ok": 2})
    assert len(bodies) == 2
    first, second = bodies
    assert first == {
        "TimePeriod": {"Start": "2026-08-01", "End": "2026-08-21"},
        "Granularity": "MONTHLY",
        "Metrics": ["UnblendedCost"],
        "GroupBy": SERVICE_AND_TAG,
    }
    assert second == {**first, "NextPageToken": "page-2-token"}


def test_ungrouped_total_with_final_figures_and_other_metric() -> None:
    page = {
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": "2026-08-01", "End": "2026-08-21"},
                "Total": {"AmortizedCost": {"Amount": "4.1294931175", "Unit": "USD"}},
                "Groups": [],
                "Estimated": False,
            }
        ],
        "DimensionValueAttributes": [],
    }
    with mock_aws():
        queue(page)
        h = Harness(group_by=[], metric="AmortizedCost")
        result = h.poll()
        (body,) = sent()
    assert by_dims(result) == {(): Decimal("4.1294931175")}
    assert sample(result, "budget_source_cost_estimated") == 0
    assert body["Metrics"] == ["AmortizedCost"]
    assert "GroupBy" not in body


def test_linked_accounts_get_names_and_regions() -> None:
    definitions = [
        {"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"},
        {"Type": "DIMENSION", "Key": "REGION"},
    ]
    attributes = [
        {"Value": "111111111111", "Attributes": {"description": "production"}},
        {"Value": "222222222222", "Attributes": {"description": "staging"}},
    ]
    with mock_aws():
        queue(
            grouped(
                [
                    group(["111111111111", "eu-west-1"], "10.5"),
                    group(["222222222222", "us-east-1"], "2"),
                    group(["222222222222", "global"], "0.25"),
                ],
                definitions=definitions,
                attributes=attributes,
            )
        )
        result = Harness(group_by=["LINKED_ACCOUNT", "REGION"]).poll()
    assert by_dims(result) == {
        (
            ("region_id", "eu-west-1"),
            ("sub_account_id", "111111111111"),
            ("sub_account_name", "production"),
        ): Decimal("10.5"),
        (
            ("region_id", "us-east-1"),
            ("sub_account_id", "222222222222"),
            ("sub_account_name", "staging"),
        ): Decimal("2"),
        (
            ("region_id", "global"),
            ("sub_account_id", "222222222222"),
            ("sub_account_name", "staging"),
        ): Decimal("0.25"),
    }


def test_cost_category_values_lose_their_prefix() -> None:
    with mock_aws():
        queue(
            grouped(
                [group(["Team$Platform"], "7.5"), group(["Team$"], "1.25")],
                definitions=[{"Type": "COST_CATEGORY", "Key": "Team"}],
            )
        )
        result = Harness(group_by=["COST_CATEGORY:Team"]).poll()
    assert by_dims(result) == {
        (("x_cost_category_team", "Platform"),): Decimal("7.5"),
        (("x_cost_category_team", ""),): Decimal("1.25"),
    }


RECORD_TYPES = [
    {"Type": "DIMENSION", "Key": "SERVICE"},
    {"Type": "DIMENSION", "Key": "RECORD_TYPE"},
]
BY_RECORD_TYPE = [
    "SERVICE",
    {"type": "DIMENSION", "key": "RECORD_TYPE", "label": "charge_category"},
]


def test_credits_included_by_default() -> None:
    # Grouped by record type, as AWS answers it: a promotional credit is its own negative line.
    with mock_aws():
        queue(
            grouped(
                [
                    group(["Amazon EC2", "Usage"], "100.00"),
                    group(["Amazon EC2", "Credit"], "-30.00"),
                    group(["AWS Support", "Usage"], "5.00"),
                    group(["Tax", "Tax"], "1.50"),
                ],
                definitions=RECORD_TYPES,
            )
        )
        result = Harness(group_by=BY_RECORD_TYPE).poll()
        (body,) = sent()
    assert "Filter" not in body, "nothing is left out by default"
    assert body["GroupBy"] == RECORD_TYPES
    lines = by_dims(result)
    assert lines[(("charge_category", "Credit"), ("service_name", "Amazon EC2"))] == Decimal("-30")
    assert sum(lines.values()) == Decimal("76.50"), "the total nets the credit"


def test_credits_excluded_on_request() -> None:
    # With the Not RECORD_TYPE filter AWS leaves the credit out of its answer.
    with mock_aws():
        queue(
            grouped(
                [
                    group(["Amazon EC2", "Usage"], "100.00"),
                    group(["AWS Support", "Usage"], "5.00"),
                    group(["Tax", "Tax"], "1.50"),
                ],
                definitions=RECORD_TYPES,
            )
        )
        result = Harness(group_by=BY_RECORD_TYPE, include_credits=False).poll()
        (body,) = sent()
    assert body["Filter"] == {"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit"]}}}
    assert sum(by_dims(result).values()) == Decimal("106.50")


def test_credits_and_refunds_excluded_on_request_with_user_filter() -> None:
    user_filter = {"Dimensions": {"Key": "LINKED_ACCOUNT", "Values": ["111111111111"]}}
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "100.00"), group(["AWS Support"], "0")]))
        h = Harness(include_credits=False, include_refunds=False, filter=user_filter)
        result = h.poll()
        (body,) = sent()
    assert body["Filter"] == {
        "And": [
            user_filter,
            {"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit", "Refund"]}}},
        ]
    }
    assert sum(by_dims(result).values()) == Decimal("100.00")


def test_first_day_of_month_sends_no_request() -> None:
    first = datetime(2026, 9, 1, 0, 30, tzinfo=UTC)
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "999")]))  # must stay unused
        h = Harness(now=first)
        result = h.poll()
        assert sent() == []
    assert result.lines == ()
    assert h.requests == Counter()
    assert sample(result, "budget_source_cost_estimated") is None


def test_month_and_quarter_come_from_one_request() -> None:
    page = {
        "ResultsByTime": [
            total("300.00", start="2026-07-01", end="2026-08-01", estimated=False),
            total("120.50", start="2026-08-01", end="2026-08-21", estimated=True),
        ],
        "DimensionValueAttributes": [],
    }
    with mock_aws():
        queue(page)
        h = Harness(group_by=[])
        result = h.poll(Period.MONTHLY, Period.QUARTERLY)
        (body,) = sent()
    assert body["TimePeriod"] == {"Start": "2026-07-01", "End": "2026-08-21"}
    assert by_dims(result, Period.MONTHLY) == {(): Decimal("120.50")}
    assert by_dims(result, Period.QUARTERLY) == {(): Decimal("420.50")}
    assert sample(result, "budget_source_cost_estimated") == 1
    assert h.requests == Counter({"ok": 1})


def test_max_pages_stops_a_runaway_bill() -> None:
    with mock_aws():
        queue(*(grouped([group([f"svc{i}"], "1")], token=f"t{i}") for i in range(5)))
        h = Harness(max_pages=3)
        with pytest.raises(SourceError, match=r"more than max_pages \(3\)"):
            h.poll()
    assert h.requests == Counter({"ok": 3})


def test_parser_rejects_malformed_amounts() -> None:
    page = grouped([group(["Amazon EC2"], "12,50")])
    with pytest.raises(SourceError, match="not a number"):
        parse_pages([page], "UnblendedCost", 1)
    page = grouped([group(["Amazon EC2", "extra"], "1")])
    with pytest.raises(SourceError, match="expected 1"):
        parse_pages([page], "UnblendedCost", 1)


# -- errors -----------------------------------------------------------------------------


def test_missing_permission_names_the_iam_action() -> None:
    with mock_aws():
        h = Harness()
        client = h.provider.aws.client("ce")
        message = aws.access_denied(client, "get_cost_and_usage", "ce:GetCostAndUsage", h.poll)
    assert "ce:GetCostAndUsage" in message
    assert "access denied" in message


def test_rejected_credentials_are_reported_without_secrets() -> None:
    with mock_aws():
        h = Harness()
        message = aws.stubbed_error(
            h.provider.aws.client("ce"),
            "get_cost_and_usage",
            "UnrecognizedClientException",
            h.poll,
            "The security token included in the request is invalid.",
        )
    assert message == (
        "GetCostAndUsage: AWS rejected the credentials (UnrecognizedClientException)"
    )


def test_failed_assume_role_names_the_role_not_the_external_id() -> None:
    with mock_aws():
        h = Harness(
            role_arn="arn:aws:iam::111111111111:role/budget-reader",
            external_id="very-secret-external-id",
        )
        sts = h.provider.aws._make_client(h.provider.aws._base_session(), "sts")
        h.provider.aws._sts = sts
        message = aws.stubbed_error(
            sts,
            "assume_role",
            "AccessDenied",
            h.poll,
            "User: arn:aws:iam::123456789012:user/monitor is not authorized "
            "to perform: sts:AssumeRole on resource: "
            "arn:aws:iam::111111111111:role/budget-reader",
            http_status_code=403,
        )
    assert message.startswith(
        "cannot assume role arn:aws:iam::111111111111:role/budget-reader (AccessDenied)"
    )
    assert "very-secret-external-id" not in message


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    h = Harness()  # no mock: moto would supply credentials of its own
    with pytest.raises(SourceError, match="no AWS credentials found"):
        h.poll()
    assert h.requests == Counter()


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[float]]:
    """botocore's backoff and adaptive rate-limit waits cut short; the waits it wanted are kept."""
    from botocore.retries.bucket import TokenBucket
    from botocore.retries.standard import ExponentialBackoff

    wanted: dict[str, list[float]] = {"backoff": [], "rate_limit": []}
    real_delay = ExponentialBackoff.delay_amount
    real_sleep = TokenBucket._sleep_amount

    def delay_amount(self: ExponentialBackoff, context: Any) -> float:
        wanted["backoff"].append(real_delay(self, context))
        return 0.01

    def sleep_amount(self: TokenBucket, amount: Any) -> float:
        wanted["rate_limit"].append(real_sleep(self, amount))
        return 0.0

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", delay_amount)
    monkeypatch.setattr(TokenBucket, "_sleep_amount", sleep_amount)
    return wanted


def test_unreachable_endpoint_counts_every_attempt(short_waits: dict[str, list[float]]) -> None:
    h = Harness(endpoint_url=f"http://127.0.0.1:{free_port()}", retries=1)
    with pytest.raises(SourceError, match="network error"):
        h.poll()
    assert h.requests == Counter({"network": 2})
    assert len(short_waits["backoff"]) == 1


def test_real_aws_is_out_of_reach() -> None:
    # No mock active: the request must fail on the loopback guard, never leave the host.
    h = Harness(retries=0)
    with pytest.raises(SourceError, match="network error"):
        h.poll()
    assert h.requests == Counter({"network": 1})


class _Body:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = json.dumps(data).encode()

    def stream(self, **_: Any) -> Any:
        yield self.data


def _wire(status: int, data: dict[str, Any]) -> AWSResponse:
    headers = {"x-amzn-RequestId": "test", "Content-Type": "application/x-amz-json-1.1"}
    return AWSResponse("https://ce.us-east-1.amazonaws.com/", status, headers, _Body(data))


def test_throttled_attempts_are_retried_and_counted(
    short_waits: dict[str, list[float]],
) -> None:
    # Answers on the wire (botocore parses, retries and counts them as for real AWS).
    throttled = {"__type": "LimitExceededException", "Message": "Rate exceeded"}
    answers = [
        _wire(400, throttled),
        _wire(200, grouped([group(["Amazon EC2"], "5.5")])),
        _wire(400, throttled),
        _wire(200, forecast_answer("44.5", "2026-08-21", "2026-09-01")),
    ]
    h = Harness(retries=2, forecast=True)
    client = h.provider.aws.client("ce")
    client.meta.events.register("before-send.cost-explorer", lambda **_: answers.pop(0))
    result = h.poll()
    assert answers == []
    assert by_dims(result) == {(("service_name", "Amazon EC2"),): Decimal("5.5")}
    assert result.forecasts[0].amount == Decimal("50.0")
    assert h.requests == Counter({"throttled": 2, "ok": 2})
    assert len(short_waits["backoff"]) == 2  # one backoff per throttled attempt
    # Adaptive mode: after throttling, the client-side rate limiter wanted to slow down.
    assert any(wait > 0 for wait in short_waits["rate_limit"])


def test_throttled_beyond_retries_fails_the_poll(short_waits: dict[str, list[float]]) -> None:
    throttled = {"__type": "LimitExceededException", "Message": "Rate exceeded"}
    answers = [_wire(400, throttled), _wire(400, throttled)]
    h = Harness(retries=1)
    h.provider.aws.client("ce").meta.events.register(
        "before-send.cost-explorer", lambda **_: answers.pop(0)
    )
    with pytest.raises(SourceError, match=r"throttled by AWS \(LimitExceededException\)"):
        h.poll()
    assert h.requests == Counter({"throttled": 2})


# -- GetCostForecast (Stubber) -----------------------------------------------------------


def test_forecast_is_spend_plus_aws_forecast_for_the_rest_of_the_month() -> None:
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "200.00"), group(["Amazon S3"], "10.00")]))
        h = Harness(forecast=True, include_credits=False)
        stubber = h.stub_forecast()
        expect_forecast(
            stubber,
            "330.0",
            "2026-08-21",
            Metric="UNBLENDED_COST",
            Filter={"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit"]}}},
        )
        result = h.poll()
        stubber.assert_no_pending_responses()
    (forecast,) = result.forecasts
    assert (forecast.period, forecast.amount, forecast.currency) == (
        Period.MONTHLY,
        Decimal("540.00"),
        "USD",
    )
    assert sample(result, "budget_source_forecast_available", period="monthly") == 1


def test_forecast_has_its_own_interval_and_is_prorated_between_fetches() -> None:
    with mock_aws():
        queue(
            grouped([group(["Amazon EC2"], "200.00", "NetAmortizedCost")]),
            grouped([group(["Amazon EC2"], "230.00", "NetAmortizedCost")], end="2026-08-22"),
            grouped([group(["Amazon EC2"], "240.00", "NetAmortizedCost")], end="2026-08-23"),
        )
        h = Harness(forecast=True, forecast_interval="36h", metric="NetAmortizedCost")
        stubber = h.stub_forecast()
        expect_forecast(stubber, "330.0", "2026-08-21", Metric="NET_AMORTIZED_COST")
        first = h.poll()
        h.now = NOW + timedelta(days=1)  # within 36h: no new forecast request
        second = h.poll()
        stubber.assert_no_pending_responses()
        expect_forecast(stubber, "270.0", "2026-08-23", Metric="NET_AMORTIZED_COST")
        h.now = NOW + timedelta(days=2)  # 48h > 36h: fetched again
        third = h.poll()
        stubber.assert_no_pending_responses()
    assert first.forecasts[0].amount == Decimal("530.0")
    # 330 over 11 days left, now 10 days left: 300 on top of the new spend.
    assert second.forecasts[0].amount == Decimal("530.0")
    assert third.forecasts[0].amount == Decimal("510.0")


def test_data_unavailable_falls_back_without_failing_the_source() -> None:
    with mock_aws():
        queue(
            grouped([group(["Amazon EC2"], "3.00")]),
            grouped([group(["Amazon EC2"], "4.00")], end="2026-08-22"),
        )
        h = Harness(forecast=True)
        stubber = h.stub_forecast()
        refuse_forecast(
            stubber,
            "DataUnavailableException",
            "Insufficient amount of historical data to generate forecast.",
        )
        result = h.poll()
        h.now = NOW + timedelta(days=1) - timedelta(minutes=1)  # still within 24h
        later = h.poll()
        stubber.assert_no_pending_responses()
    assert result.forecasts == () and later.forecasts == ()
    assert by_dims(result) == {(("service_name", "Amazon EC2"),): Decimal("3.00")}
    assert by_dims(later) == {(("service_name", "Amazon EC2"),): Decimal("4.00")}
    assert sample(result, "budget_source_forecast_available", period="monthly") == 0


def test_other_forecast_errors_fall_back_and_are_retried_next_poll(caplog) -> None:
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "3.00")]))
        h = Harness(forecast=True)
        stubber = h.stub_forecast()
        refuse_forecast(
            stubber, "AccessDeniedException", "not authorized to perform: ce:GetCostForecast"
        )
        expect_forecast(stubber, "7.0", "2026-08-21")
        with caplog.at_level(logging.WARNING, logger="budget_exporter.aws"):
            failed = h.poll()
        retried = h.poll()
        stubber.assert_no_pending_responses()
    assert failed.forecasts == ()
    assert "ce:GetCostForecast" in caplog.text
    assert retried.forecasts[0].amount == Decimal("10.00")


def test_forecast_on_the_first_day_needs_no_spend_request() -> None:
    first = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)
    with mock_aws():
        h = Harness(now=first, forecast=True)
        stubber = h.stub_forecast()
        expect_forecast(stubber, "900.0", "2026-09-01", "2026-10-01", Metric="UNBLENDED_COST")
        result = h.poll()
        assert sent() == []
    assert result.lines == ()
    assert result.forecasts[0].amount == Decimal("900.0")


def test_rejected_credentials_on_the_forecast_fail_the_source() -> None:
    # On the first day the forecast is the only request: bad keys must not look healthy.
    with mock_aws():
        h = Harness(now=datetime(2026, 9, 1, 6, 0, tzinfo=UTC), forecast=True)
        stubber = h.stub_forecast()
        refuse_forecast(
            stubber,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        )
        with pytest.raises(SourceError) as info:
            h.poll()
    assert (
        str(info.value) == "GetCostForecast: AWS rejected the credentials (ExpiredTokenException)"
    )


# -- whole exporter -----------------------------------------------------------------------


def test_whole_exporter_exports_spend_forecast_and_health(make_engine) -> None:
    with mock_aws():
        queue(
            grouped(
                [
                    group(["Amazon Elastic Compute Cloud - Compute", "team$ml"], "41.25"),
                    group(["Amazon Simple Storage Service", "team$web"], "8.75"),
                ],
                definitions=[
                    {"Type": "DIMENSION", "Key": "SERVICE"},
                    {"Type": "TAG", "Key": "team"},
                ],
                token="next",
            ),
            grouped(
                [group(["AWS Lambda", "team$ml"], "10.00")],
                definitions=[
                    {"Type": "DIMENSION", "Key": "SERVICE"},
                    {"Type": "TAG", "Key": "team"},
                ],
            ),
        )
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


# -- a user debugging a config against moto_server -----------------------------------------


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
    answer = requests.post(
        f"{moto_server}/moto-api/static/ce/cost-and-usage-results",
        json={"results": [page]},
        timeout=5,
    )
    assert answer.status_code == 201
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


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SANDBOX_EXTERNAL_ID", "example-external-id")
    example = Path(__file__).parent.parent / "examples" / "aws.yml"
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
