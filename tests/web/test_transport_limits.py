"""The HTTP front under slow, lying, hasty and numerous clients, on 127.0.0.1.

Every server here has a short request deadline (``read_timeout``) so that what
takes 15 s by default takes a second.  No test may leave an ERROR record or a
traceback behind (the ``quiet_logs`` fixture checks).
"""

from __future__ import annotations

import gc
import socket
import ssl
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.webconfig import WebConfig
from tests.support.exporter import ExporterProcess, exporters
from tests.support.rawhttp import CONFIG, exchange, no_warnings, read_all, servers, status
from tests.support.tls import tls_web_config

DEADLINE = 1.0


@pytest.fixture(autouse=True)
def quiet_logs(caplog, capfd) -> Iterator[None]:
    with no_warnings(caplog, capfd):
        yield


@pytest.fixture
def serve(make_engine) -> Iterator[Callable[..., ExporterServer]]:
    with servers(make_engine, read_timeout=DEADLINE) as start:
        yield start


def timed(call, *args, **kwargs) -> tuple[float, object]:
    started = time.monotonic()
    result = call(*args, **kwargs)
    return time.monotonic() - started, result


# 1. Slowloris: a whole-request deadline, with and without TLS


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_deadline(serve) -> None:
    server = serve()
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    took, reply = timed(exchange, server.port, *[bytes([b]) for b in request], pause=0.05)
    assert status(reply) == 408 and b"Connection: close" in reply
    assert DEADLINE <= took < DEADLINE + 1


def test_a_silent_connection_is_closed_at_the_deadline_without_an_answer(serve) -> None:
    server = serve()
    took, reply = timed(exchange, server.port)
    assert reply == b"" and DEADLINE <= took < DEADLINE + 1


def test_slow_tls_clients_are_cut_off_too(serve, tmp_path: Path) -> None:
    config, context = tls_web_config(tmp_path)
    server = serve(web_config=config, ssl_context=context)
    client = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        started = time.monotonic()
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.05)
            reply = read_all(sock)
    assert status(reply) == 408
    assert time.monotonic() - started < DEADLINE + 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        took, reply = timed(read_all, silent)  # never says hello
    assert reply == b"" and took < DEADLINE + 1


# 3. Lying and conflicting lengths, bodies where none belongs


def test_a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline(serve) -> None:
    server = serve()
    head = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    took, reply = timed(exchange, server.port, head, *[b"x"] * 100, pause=0.05)
    assert status(reply) == 408 and took < DEADLINE + 1


def test_a_body_shorter_than_its_content_length_is_a_bad_request_at_once(serve) -> None:
    server = serve()
    head = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort"
    took, reply = timed(exchange, server.port, head, half_close=True)
    assert status(reply) == 400 and b"shorter than its Content-Length" in reply
    assert took < DEADLINE / 2


def test_a_lying_content_length_with_a_waiting_client_gets_408_not_500(serve) -> None:
    server = serve()
    head = b"POST /api/v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}"
    took, reply = timed(exchange, server.port, head)
    assert status(reply) == 408 and took < DEADLINE + 1


def test_conflicting_content_lengths_are_refused(serve) -> None:
    server = serve()
    request = (
        b"POST /api/v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 40\r\n\r\n{}"
    )
    reply = exchange(server.port, request)
    assert status(reply) == 400 and b"Conflicting Content-Length" in reply
    same = b"POST /api/v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
    assert (
        status(exchange(server.port, same + b"Connection: close\r\n\r\n{}")) == 400
    )  # API: no budget


def test_get_and_head_never_wait_for_a_body(serve) -> None:
    server = serve()
    for method in (b"GET", b"HEAD"):
        request = method + b" /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n"
        took, reply = timed(exchange, server.port, request)
        assert status(reply) == 200 and b"Connection: close" in reply  # the body is not read
        assert took < DEADLINE / 2


# 4. Unknown methods: 405 with Allow, after auth


