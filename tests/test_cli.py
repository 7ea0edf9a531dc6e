from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.exporter import ExporterProcess, exporters, run
from tests.support.fake_upstream import Reply
from tests.support.paths import ROOT


@pytest.fixture
def running() -> Iterator[Callable[..., ExporterProcess]]:
    yield from exporters()


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("budget-exporter ")


def test_config_check_ok() -> None:
    proc = run("--config.file", str(ROOT / "examples" / "demo.yml"), "--config.check")
    assert proc.returncode == 0 and "OK (4 sources, 4 budgets)" in proc.stdout


def test_once_prints_metrics_and_exit_code_follows_sources(write_config, upstream) -> None:
    proc = run("--config.file", str(ROOT / "examples" / "demo.yml"), "--once")
    assert proc.returncode == 0
    assert (
        'budget_limit_amount{budget="global",currency="USD",period="monthly",team="finops"} 3000.0'
        in proc.stdout
    )
    upstream.default = Reply(500, {"error": "down"})
    path = write_config(
        f"""
        global: {{retries: 0}}
        sources:
          - {{name: broken, provider: http_json, url: "{upstream.url}/cost", amount: total, currency: USD}}
          - {{name: fine, provider: static, amount: 1, currency: USD}}
        """
    )
    proc = run("--config.file", str(path), "--once")
    assert proc.returncode == 1
    assert 'budget_source_up{provider="http_json",source="broken"} 0.0' in proc.stdout
    assert 'budget_source_up{provider="static",source="fine"} 1.0' in proc.stdout
    assert "answered HTTP 500" in proc.stderr


def test_sighup_reload_and_sigterm_shutdown(write_config, running) -> None:
    path = write_config(
        "sources: [{name: a, provider: static, amount: 1, currency: USD}]\n"
        "budgets: [{name: b, limit: 10, currency: USD}]\n"
    )
    exporter = running(path)
    exporter.wait_ready()
    assert (
        'budget_limit_amount{budget="b",currency="USD",period="monthly"} 10.0'
        in requests.get(f"{exporter.url}/metrics", timeout=5).text
    )
    path.write_text(path.read_text().replace("limit: 10", "limit: 25"))
    exporter.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if 'period="monthly"} 25.0' in requests.get(f"{exporter.url}/metrics", timeout=5).text:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("SIGHUP did not reload the configuration")
    path.write_text("sources: [{name: a, provider: nope}]\n")
    exporter.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (
        "budget_exporter_config_last_reload_successful 0.0"
        not in requests.get(f"{exporter.url}/metrics", timeout=5).text
    ):
        assert time.monotonic() < deadline, "failed reload not reported"
        time.sleep(0.05)
    assert 'period="monthly"} 25.0' in requests.get(f"{exporter.url}/metrics", timeout=5).text
    code, err = exporter.stop()
    assert code == 0
    assert "reload rejected" in err and "unknown provider 'nope'" in err
    assert "shutting down" in err and "Traceback" not in err


def test_port_in_use_is_a_clean_error(write_config) -> None:
    path = write_config("sources: [{name: a, provider: static, amount: 1, currency: USD}]\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = run("--config.file", str(path), f"--web.listen-address=127.0.0.1:{port}")
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_secrets_never_leak(write_config, running, upstream) -> None:
    query_key, token = "qk-9f8e7d6c5b4a", "tok-1a2b3c4d5e6f"
    upstream.reply(
        Reply(200, {"data": {"total": 5}}),
        Reply(401, {"error": f"invalid key {query_key}", "auth": f"Bearer {token}"}),
    )
    upstream.default = Reply(500, body=f"<p>upstream echoed {query_key}</p>".encode())
    path = write_config(
        f"""
        global: {{poll_interval: 300ms, retries: 1, retry_backoff: 10ms, timeout: 1s}}
        sources:
          - name: usage
            provider: http_json
            url: "{upstream.url}/v2/account?api_key=${{USAGE_KEY}}"
            headers: {{Authorization: "Bearer ${{TOKEN}}"}}
            amount: data.total
            currency: USD
        budgets: [{{name: b, limit: 10, currency: USD}}]
        """
    )
    env = {"USAGE_KEY": query_key, "TOKEN": token}
    exporter = running(path, "--log.level=debug", env=env)
    exporter.wait_ready()
    deadline = time.monotonic() + 10
    while len(upstream.seen) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pages = [
        requests.get(f"{exporter.url}{p}", timeout=5).text for p in ("/metrics", "/", "/-/ready")
    ]
    _, err = exporter.stop()
    once = run("--config.file", str(path), "--once", "--log.level=debug", env=env)
    json_logs = run(
        "--config.file", str(path), "--once", "--log.level=debug", "--log.format=json", env=env
    )
    assert upstream.seen[0].query["api_key"] == query_key  # the secret was really used
    assert "answered HTTP 500" in err and "<redacted>" in err
    for text in (*pages, err, once.stdout, once.stderr, json_logs.stderr):
        assert query_key not in text
        assert token not in text


def test_the_read_timeout_bounds_answers_too() -> None:
    from budget_exporter.cli import web_limits

    limits = web_limits("7s", 100)
    assert limits.read_timeout == limits.write_timeout == 7.0
    assert limits.max_connections == 100
    assert 8 <= limits.workers <= 16  # well below the connection cap
