"""Requests parsed as RFC 9112 asks, on 127.0.0.1: what a lenient parser lets through
(whitespace before a colon, a missing or doubled Host, line folding, a header block of
megabytes, 100 Continue before auth) is answered 400, 401, 413 or 431 instead.
No test may leave an ERROR record or a traceback behind."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.webconfig import WebConfig
from tests.support.rawhttp import exchange, no_warnings, read_all, servers, status
from tests.support.tls import tls_web_config

CHECK = b'{"budget": "b", "cost": 1}'


@pytest.fixture(autouse=True)
def quiet_logs(caplog, capfd) -> Iterator[None]:
    with no_warnings(caplog, capfd):
        yield
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.fixture
def serve(make_engine) -> Iterator[Callable[..., ExporterServer]]:
    with servers(make_engine, read_timeout=2.0) as start:
        yield start


@pytest.fixture
def with_auth(serve) -> ExporterServer:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    return serve(web_config=WebConfig(basic_auth_users={"prom": hashed}))


def basic(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


def read_answer(sock: socket.socket) -> bytes:
    """One answer on a kept-alive connection: its head and its Content-Length of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_whitespace_before_the_colon_is_a_bad_request_not_a_second_request(serve) -> None:
    server = serve(on_reload=lambda: (True, "reloaded"))
    smuggled = b"POST /-/reload HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (
        b"POST /api/v1/check HTTP/1.1\r\nHost: x\r\nContent-Length : %d\r\n\r\n" % len(smuggled)
        + smuggled
    )
    reply = exchange(server.port, request)
    assert status(reply) == 400 and b"whitespace before the colon" in reply
    assert reply.count(b"HTTP/1.1 ") == 1  # the body was not read as a request of its own
    assert b"Connection: close" in reply


@pytest.mark.parametrize(
    "header",
    [b"Content-Length\t: 2", b"Bad Name: x", b": no name", b"NoColon"],
)
def test_malformed_header_names_are_bad_requests(serve, header: bytes) -> None:
    server = serve()
    reply = exchange(server.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    assert status(reply) == 400


def test_obsolete_line_folding_is_a_bad_request(serve) -> None:
    server = serve()
    request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n  continued\r\n\r\n"
    assert status(exchange(server.port, request)) == 400


def test_http_1_1_needs_exactly_one_host(serve) -> None:
    server = serve()
    missing = exchange(server.port, b"GET /-/healthy HTTP/1.1\r\n\r\n")
    assert status(missing) == 400 and b"Missing Host" in missing
    twice = exchange(server.port, b"GET /-/healthy HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert status(twice) == 400 and b"More than one Host" in twice
    old = exchange(server.port, b"GET /-/healthy HTTP/1.0\r\n\r\n")  # HTTP/1.0 may omit it
    assert status(old) == 200
    old_twice = exchange(server.port, b"GET /-/healthy HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")
    assert status(old_twice) == 400


@pytest.mark.parametrize(
    "line, code",
    [
        (b"GET /-/healthy HTTP/2.0", 505),
        (b"GET /-/healthy HTTP/1", 400),
        (b"GET  /-/healthy HTTP/1.1", 400),  # two spaces
        (b"GET /-/healthy", 400),  # HTTP/0.9
        (b"G(T /-/healthy HTTP/1.1", 400),
    ],
)
def test_malformed_request_lines(serve, line: bytes, code: int) -> None:
    server = serve()
    assert status(exchange(server.port, line + b"\r\nHost: x\r\n\r\n")) == code


def test_the_header_block_is_capped_as_a_whole(serve) -> None:
    server = serve()
    many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(80))  # 80 KiB
    reply = exchange(server.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status(reply) == 431
    fits = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(60))  # 60 KiB
    reply = exchange(server.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + fits + b"\r\n")
    assert status(reply) == 200
    long_line = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert status(exchange(server.port, long_line)) == 414


def test_an_unfinished_header_block_is_cut_at_the_cap_not_at_the_deadline(serve) -> None:
    server = serve(limits={"read_timeout": 10.0})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        try:
            for i in range(98):  # 98 headers of 64 KiB, never the blank line
                sock.sendall(b"X-Big-%d: " % i + b"a" * 65_000 + b"\r\n")
        except OSError:
            pass  # the server answered and closed
        reply = read_all(sock)
    assert status(reply) == 431 and time.monotonic() - started < 5


def test_100_continue_only_after_the_credentials_pass(with_auth) -> None:
    server = with_auth
    head = (
        b"POST /api/v1/check HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n" % len(CHECK)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + b"\r\n")  # no credentials
        reply = read_all(sock)  # answered and closed without waiting for the body
    assert b"100 Continue" not in reply and status(reply) == 401
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + basic("prom", "pw") + b"\r\n")
        interim = sock.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(CHECK)
        final = read_answer(sock)
    assert status(final) == 200 and b'"allowed"' in final


def test_100_continue_only_for_a_body_within_the_cap(with_auth) -> None:
    server = with_auth
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v1/check HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 200000\r\n" + basic("prom", "pw") + b"\r\n"
        )
        reply = read_all(sock)
    assert b"100 Continue" not in reply and status(reply) == 413


@pytest.mark.parametrize(
    "credentials",
    [
        "Basic cHJvbTpwd\u00e9==".encode("latin-1"),  # a non-ASCII byte in the base64
        b"Basic \xff\xfe\xfd",
        b"Basic " + base64.b64encode(b"prom:\xff\xfe"),  # base64 of bytes that are not UTF-8
        b"Basic !!!!",
    ],
)
def test_broken_basic_credentials_get_401_without_a_traceback(
    with_auth, credentials: bytes
) -> None:
    server = with_auth
    for _ in range(3):
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + credentials
        reply = exchange(server.port, request + b"\r\nConnection: close\r\n\r\n")
        assert status(reply) == 401 and b"WWW-Authenticate: Basic" in reply


def test_plain_http_to_the_tls_port_gets_a_plain_400(serve, tmp_path: Path) -> None:
    config, context = tls_web_config(tmp_path)
    server = serve(web_config=config, ssl_context=context)
    reply = exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert reply.endswith(b"Client sent an HTTP request to an HTTPS server.\n")
    # TLS clients are served as before, and a client speaking neither is just closed.
    url = f"https://127.0.0.1:{server.port}/-/healthy"
    assert requests.get(url, verify=str(tmp_path / "cert.pem"), timeout=5).status_code == 200
    assert exchange(server.port, b"\x00\x01\x02\x03") == b""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=5)  # an unknown certificate: still a TLS error, not a 400
    assert isinstance(context, ssl.SSLContext)
