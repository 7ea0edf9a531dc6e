"""Clients that do not read their answers, and headers that never end: memory and
threads stay bounded, and a scraper on a new connection is still answered at once.

The in-process tests serve a large body from a route of their own (bigger than what
the kernel's socket buffers absorb); the acceptance tests run the real exporter with
~1,500 budgets (a /metrics body of about 5 MB) and measure its resident memory.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.routes import Request, Response
from tests.support.benchmarks import harness
from tests.support.exporter import ExporterProcess, exporters
from tests.support.rawhttp import CONFIG, no_warnings, read_all, servers, status

BIG = bytes(range(256)) * (16 * 1024 * 4)  # 16 MiB: far more than socket buffers take in
GET_BIG = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(autouse=True)
def quiet_logs(caplog) -> Iterator[None]:
    with no_warnings(caplog):
        yield


@pytest.fixture
def serve(make_engine) -> Iterator[Callable[..., ExporterServer]]:
    with servers(make_engine, read_timeout=5.0, write_timeout=5.0, stall_grace=0.2) as start:

        def start_big(**limits: float) -> ExporterServer:
            return start(
                limits=limits, routes={"/big": {"GET": lambda request: Response(200, (BIG,))}}
            )

        yield start_big


def non_reader(port: int) -> socket.socket:
    """A connection that asks for /big and never reads the answer (a small receive buffer)."""
    return harness.never_reader(port, GET_BIG)


def threads() -> int:
    status_text = Path("/proc/self/status").read_text()
    return int(status_text.split("Threads:")[1].split()[0])


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_metrics_answers_share_the_snapshot_bytes(make_engine) -> None:
    server = ExporterServer(make_engine(CONFIG), "127.0.0.1:0")
    try:
        rendered = server.engine.snapshot.rendered
        for encoding in ("identity", "gzip"):
            headers = {"Accept-Encoding": encoding}
            first = server._metrics(Request("GET", "/metrics", _message(headers)))
            second = server._metrics(Request("GET", "/metrics", _message(headers)))
            assert isinstance(first.body, tuple) and len(first.body) == 2
            assert first.body[0] is second.body[0]  # one buffer for every scrape, not a copy
        plain = server._metrics(Request("GET", "/metrics", _message({})))
        assert plain.body[0] is rendered.text
        assert b"process_resident_memory_bytes" in plain.body[1]
    finally:
        server.httpd.server_close()


def _message(headers: dict[str, str]):
    from email.message import Message

    message = Message()
    for name, value in headers.items():
        message[name] = value
    return message


def test_an_answer_not_taken_is_cut_off_at_the_write_deadline(serve) -> None:
    server = serve(write_timeout=1.0)
    sock = non_reader(server.port)
    try:
        time.sleep(2.0)  # past the write deadline, without reading a byte
        sock.settimeout(10)
        received = read_all(sock)  # what the kernel held, then the end of the connection
    finally:
        sock.close()
    assert status(received) == 200
    assert len(received) < len(BIG)  # the server gave up: the answer was never completed
    wait_until(lambda: server.httpd.limiter.open == 0)


def test_clients_that_never_read_hold_no_thread_and_scrapers_get_in(serve) -> None:
    server = serve(max_connections=64, max_workers=8)
    before = threads()
    clients = [non_reader(server.port) for _ in range(40)]
    try:
        # Their answers wait in the selector for them to read, without a thread each.
        wait_until(lambda: server.httpd.limiter.writing == 40)
        assert server.httpd.limiter.busy_workers == 0
        assert threads() <= before + 2
        times = []
        for _ in range(20):  # a scraper, on a new connection each time
            started = time.monotonic()
            answer = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
            times.append(time.monotonic() - started)
            assert answer.status_code == 200 and b"budget_limit_amount" in answer.content
        assert max(times) < 1, times
        assert threads() <= before + 8 + 2
    finally:
        for sock in clients:
            sock.close()


def test_slow_senders_hold_at_most_the_workers_and_a_scraper_takes_one(serve) -> None:
    server = serve(max_connections=64, max_workers=8)
    before = threads()
    slow = []
    for _ in range(30):  # each gets a worker as its first bytes come, then stalls
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        slow.append(sock)
    try:
        wait_until(lambda: server.httpd.limiter.busy_workers == 8)
        assert threads() <= before + 8 + 2
        for _ in range(10):
            took = time.monotonic()
            answer = requests.get(f"http://127.0.0.1:{server.port}/-/healthy", timeout=5)
            assert answer.status_code == 200 and time.monotonic() - took < 1
        assert server.httpd.limiter.taken_workers >= 10
        assert server.httpd.limiter.busy_workers <= 8
        assert threads() <= before + 8 + 4  # a worker taken over may still be ending
    finally:
        for sock in slow:
            sock.close()


def test_at_the_connection_cap_a_client_that_does_not_read_makes_room(serve) -> None:
    server = serve(max_connections=6, max_workers=6)
    clients = [non_reader(server.port) for _ in range(6)]
    try:
        wait_until(lambda: server.httpd.limiter.writing == 6)
        time.sleep(0.4)  # past the stall grace: they count as idle now
        for _ in range(5):
            answer = requests.get(f"http://127.0.0.1:{server.port}/-/healthy", timeout=5)
            assert answer.status_code == 200  # not 503: a stalled answer is not "busy"
        assert server.httpd.limiter.evicted >= 1 and server.httpd.limiter.refused == 0
        assert server.httpd.limiter.open <= 6
    finally:
        for sock in clients:
            sock.close()


def test_a_slow_reader_is_not_cut_while_it_keeps_taking_the_answer(serve) -> None:
    server = serve(write_timeout=30.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(4096)
        sock.sendall(GET_BIG)
        received = 0
        while received < len(BIG):
            chunk = sock.recv(1 << 20)
            assert chunk, "the server cut a client that was reading"
            received += len(chunk)
    assert received >= len(BIG)


# Acceptance: the real exporter, ~1,500 budgets.

BUDGETS = 1500


def big_config(path: Path) -> Path:
    """~1,500 static sources and budgets with labels: a /metrics body of about 5 MB."""
    path.write_text(json.dumps(harness.labelled_budgets(BUDGETS, limit=1000)))
    return path


@pytest.fixture(scope="module")
def big_exporter(tmp_path_factory) -> Iterator[ExporterProcess]:
    config = big_config(tmp_path_factory.mktemp("big") / "config.yml")
    starter = exporters()
    start = next(starter)
    exporter = start(config, "--log.level=warn", lifecycle=False)
    exporter.wait_ready(timeout=60)
    requests.get(f"{exporter.url}/metrics", timeout=30)  # the body is paid for once
    yield exporter
    with contextlib.suppress(StopIteration):
        next(starter)


def scrape_times(url: str, seconds: float) -> list[float]:
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        answer = requests.get(f"{url}/metrics", timeout=10, headers={"Accept-Encoding": "gzip"})
        assert answer.status_code == 200
        times.append(time.monotonic() - started)
        time.sleep(0.05)
    return times


def test_300_clients_that_never_read_metrics(big_exporter: ExporterProcess) -> None:
    pid = big_exporter.proc.pid
    port = int(big_exporter.url.rsplit(":", 1)[1])
    before = harness.rss_mb(pid)
    with harness.Attack(pid, 300, lambda: harness.never_reader(port)) as attack:
        time.sleep(2)  # all 300 connected and asking
        times = scrape_times(big_exporter.url, 6)
        attack.sample()
    grown = attack.peak_rss - before
    p99 = statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]
    assert grown <= 300, f"RSS grew by {grown:.0f} MB"
    assert p99 < 1, f"scraper p99 {p99:.3f}s over {len(times)} scrapes"
    assert big_exporter.proc.poll() is None


def test_60_connections_of_unfinished_huge_headers(big_exporter: ExporterProcess) -> None:
    pid = big_exporter.proc.pid
    port = int(big_exporter.url.rsplit(":", 1)[1])
    before = harness.rss_mb(pid)
    with harness.Attack(pid, 60, lambda: harness.unfinished_headers(port)) as attack:
        time.sleep(1)
        times = scrape_times(big_exporter.url, 4)
        attack.sample()
    grown = attack.peak_rss - before
    assert grown <= 150, f"RSS grew by {grown:.0f} MB"
    assert max(times) < 1, times
    assert big_exporter.proc.poll() is None
