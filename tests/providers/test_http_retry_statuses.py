"""Which HTTP answers the client retries: 429 and every 5xx a retry can fix."""

from __future__ import annotations

import time

import pytest

from budget_exporter.providers._http import (
    NEVER_RETRIED_5XX,
    RETRY_STATUSES,
    HttpClient,
    HttpStatusError,
)
from tests.support.fake_upstream import FakeUpstream, Reply

RETRIED_ON_SIGHT = {500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524, 525, 526, 529, 530}


def client(recorded: list[str]) -> HttpClient:
    return HttpClient(timeout=2.0, retries=1, backoff=0.001, record=recorded.append)


def test_the_rule_covers_every_5xx_code() -> None:
    assert {501, 505, 506, 508, 510, 511} == NEVER_RETRIED_5XX
    assert RETRIED_ON_SIGHT <= RETRY_STATUSES
    assert 429 in RETRY_STATUSES
    assert all(code not in RETRY_STATUSES for code in range(400, 429))
    for code in range(500, 600):
        assert (code in RETRY_STATUSES) != (code in NEVER_RETRIED_5XX), code


def test_every_5xx_code_is_retried_or_fails_at_once_as_the_rule_says(
    upstream: FakeUpstream,
) -> None:
    """One real request per code against a loopback server: a retried code is
    followed by a second request (which succeeds), a never-retried one fails at once."""
    for code in range(500, 600):
        recorded: list[str] = []
        http = client(recorded)
        seen_before = len(upstream.seen)
        upstream.reply(Reply(code, {"error": "x"}), Reply(200, {"ok": True}))
        try:
            if code in NEVER_RETRIED_5XX:
                with pytest.raises(HttpStatusError) as failure:
                    http.json("GET", f"{upstream.url}/c{code}")
                assert failure.value.status == code
                assert recorded == ["server_error"], code
                assert len(upstream.seen) - seen_before == 1, code
                upstream.queue.clear()  # the 200 nobody asked for
            else:
                assert http.json("GET", f"{upstream.url}/c{code}") == {"ok": True}, code
                assert recorded == ["server_error", "ok"], code
                assert len(upstream.seen) - seen_before == 2, code
        finally:
            http.close()


@pytest.mark.parametrize("code", [520, 529])
def test_retry_after_is_honoured_on_any_retried_code(upstream: FakeUpstream, code: int) -> None:
    recorded: list[str] = []
    http = client(recorded)
    upstream.reply(Reply(code, {"error": "overloaded"}, headers={"Retry-After": "1"}))
    upstream.reply(Reply(200, {"total": 1}))
    started = time.monotonic()
    try:
        assert http.json("GET", f"{upstream.url}/v1") == {"total": 1}
    finally:
        http.close()
    assert time.monotonic() - started >= 1.0
    assert recorded == ["server_error", "ok"]
