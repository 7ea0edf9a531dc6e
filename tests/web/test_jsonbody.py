"""The check API's request bodies: a few kilobytes at most (413 beyond, before the body
is read), and JSON objects without repeated keys (400 naming the key)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.jsonbody import MAX_BYTES, BodyError, read_json
from tests.support.rawhttp import exchange, status

CONFIG = """
sources: [{name: a, provider: static, amount: 1, currency: USD}]
budgets: [{name: b, limit: 10, currency: USD}]
"""


@pytest.fixture
def url(make_engine) -> Iterator[str]:
    server = ExporterServer(make_engine(CONFIG), "127.0.0.1:0")
    server.start()
    server.engine.poll_all_once()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()


def test_read_json_reads_what_json_reads() -> None:
    assert read_json(b'{"budget": "b", "cost": 1.5, "tags": {"a": 1}}') == {
        "budget": "b",
        "cost": 1.5,
        "tags": {"a": 1},
    }
    assert read_json(b"") is None
    assert read_json(b"[1, 2]") == [1, 2]


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"budget": "a", "budget": "b"}', "the key 'budget' appears twice"),
        (b'{"x": {"cost": 1, "cost": 2}}', "the key 'cost' appears twice"),
        (b"{not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[" * 10_000 + b"]" * 10_000, "nesting too deep"),
        (b"1" * 5000, "a number too long"),
    ],
)
def test_read_json_refuses_with_400(body: bytes, message: str) -> None:
    with pytest.raises(BodyError, match=message) as caught:
        read_json(body, max_bytes=1 << 20)
    assert caught.value.status == 400


def test_read_json_refuses_a_large_body_with_413() -> None:
    with pytest.raises(BodyError) as caught:
        read_json(b" " * (MAX_BYTES + 1), max_bytes=MAX_BYTES)
    assert caught.value.status == 413


def test_a_200_kb_check_body_gets_413_unread(url: str) -> None:
    body = json.dumps({"budget": "b", "cost": 1, "pad": "x" * 200_000}).encode()
    answer = requests.post(f"{url}/api/v1/check", data=body, timeout=5)
    assert answer.status_code == 413
    port = int(url.rsplit(":", 1)[1])
    # Refused on its Content-Length alone: the server does not wait for the body.
    head = b"POST /api/v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
    assert status(exchange(port, head)) == 413


def test_a_check_body_within_the_cap_is_read(url: str) -> None:
    padding = MAX_BYTES - len(b'{"budget": "b", "cost": 1}') - 1
    body = b'{"budget": "b", "cost": 1}' + b" " * padding
    answer = requests.post(f"{url}/api/v1/check", data=body, timeout=5)
    assert answer.status_code == 200 and answer.json()["allowed"] is True
    answer = requests.post(f"{url}/api/v1/check", data=body + b"  ", timeout=5)
    assert answer.status_code == 413


def test_a_duplicate_key_is_refused_naming_it(url: str) -> None:
    answer = requests.post(
        f"{url}/api/v1/check", data=b'{"budget": "b", "cost": 1, "cost": 1000}', timeout=5
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "the key 'cost' appears twice in one object"