@pytest.mark.parametrize("method", ["DELETE", "OPTIONS", "PATCH", "FOO"])
def test_unknown_methods_get_405_with_allow_after_auth(serve, method: str) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    server = serve(web_config=WebConfig(basic_auth_users={"prom": hashed}))
    url = f"http://127.0.0.1:{server.port}"
    assert requests.request(method, f"{url}/metrics", timeout=5).status_code == 401
    answer = requests.request(method, f"{url}/metrics", auth=("prom", "pw"), timeout=5)
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET, HEAD"
    assert answer.headers["Content-Type"].startswith("text/plain")
    reload = requests.request(method, f"{url}/-/reload", auth=("prom", "pw"), timeout=5)
    assert reload.status_code == 405 and reload.headers["Allow"] == "POST, PUT"
    missing = requests.request(method, f"{url}/nope", auth=("prom", "pw"), timeout=5)
    assert missing.status_code == 404


# 5. TCP_NODELAY: small answers on a kept-alive connection do not wait for an ACK


def test_kept_alive_answers_do_not_wait_for_delayed_acks(serve) -> None:
    server = serve()
    with requests.Session() as session:
        url = f"http://127.0.0.1:{server.port}/-/healthy"
        session.get(url, timeout=5)
        times = [timed(session.get, url, timeout=5)[0] for _ in range(30)]
    assert statistics.median(times) < 0.02  # Nagle with delayed ACKs costs some 40 ms each


# 6. Clients that go away


def test_clients_that_disconnect_abruptly_are_not_errors(serve) -> None:
    server = serve()
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, maybe while the answer is being written
    assert requests.get(f"http://127.0.0.1:{server.port}/-/healthy", timeout=5).status_code == 200


# 1-2. A cap on connections, a burst that fits the backlog


def test_at_the_cap_the_longest_waiting_connection_makes_room(serve) -> None:
    server = serve(limits={"max_connections": 20, "read_timeout": 10.0})
    slow = []
    for _ in range(25):  # more slow clients than the cap
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        slow.append(sock)
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        for _ in range(5):  # a scraper still gets in, at once
            took, answer = timed(requests.get, url, timeout=5)
            assert answer.status_code == 200 and took < 1
        assert server.httpd.limiter.open <= 20
        assert server.httpd.limiter.evicted >= 5
    finally:
        for sock in slow:
            sock.close()


def test_when_every_connection_is_busy_a_new_one_gets_503_at_once(serve, monkeypatch) -> None:
    server = serve(limits={"max_connections": 4})
    release = threading.Event()
    monkeypatch.setattr(server.engine, "pending_sources", lambda: release.wait(10) and [])
    url = f"http://127.0.0.1:{server.port}"
    busy = [
        threading.Thread(target=requests.get, args=(f"{url}/-/ready",), kwargs={"timeout": 10})
        for _ in range(4)
    ]
    for thread in busy:
        thread.start()
    deadline = time.monotonic() + 5
    while server.httpd.limiter.open < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)  # all four are in the handler now
    took, answer = timed(requests.get, f"{url}/metrics", timeout=5)
    release.set()
    for thread in busy:
        thread.join(10)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert took < 0.5
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 200


@pytest.fixture
def running() -> Iterator[Callable[..., ExporterProcess]]:
    yield from exporters()


def test_a_burst_of_500_connections_leaves_the_scraper_fast(write_config, running) -> None:
    exporter = running(write_config(CONFIG), "--web.read-timeout=3s")
    exporter.wait_ready()
    url = f"{exporter.url}/metrics"
    port = int(exporter.url.rsplit(":", 1)[1])
    gc.disable()  # no collection pause in this (large) test process while it measures
    try:
        burst: list[socket.socket] = []
        for _ in range(500):  # as fast as the client can: no waiting for accept()
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            burst.append(sock)
        times = [timed(requests.get, url, timeout=5)[0] for _ in range(50)]
        for sock in burst:
            sock.close()
    finally:
        gc.enable()
    assert statistics.quantiles(times, n=100)[98] < 0.1
    code, err = exporter.stop()
    assert code == 0 and "Traceback" not in err and "level=error" not in err


def test_a_malformed_request_line_gets_a_plain_400(serve) -> None:
    server = serve()
    reply = exchange(server.port, b"GARBAGE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Content-Type: text/plain" in reply
    assert b"Server: budget-exporter\r\n" in reply
