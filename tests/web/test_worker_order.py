"""Which waiting connection a free worker serves: requests all there are served in the
order they came, by the worker that ends a request, without a thread started for each;
a connection that fails (plain HTTP on the TLS port) does not lose the one after it."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.routes import Request, Response, text
from tests.support.rawhttp import no_warnings, read_all, servers, status
from tests.support.tls import tls_web_config


@pytest.fixture(autouse=True)
def quiet_logs(caplog) -> Iterator[None]:
    with no_warnings(caplog):
        yield


@pytest.fixture
def serve(make_engine) -> Iterator[Callable[..., ExporterServer]]:
    with servers(make_engine, read_timeout=10.0) as start:
        yield start


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def answer_of(sock: socket.socket) -> bytes:
    """One whole answer with a ``Content-Length`` (the connection stays open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk
        body += chunk
    return head + b"\r\n\r\n" + body


def test_waiting_requests_are_served_first_come_first_served(serve) -> None:
    entered, release = threading.Event(), threading.Event()
    served: list[tuple[str, int]] = []

    def hold(request: Request) -> Response:
        served.append(("hold", threading.get_native_id()))
        entered.set()
        release.wait(10)
        return text(200, "held")

    def order(request: Request) -> Response:
        served.append((request.query, threading.get_native_id()))
        return text(200, request.query)

    server = serve(
        limits={"max_workers": 1}, routes={"/hold": {"GET": hold}, "/order": {"GET": order}}
    )
    parked = server.httpd._parked
    busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    waiting: list[socket.socket] = []
    try:
        busy.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(10)  # the only worker is taken
        for n in range(1, 7):  # each comes whole, and waits, after the one before
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(f"GET /order?{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            waiting.append(sock)
            wait_until(lambda n=n: len(parked) == n)
        release.set()
        assert answer_of(busy).endswith(b"held\n")
        for n, sock in enumerate(waiting, 1):
            assert answer_of(sock).endswith(f"{n}\n".encode())
    finally:
        release.set()
        for sock in [busy, *waiting]:
            sock.close()
    assert [what for what, _ in served] == ["hold", "1", "2", "3", "4", "5", "6"]
    # The worker that ended /hold went on with the waiting ones itself, one after another.
    assert {thread for _, thread in served} == {served[0][1]}
    wait_until(lambda: server.httpd.limiter.busy_workers == 0)


def test_a_request_still_coming_waits_behind_whole_ones(serve) -> None:
    entered, release = threading.Event(), threading.Event()
    served: list[str] = []

    def hold(request: Request) -> Response:
        entered.set()
        release.wait(10)
        return text(200, "held")

    def order(request: Request) -> Response:
        served.append(request.query)
        return text(200, request.query)

    server = serve(
        limits={"max_workers": 1}, routes={"/hold": {"GET": hold}, "/order": {"GET": order}}
    )
    parked = server.httpd._parked
    busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    partial = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    whole = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        busy.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(10)
        partial.sendall(b"GET /order?partial HTTP/1.1\r\nHost: x\r\n")  # no blank line yet
        wait_until(lambda: len(parked) == 1)
        whole.sendall(b"GET /order?whole HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: len(parked) == 2)
        release.set()
        assert answer_of(whole).endswith(b"whole\n")  # came later, but all there: first
        partial.sendall(b"\r\n")
        assert answer_of(partial).endswith(b"partial\n")
    finally:
        release.set()
        for sock in (busy, partial, whole):
            sock.close()
    assert served == ["whole", "partial"]


def test_after_a_failed_tls_handshake_the_worker_goes_on_with_the_next(
    serve, tmp_path: Path
) -> None:
    config, context = tls_web_config(tmp_path)
    client = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    entered, release = threading.Event(), threading.Event()

    def hold(request: Request) -> Response:
        entered.set()
        release.wait(10)
        return text(200, "held")

    server = serve(
        limits={"max_workers": 1},
        routes={"/hold": {"GET": hold}},
        web_config=config,
        ssl_context=context,
    )
    parked = server.httpd._parked
    answers: list[bytes] = []

    def tls_get(path: str) -> None:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answers.append(answer_of(sock))

    busy = threading.Thread(target=tls_get, args=("/hold",))
    busy.start()
    assert entered.wait(10)
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    after = threading.Thread(target=tls_get, args=("/-/healthy",))
    try:
        plain.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP on TLS
        wait_until(lambda: len(parked) == 1)
        after.start()  # its handshake waits for the worker too
        wait_until(lambda: len(parked) == 2)
        release.set()
        assert status(read_all(plain)) == 400
        after.join(10)
        busy.join(10)
    finally:
        release.set()
        plain.close()
    assert not after.is_alive() and not busy.is_alive()
    assert sorted(status(answer) for answer in answers) == [200, 200]
    assert any(answer.endswith(b"Healthy.\n") for answer in answers)


def test_a_worker_taken_by_eviction_is_not_passed_on_twice(serve) -> None:
    """A slow sender holding the only worker loses it to a whole request; when the slow
    sender's thread ends it has no worker to hand on, so the next waiting request waits for
    the worker's real holder instead of running beside it (the cap holds)."""
    lock = threading.Lock()
    running, peak, served = [0], [0], []

    def hold(request: Request) -> Response:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
            served.append(request.query)
        return text(200, request.query)

    server = serve(limits={"max_workers": 1, "stall_grace": 0.3}, routes={"/hold": {"GET": hold}})
    limiter = server.httpd.limiter
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    whole: list[socket.socket] = []
    try:
        slow.sendall(b"GET /hold HTTP/1.1\r\n")  # never finished: it holds the worker
        wait_until(lambda: limiter.busy_workers == 1)
        for name in ("b", "c"):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(f"GET /hold?{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            whole.append(sock)
        for name, sock in zip(("b", "c"), whole, strict=True):
            assert answer_of(sock).endswith(f"{name}\n".encode())
    finally:
        for sock in [slow, *whole]:
            sock.close()
    assert limiter.evicted >= 1  # the slow sender lost its worker
    assert sorted(served) == ["b", "c"]
    assert peak[0] == 1, f"{peak[0]} requests ran at once with max_workers=1"
    wait_until(lambda: limiter.busy_workers == 0)
