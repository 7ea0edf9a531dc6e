"""A failing upstream never crashes the exporter, never blanks other sources,
keeps the last good values, reports the source down, and recovers."""

from __future__ import annotations

import time

import pytest

from tests.exposition.test_families import samples
from tests.support.fake_upstream import Reply

CONFIG = """
global: {{timeout: 300ms, retries: {retries}, retry_backoff: 10ms, max_retry_after: 2s}}
sources:
  - name: usage
    provider: http_json
    url: "{url}/v1/cost?key=${{USAGE_KEY}}"
    headers: {{Authorization: "Bearer ${{TOKEN}}"}}
    amount: data.total
    currency: USD
  - {{name: invoices, provider: static, amount: 100, currency: USD}}
budgets:
  - {{name: usage, limit: 100, currency: USD, sources: [usage]}}
  - {{name: invoices, limit: 1000, currency: USD, sources: [invoices]}}
"""

FAULTS = {
    "500": ([Reply(500, {"error": "boom"})], "server_error", "answered HTTP 500"),
    "429": (
        [Reply(429, {"error": "slow down"}, headers={"Retry-After": "0"})],
        "throttled",
        "answered HTTP 429",
    ),
    "not json": ([Reply(200, body=b"<html>oops</html>")], "ok", "did not answer JSON"),
    "hang": ([Reply(200, {"data": {"total": 1}}, delay=1.5)], "timeout", "timed out"),
    "trickle": (
        [Reply(200, {"data": {"total": 1, "padding": "x" * 40}}, trickle=0.05)],
        "timeout",
        "no complete answer within 0.3s",
    ),
    "missing field": ([Reply(200, {"data": {}})], "ok", "amount (data.total) is missing"),
    "401": ([Reply(401, {"error": "bad key"})], "client_error", "answered HTTP 401"),
}


@pytest.fixture
def engine(make_engine, upstream, monkeypatch):
    monkeypatch.setenv("USAGE_KEY", "query-secret-123")
    monkeypatch.setenv("TOKEN", "header-secret-456")
    return make_engine(CONFIG.format(url=upstream.url, retries=0))


def metric(engine, name: str, **labels: str) -> float | None:
    for found, value in samples(engine.snapshot.rendered.text).get(name, []):
        if all(found.get(k) == v for k, v in labels.items()):
            return value
    return None


@pytest.mark.parametrize("fault", FAULTS, ids=FAULTS)
def test_fault_keeps_last_good_value_and_recovers(engine, upstream, fault: str) -> None:
    replies, status, message = FAULTS[fault]
    upstream.reply(Reply(200, {"data": {"total": "42.5"}}))
    assert engine.poll_all_once()
    assert metric(engine, "budget_spend_amount", budget="usage") == 42.5
    first_success = metric(engine, "budget_source_last_success_timestamp_seconds", source="usage")

    upstream.reply(*replies)
    assert not engine.runners["usage"].poll()
    assert engine.runners["invoices"].poll()
    assert metric(engine, "budget_source_up", source="usage") == 0
    assert metric(engine, "budget_spend_amount", budget="usage") == 42.5  # last good value stays
    assert metric(engine, "budget_source_cost_amount", source="usage") == 42.5
    assert (
        metric(engine, "budget_source_last_success_timestamp_seconds", source="usage")
        == first_success
    )
    assert metric(engine, "budget_source_up", source="invoices") == 1
    assert metric(engine, "budget_spend_amount", budget="invoices") == 100
    assert metric(engine, "budget_source_api_requests_total", source="usage", status=status) >= 1
    error = engine.live_states()["usage"].last_error
    assert message in error
    assert "query-secret-123" not in error and "header-secret-456" not in error

    upstream.reply(Reply(200, {"data": {"total": 43}}))
    assert engine.runners["usage"].poll()
    assert metric(engine, "budget_source_up", source="usage") == 1
    assert metric(engine, "budget_spend_amount", budget="usage") == 43


