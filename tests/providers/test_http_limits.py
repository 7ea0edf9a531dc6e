"""What one upstream request may cost: time (a whole-attempt deadline, headers
included) and memory (a size cap, a decompression bound, a JSON item bound)."""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from budget_exporter.core.errors import SourceError
from budget_exporter.providers._http import _WATCHDOG, HttpClient, json_items
from tests.support.fake_upstream import Reply


@pytest.fixture
def trickling_headers() -> Iterator[str]:
    """A server on 127.0.0.1 that sends its status line and headers one byte every 0.1 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: " + b"x" * 10_000
            for byte in head:
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/cost"
    stop.set()
    listener.close()


def client(recorded: list[str], **kwargs) -> HttpClient:
    settings = {"timeout": 1.0, "retries": 0, "backoff": 0.01, "record": recorded.append}
    return HttpClient(**{**settings, **kwargs})


def test_an_upstream_trickling_its_headers_fails_within_the_timeout(trickling_headers) -> None:
    recorded: list[str] = []
    http = client(recorded)
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out: no complete answer within 1s"):
        http.json("GET", trickling_headers)
    assert time.monotonic() - started < 2.0  # the timeout, plus one second at most
    assert recorded == ["timeout"]


def test_each_retry_of_a_trickling_upstream_is_bounded_and_counted(trickling_headers) -> None:
    recorded: list[str] = []
    http = client(recorded, timeout=0.5, retries=1)
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out"):
        http.json("GET", trickling_headers)
    assert time.monotonic() - started < 2.5  # two attempts of 0.5 s, and the backoff
    assert recorded == ["timeout", "timeout"]


def test_attempts_in_flight_share_one_watchdog_thread() -> None:
    """Many attempts waiting at once add one deadline each, not one thread each."""
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)  # never accepts nor answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/cost"
    before = threading.active_count()
    armed_before = _WATCHDOG.pending()
    outcomes: list[str] = []

    def poll() -> None:
        try:
            client([], timeout=1.0).json("GET", url)
        except SourceError as exc:
            outcomes.append(str(exc))

    callers = [threading.Thread(target=poll, daemon=True) for _ in range(24)]
    try:
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 5
        while _WATCHDOG.pending() < armed_before + 24 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _WATCHDOG.pending() >= armed_before + 24  # every attempt is armed
        extra = threading.active_count() - before - len(callers)
        assert extra <= 1, f"{extra} helper threads for 24 attempts in flight"
        for caller in callers:
            caller.join(5)
    finally:
        silent.close()
    assert len(outcomes) == 24 and all("timed out" in o for o in outcomes)


def test_a_body_over_the_cap_fails_with_a_clear_error(upstream) -> None:
    upstream.reply(Reply(200, body=b"[" + b"{}," * 400_000 + b"{}]"))
    recorded: list[str] = []
    http = client(recorded, max_response_size=2**20)
    with pytest.raises(SourceError, match=r"answered more than 1 MiB \(max_response_size\)"):
        http.json("GET", f"{upstream.url}/v1/cost")
    assert recorded == ["ok"]  # the request itself was answered


def test_a_compression_bomb_is_refused_before_it_expands(upstream) -> None:
    bomb = gzip.compress(b"[" + b"{}," * 2_000_000 + b"{}]")
    upstream.reply(Reply(200, body=bomb, headers={"Content-Encoding": "gzip"}))
    http = client([], max_response_size=64 * 2**20)
    with pytest.raises(SourceError, match="compressed body expanding more than 100x"):
        http.json("GET", f"{upstream.url}/v1/cost")


def test_json_with_too_many_items_for_its_size_is_refused(upstream) -> None:
    upstream.reply(Reply(200, body=b"[" + b"1," * 100_000 + b"1]"))
    http = client([], max_response_size=2**20)
    with pytest.raises(SourceError, match="JSON of more than 65536 items"):
        http.json("GET", f"{upstream.url}/v1/cost")
    upstream.reply(Reply(200, json={"data": [{"cost": "1.5", "note": "a, b, [c]"}] * 100}))
    assert len(http.json("GET", f"{upstream.url}/v1/cost")["data"]) == 100


def test_json_items_counts_values_but_not_punctuation_inside_strings() -> None:
    assert json_items(b"[]") == 2  # an upper bound: the array and "one" value
    assert json_items(b'{"a": [1, 2, {"b": "x, y [z] {w}"}]}') == 6
    assert json_items(b'["escaped \\" quote, comma", 2]') == 3


# The peak RSS of this interpreter alone: VmHWM starts afresh at exec (ru_maxrss would
# carry the forking test process's peak over).
POLL_ONCE = """
import sys
from budget_exporter.cli import main
code = main(["--config.file", sys.argv[1], "--once", "--log.level", "warn"])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("peak_kib", peak.split()[1], file=sys.stderr)
raise SystemExit(code)
"""


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_60_mb_answer_fails_the_poll_and_memory_stays_low(
    upstream, write_config, compressed: bool
) -> None:
    huge = b"[" + b"{}," * 20_000_000 + b"{}]"  # 60 MB of tiny objects
    headers = {}
    if compressed:
        huge, headers = gzip.compress(huge, 1), {"Content-Encoding": "gzip"}
    upstream.reply(Reply(200, body=huge, headers=headers))
    config = write_config(
        f"""
        global: {{retries: 0, timeout: 20s}}
        sources:
          - {{name: big, provider: http_json, url: "{upstream.url}/v1/cost", amount: total,
              currency: USD}}
        budgets: [{{name: b, limit: 10, currency: USD}}]
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", POLL_ONCE, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    expected = "expanding more than 100x" if compressed else "answered more than 8 MiB"
    assert expected in done.stderr
    assert 'budget_source_up{provider="http_json",source="big"} 0.0' in done.stdout
    peak_mib = int(done.stderr.rsplit("peak_kib", 1)[1].split()[0]) / 1024
    assert peak_mib < 200


def test_max_response_size_is_set_per_source(make_engine, upstream) -> None:
    engine = make_engine(
        f"""
        global: {{retries: 0}}
        sources:
          - {{name: small, provider: http_json, url: "{upstream.url}/v1/cost", amount: total,
              currency: USD, max_response_size: 1KiB}}
        budgets: [{{name: b, limit: 10, currency: USD}}]
        """
    )
    upstream.reply(Reply(200, json={"total": 1, "padding": "x" * 2000}))
    assert not engine.runners["small"].poll()
    assert "answered more than 1 KiB" in engine.states["small"].last_error


@pytest.mark.parametrize("value", ["12", "8 parsecs", "2GiB", True])
def test_max_response_size_must_be_a_sensible_size(write_config, value) -> None:
    from budget_exporter.config.loader import load_config
    from budget_exporter.core.errors import ConfigError

    config = write_config(
        f"""
        sources:
          - {{name: s, provider: static, amount: 1, currency: USD, max_response_size: {value}}}
        budgets: [{{name: b, limit: 10, currency: USD}}]
        """
    )
    with pytest.raises(ConfigError, match="max_response_size"):
        load_config(config)
