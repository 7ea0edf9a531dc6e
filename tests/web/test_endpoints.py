from __future__ import annotations

import gzip
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from budget_exporter.web.endpoints import ExporterServer, parse_listen_address
from budget_exporter.web.webconfig import load_web_config
from tests.support.tls import tls_web_config

CONFIG = """
sources:
  - {name: a, provider: static, amount: 85, currency: USD}
  - {name: b, provider: static, amount: 5, currency: EUR}
budgets:
  - {name: team-a, limit: 100, currency: USD, sources: [a]}
  - {name: euro, limit: 100, currency: EUR, sources: [b]}
"""


@pytest.fixture
def serve(make_engine) -> Iterator:
    servers: list[ExporterServer] = []

    def start(text: str = CONFIG, engine=None, **kwargs) -> tuple[ExporterServer, str]:
        engine = engine or make_engine(text)
        server = ExporterServer(engine, "127.0.0.1:0", **kwargs)
        server.start()
        servers.append(server)
        return server, f"{server.scheme}://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.shutdown()


def own_series(body: bytes) -> list[bytes]:
    """The exposition without the per-scrape ``process_*`` lines."""
    return [line for line in body.splitlines() if b"process_" not in line]


def test_endpoints(serve) -> None:
    server, url = serve()
    assert requests.get(f"{url}/-/healthy", timeout=5).status_code == 200
    ready = requests.get(f"{url}/-/ready", timeout=5)
    assert ready.status_code == 503 and "a, b" in ready.text
    server.engine.poll_all_once()
    assert requests.get(f"{url}/-/ready", timeout=5).status_code == 200

    plain = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"}, timeout=5)
    assert plain.status_code == 200
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'budget_spend_amount{budget="team-a",currency="USD",period="monthly"} 85.0' in plain.text
    raw = requests.get(
        f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True
    )
    assert raw.headers["Content-Encoding"] == "gzip"
    # the same exposition; only the process_* metrics of the moment differ
    assert own_series(gzip.decompress(raw.raw.read())) == own_series(plain.content)
    assert b"\nprocess_resident_memory_bytes " in plain.content

    page = requests.get(f"{url}/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "team-a" in page.text and "85.00 USD" in page.text and "85.0%" in page.text
    assert 'href="/metrics"' in page.text and "warning" in page.text

    assert requests.get(f"{url}/nope", timeout=5).status_code == 404
    assert requests.post(f"{url}/metrics", timeout=5).status_code == 405
    assert requests.get(f"{url}/-/reload", timeout=5).status_code == 405
    head = requests.head(f"{url}/metrics", timeout=5)
    assert head.status_code == 200 and head.content == b""


def test_reload_needs_the_lifecycle_flag(serve) -> None:
    _, url = serve()  # as without --web.enable-lifecycle
    answer = requests.post(f"{url}/-/reload", timeout=5)
    assert answer.status_code == 403 and "Lifecycle API is not enabled" in answer.text


def test_reload_endpoint(serve, write_config, make_engine) -> None:
    engine = make_engine(CONFIG)
    server, url = serve(engine=engine, on_reload=engine.reload)
    write_config(CONFIG.replace("limit: 100, currency: USD", "limit: 200, currency: USD"))
    answer = requests.post(f"{url}/-/reload", timeout=5)
    assert answer.status_code == 200
    assert server.engine.config.budgets[0].limit == 200
    write_config("sources: [")
    answer = requests.post(f"{url}/-/reload", timeout=5)
    assert answer.status_code == 500 and "invalid YAML" in answer.text
    assert server.engine.config.budgets[0].limit == 200


def test_basic_auth(serve, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"basic_auth_users:\n  prom: '{hashed}'\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    config, context = load_web_config(str(web))
    _, url = serve(web_config=config, ssl_context=context)
    denied = requests.get(f"{url}/metrics", timeout=5)
    assert denied.status_code == 401 and "Basic" in denied.headers["WWW-Authenticate"]
    assert requests.get(f"{url}/metrics", auth=("prom", "wrong"), timeout=5).status_code == 401
    for _ in range(2):  # the second check is served from the cache
        ok = requests.get(f"{url}/metrics", auth=("prom", "s3cret-pass"), timeout=5)
        assert ok.status_code == 200 and ok.headers["X-Frame-Options"] == "deny"


def test_tls(serve, tmp_path: Path) -> None:
    config, context = tls_web_config(tmp_path)
    _, url = serve(web_config=config, ssl_context=context)
    assert url.startswith("https://")
    assert (
        requests.get(f"{url}/-/healthy", verify=str(tmp_path / "cert.pem"), timeout=5).status_code
        == 200
    )
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/-/healthy", timeout=5)
    assert isinstance(context, ssl.SSLContext)


def test_web_config_errors(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config: {cert_file: missing.pem, key_file: missing.pem}\n")
    with pytest.raises(Exception, match="tls_server_config: cannot load TLS files"):
        load_web_config(str(web))
    web.write_text("basic_auth_user: {}\n")
    with pytest.raises(Exception, match="basic_auth_user"):
        load_web_config(str(web))


@pytest.mark.parametrize(
    "text, expected",
    [(":9820", ("", 9820)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9820", ("::1", 9820))],
)
def test_parse_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["9820", "host:", "host:http", ":70000"])
def test_parse_listen_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(text)


def test_oversized_body_is_refused(serve) -> None:
    _, url = serve()
    answer = requests.post(f"{url}/-/reload", data=b"x" * (2 << 20), timeout=5)
    assert answer.status_code == 413


def test_a_silent_tls_client_blocks_nobody(serve, tmp_path: Path) -> None:
    config, context = tls_web_config(tmp_path)
    server, url = serve(web_config=config, ssl_context=context)
    with socket.create_connection(("127.0.0.1", server.port)):  # connects, never says hello
        answer = requests.get(f"{url}/-/healthy", verify=str(tmp_path / "cert.pem"), timeout=3)
    assert answer.status_code == 200


def test_unreadable_bodies_are_refused_and_the_connection_closed(serve) -> None:
    server, _ = serve()
    for request, status in [
        (
            b"POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"411",
        ),
        (b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", b"400"),
    ]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(request)
            reply = sock.makefile("rb").read()  # the server closes the connection
        assert reply.split(b" ")[1] == status and b"Connection: close" in reply


def test_an_unexpected_error_answers_500(serve, monkeypatch) -> None:
    _, url = serve()

    def broken(*args, **kwargs):
        raise RuntimeError("bug in a page")

    monkeypatch.setattr("budget_exporter.web.endpoints.render_landing", broken)
    assert requests.get(f"{url}/", timeout=5).status_code == 500
    assert requests.get(f"{url}/-/healthy", timeout=5).status_code == 200


def test_healthy_fails_when_polling_has_stopped(serve, monkeypatch) -> None:
    server, url = serve()
    monkeypatch.setattr(server.engine, "healthy", lambda: False)
    assert requests.get(f"{url}/-/healthy", timeout=5).status_code == 503


@pytest.mark.parametrize(
    "text, message",
    [
        ("basic_auth_users: {prom: plaintext}\n", "is not a bcrypt hash"),
        (
            "http_server_config: {headers: {Content-Type: x}}\n",
            "header 'Content-Type' cannot be set",
        ),
        (
            "tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireAndVerifyClientCert}\n",
            "needs client_ca_file",
        ),
    ],
)
def test_web_config_is_validated(tmp_path: Path, text: str, message: str) -> None:
    web = tmp_path / "web.yml"
    web.write_text(text)
    with pytest.raises(Exception, match=message):
        load_web_config(str(web))


def test_landing_page_says_why_a_budget_has_no_data(serve) -> None:
    from tests.support.net import free_port

    server, url = serve(
        f"""
        global: {{retries: 0}}
        sources:
          - {{name: gone, provider: http_json, url: "http://127.0.0.1:{free_port()}/x", amount: a,
              currency: USD}}
        budgets: [{{name: b, limit: 10, currency: USD}}]
        """
    )
    assert "waiting for the first data" in requests.get(f"{url}/", timeout=5).text
    server.engine.poll_all_once()
    assert "no data: source gone failed" in requests.get(f"{url}/", timeout=5).text


def test_a_non_ascii_content_length_is_a_bad_request(serve) -> None:
    server, _ = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall("POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: ²\r\n\r\n".encode())
        reply = sock.makefile("rb").read()
    assert reply.split(b" ")[1] == b"400"
