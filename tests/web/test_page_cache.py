"""The landing page and ``/api/v1/budgets`` served as ``/metrics`` is: gzip when asked,
rendered once per snapshot (and per held amounts), with an ``ETag`` answering 304 while
nothing the page shows has changed -- and never once something has (a hold, a source
turning stale, a new poll)."""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from email.message import Message
from typing import Any

import pytest
import requests

from budget_exporter.web import api, endpoints
from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.pagecache import Page, PageCache, etag_matches
from tests.support.clock import Clock
from tests.support.llm import NOW

CONFIG = """
global:
  stop_ratio: 0.9
  poll_interval: 15m
  check: {max_data_age: 1h}
sources:
  - {name: openai, provider: static, amount: 2600, currency: USD}
  - {name: saas, provider: static, amount: 10, currency: USD}
budgets:
  - {name: company, limit: 3000, currency: USD, sources: [openai, saas], labels: {team: ops}}
  - {name: openai, limit: 5000, currency: USD, sources: [openai], labels: {team: ml}}
"""
PAGES = ["/", "/api/v1/budgets"]


@pytest.fixture
def served(make_engine: Any) -> Iterator[tuple[Any, Clock, ExporterServer, str]]:
    clock = Clock(NOW.timestamp())
    engine = make_engine(CONFIG, clock)
    engine.poll_all_once()
    server = ExporterServer(engine, "127.0.0.1:0")
    server.start()
    yield engine, clock, server, f"http://127.0.0.1:{server.port}"
    server.shutdown()


