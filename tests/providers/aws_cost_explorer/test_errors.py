"""aws_cost_explorer: permission, credential, network and throttling errors."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from budget_exporter.core.errors import SourceError
from tests.support import aws
from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
from tests.support.aws_cost_explorer import (
    Harness,
    by_dims,
    forecast_answer,
    group,
    grouped,
)
from tests.support.net import free_port


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