def test_retries_transient_errors_and_counts_every_request(make_engine, upstream) -> None:
    engine = make_engine(
        CONFIG.format(url=upstream.url, retries=3)
        .replace("${USAGE_KEY}", "k")
        .replace("${TOKEN}", "t")
    )
    upstream.reply(
        Reply(503, {"error": "unavailable"}),
        Reply(429, {"error": "slow"}, headers={"Retry-After": "1"}),
        Reply(200, {"data": {"total": 7}}, delay=1.0),  # read timeout, retried
        Reply(200, {"data": {"total": 7}}),
    )
    started = time.monotonic()
    assert engine.runners["usage"].poll()
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert metric(engine, "budget_spend_amount", budget="usage") == 7
    counts = {
        s: metric(engine, "budget_source_api_requests_total", source="usage", status=s)
        for s in ("ok", "server_error", "throttled", "timeout")
    }
    assert counts == {"ok": 1, "server_error": 1, "throttled": 1, "timeout": 1}
    assert len(upstream.seen) == 4


def test_retries_give_up_and_count_each_attempt(make_engine, upstream) -> None:
    engine = make_engine(
        CONFIG.format(url=upstream.url, retries=2)
        .replace("${USAGE_KEY}", "k")
        .replace("${TOKEN}", "t")
    )
    upstream.default = Reply(502, {"error": "bad gateway"})
    assert not engine.runners["usage"].poll()
    assert (
        metric(engine, "budget_source_api_requests_total", source="usage", status="server_error")
        == 3
    )
    assert len(upstream.seen) == 3


def test_connection_refused_is_a_network_failure(make_engine, upstream) -> None:
    url = upstream.url
    upstream.stop()
    engine = make_engine(
        CONFIG.format(url=url, retries=0).replace("${USAGE_KEY}", "k").replace("${TOKEN}", "t")
    )
    assert not engine.poll_all_once()
    assert metric(engine, "budget_source_api_requests_total", source="usage", status="network") == 1
    assert metric(engine, "budget_source_up", source="invoices") == 1
    assert "budget_spend_amount" in samples(engine.snapshot.rendered.text)


def test_a_crashing_provider_is_contained(make_engine) -> None:
    engine = make_engine(
        """
        sources:
          - {name: a, provider: static, amount: 1, currency: USD}
          - {name: b, provider: static, amount: 2, currency: USD}
        """
    )

    def explode(windows):
        raise RuntimeError("unexpected bug")

    engine.runners["a"].provider.poll = explode  # type: ignore[method-assign]
    assert not engine.poll_all_once()
    assert engine.live_states()["a"].last_error == "RuntimeError: unexpected bug"
    assert metric(engine, "budget_source_up", source="b") == 1


def test_a_provider_that_cannot_even_start_is_contained(make_engine, monkeypatch) -> None:
    from budget_exporter.providers.static import StaticProvider

    def broken_init(self, config, context):
        raise RuntimeError("no credentials found")

    monkeypatch.setattr(StaticProvider, "__init__", broken_init)
    engine = make_engine("sources: [{name: a, provider: static, amount: 1, currency: USD}]")
    assert not engine.poll_all_once()
    assert engine.live_states()["a"].last_error == "RuntimeError: no credentials found"
    assert metric(engine, "budget_source_up", source="a") == 0


def test_a_body_cut_short_is_a_counted_network_failure(make_engine) -> None:
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    engine = make_engine(
        CONFIG.format(url=f"http://127.0.0.1:{port}", retries=0)
        .replace("${USAGE_KEY}", "k")
        .replace("${TOKEN}", "t")
    )
    assert not engine.runners["usage"].poll()
    listener.close()
    assert "failed" in (engine.live_states()["usage"].last_error or "")
    assert metric(engine, "budget_source_api_requests_total", source="usage", status="network") == 1


def test_redirects_are_not_followed(make_engine, upstream) -> None:
    upstream.reply(Reply(302, {}, headers={"Location": "http://127.0.0.2:9/steal"}))
    engine = make_engine(
        CONFIG.format(url=upstream.url, retries=0)
        .replace("${USAGE_KEY}", "k")
        .replace("${TOKEN}", "t")
    )
    assert not engine.runners["usage"].poll()
    error = engine.live_states()["usage"].last_error or ""
    assert "a redirect to http://127.0.0.2:9/steal: not followed" in error
    assert len(upstream.seen) == 1