def get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=10)


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times each page has been rendered."""
    counts = {"/": 0, "/api/v1/budgets": 0}

    def counting(path: str, render: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[path] += 1
            return render(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(endpoints, "render_landing", counting("/", endpoints.render_landing))
    monkeypatch.setattr(api, "budgets_document", counting("/api/v1/budgets", api.budgets_document))
    return counts


@pytest.mark.parametrize("path", PAGES)
def test_gzip_when_asked_the_same_page_either_way(served, path: str) -> None:
    _, _, _, url = served
    plain = requests.get(url + path, headers={"Accept-Encoding": "identity"}, stream=True)
    raw_plain = plain.raw.read()
    assert "Content-Encoding" not in plain.headers and plain.headers["Vary"] == "Accept-Encoding"
    zipped = requests.get(url + path, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw_zipped = zipped.raw.read()  # the bytes on the wire, not decoded
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert int(zipped.headers["Content-Length"]) == len(raw_zipped) < len(raw_plain)
    assert gzip.decompress(raw_zipped) == raw_plain
    assert plain.headers["ETag"] == zipped.headers["ETag"]
    # q=0 refuses gzip
    refused = requests.get(url + path, headers={"Accept-Encoding": "gzip;q=0"}, stream=True)
    assert "Content-Encoding" not in refused.headers and refused.raw.read() == raw_plain


@pytest.mark.parametrize("path", PAGES)
def test_rendered_once_per_snapshot(served, renders: dict[str, int], path: str) -> None:
    engine, clock, _, url = served
    bodies = {get(url + path).content for _ in range(5)}
    assert len(bodies) == 1 and renders[path] == 1
    assert get(url + path, **{"Accept-Encoding": "gzip"}).content in bodies
    assert renders[path] == 1
    clock.now += 60
    assert engine.runners["saas"].poll()  # a new snapshot: rendered again, once
    assert len({get(url + path).content for _ in range(3)}) == 1
    assert renders[path] == 2


def test_the_page_bytes_are_shared_not_copied(served) -> None:
    _, _, server, _ = served
    request = endpoints.Request("GET", "/api/v1/budgets", _headers(), b"", "")
    first, second = server._api(request), server._api(request)
    assert first.status == second.status == 200 and first.body is second.body
    landing = endpoints.Request("GET", "/", _headers(), b"", "")
    assert server._landing(landing).body is server._landing(landing).body


def test_requests_arriving_together_wait_for_one_rendering(served, renders) -> None:
    _, _, _, url = served
    barrier = threading.Barrier(8)
    etags: list[str] = []

    def one() -> None:
        barrier.wait()
        etags.append(get(url + "/api/v1/budgets").headers["ETag"])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(etags) == 8 and len(set(etags)) == 1
    assert renders["/api/v1/budgets"] == 1


@pytest.mark.parametrize("path", PAGES)
def test_etag_answers_304_until_the_page_changes(served, path: str) -> None:
    engine, _, _, url = served
    first = get(url + path)
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and first.headers["Cache-Control"] == "no-cache"
    same = get(url + path, **{"If-None-Match": etag, "Accept-Encoding": "gzip"})
    assert same.status_code == 304 and same.content == b"" and same.headers["ETag"] == etag
    assert get(url + path, **{"If-None-Match": '"other", ' + etag}).status_code == 304
    assert get(url + path, **{"If-None-Match": '"other"'}).status_code == 200

    # A hold changes the held amounts, not the snapshot: the page changes, so does its tag.
    status, answer, _ = api.handle(
        engine, "POST", "/api/v1/check", b'{"budget": "company", "cost": 25, "hold": true}'
    )
    assert status == 200 and json.loads(answer)["allowed"] is True
    held = get(url + path, **{"If-None-Match": etag})
    assert held.status_code == 200 and held.headers["ETag"] != etag
    assert ("25.00 USD held" if path == "/" else '"held": 25.0') in held.text
    etag = held.headers["ETag"]
    assert get(url + path, **{"If-None-Match": etag}).status_code == 304

    # Released: back to nothing held, a different page again.
    hold = json.loads(answer)["hold"]["id"]
    api.handle(engine, "POST", "/api/v1/release", json.dumps({"hold": hold}).encode())
    released = get(url + path, **{"If-None-Match": etag})
    assert released.status_code == 200 and released.headers["ETag"] != etag


def test_a_source_turning_stale_is_never_answered_304(served) -> None:
    """Staleness changes with time alone (no new snapshot): the page is rendered again."""
    _, clock, _, url = served
    fresh = get(url + "/api/v1/budgets")
    assert all(b["stale"] is False for b in fresh.json()["budgets"])
    clock.now += 1800  # half the allowed hour: nothing changed but the age
    assert get(url + "/api/v1/budgets", **{"If-None-Match": fresh.headers["ETag"]}).status_code == (
        304
    )
    clock.now += 1801  # past max_data_age: every budget is stale now
    later = get(url + "/api/v1/budgets", **{"If-None-Match": fresh.headers["ETag"]})
    assert later.status_code == 200
    assert all(b["stale"] is True for b in later.json()["budgets"])
    page = get(url + "/")
    assert ">stale</span>" in page.text


def test_head_and_a_304_carry_no_body(served) -> None:
    _, _, _, url = served
    got = get(url + "/api/v1/budgets")
    head = requests.head(url + "/api/v1/budgets", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"]  # both gzipped
    assert head.headers["ETag"] == got.headers["ETag"]
    # On the wire: a 304 has neither a body nor a Content-Length, and the connection stays usable.
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request = (
            f"GET /api/v1/budgets HTTP/1.1\r\nHost: x\r\nIf-None-Match: {got.headers['ETag']}"
            "\r\n\r\nGET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        sock.sendall(request.encode())
        answer = b""
        while b"Healthy." not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 304 ") and b"content-length" not in first.lower()
    assert rest.startswith(b"HTTP/1.1 200 ")


def test_the_script_is_served_with_a_tag_and_javascript_type(served) -> None:
    _, _, _, url = served
    script = get(url + "/-/landing.js")
    assert script.status_code == 200
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert '"use strict"' in script.text
    assert not re.search(r"https?:|fetch\(|XMLHttpRequest|import\b|eval\(", script.text)
    again = get(url + "/-/landing.js", **{"If-None-Match": script.headers["ETag"]})
    assert again.status_code == 304


def test_etag_comparison() -> None:
    page = Page.of(b"page", "text/plain")
    opaque = page.etag.removeprefix("W/")
    assert etag_matches(page.etag, page.etag) and etag_matches(opaque, page.etag)
    assert etag_matches("*", page.etag) and etag_matches(f'"a", {opaque}', page.etag)
    assert not etag_matches(None, page.etag) and not etag_matches('"a"', page.etag)
    assert Page.of(b"page!", "text/plain").etag != page.etag


def test_the_cache_keeps_an_epoch_and_a_bounded_number_of_variants() -> None:
    cache = PageCache(max_variants=2)
    made: list[str] = []

    def render(text: str, until: float = float("inf")) -> Callable[[], tuple[Page, float]]:
        def make() -> tuple[Page, float]:
            made.append(text)
            return Page.of(text.encode(), "text/plain"), until

        return make

    snapshot = object()
    assert cache.get(snapshot, 1, 10.0, "a", render("a", until=20.0)).body == b"a"
    assert cache.get(snapshot, 1, 19.9, "a", render("x")).body == b"a"  # kept
    assert cache.get(snapshot, 1, 20.0, "a", render("b")).body == b"b"  # its moment passed
    assert cache.get(snapshot, 1, 19.0, "a", render("c")).body == b"c"  # the clock went back
    assert cache.get(snapshot, 2, 19.0, "a", render("d")).body == b"d"  # another key
    assert cache.get(object(), 2, 19.0, "a", render("e")).body == b"e"  # another snapshot
    other = object()
    for variant in "vwxyz":
        cache.get(other, 0, 0.0, variant, render(variant))
    cache.get(other, 0, 0.0, "v", render("again"))
    assert made == ["a", "b", "c", "d", "e", "v", "w", "x", "y", "z"]  # v and w kept, not x-z
    cache.get(other, 0, 0.0, "z", render("z2"))
    assert made[-1] == "z2"
    # And a bounded number of bytes: a page that does not fit is served, not kept.
    small = PageCache(max_bytes=100)
    small.get(snapshot, 0, 0.0, "big", render("x" * 150))
    small.get(snapshot, 0, 0.0, "big", render("x" * 150))
    small.get(snapshot, 0, 0.0, "tiny", render("t"))
    small.get(snapshot, 0, 0.0, "tiny", render("t"))
    assert made[-3:] == ["x" * 150, "x" * 150, "t"]


def _headers() -> Message:
    return Message()
