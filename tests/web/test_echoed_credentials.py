"""An upstream that quotes the credentials it was sent back in its error text: no
credential, in any form it travelled in (basic auth's base64 of ``user:password``, a
``Bearer`` token, a header value, from the configuration or from a ``_file``), shows
on the landing page, in ``/api/v1/budgets`` or in the log."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from budget_exporter.core.redaction import MASK, Redactor, basic_auth_forms
from tests.support.exporter import ExporterProcess, exporters
from tests.support.fake_upstream import FakeUpstream, Reply

USER, PASSWORD = "scraper", "pa55:w0rd-9f8e7d"
FILE_USER, FILE_PASSWORD = "rotated", "fi1e-pa55-4c3b2a"
TOKEN = "tok-5e6f7a8b9c0d"
FILE_TOKEN = "ftok-0d9c8b7a6f5e"
API_KEY = "key-1a2b3c4d5e6f"
FILE_KEY = "fkey-6f5e4d3c2b1a"
PAIRS = [(USER, PASSWORD), (FILE_USER, FILE_PASSWORD)]


class EchoingUpstream(FakeUpstream):
    """Answers every request 401 with the credentials it received quoted in the error,
    as some APIs, proxies and gateways do ("Incorrect API key provided: ...")."""

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        quoted = [
            f"{name}={value}"
            for name, value in handler.headers.items()
            if name.lower() in ("authorization", "x-api-key", "api_key")
        ]
        echo = Reply(
            401,
            {
                "status": "error",
                "errorType": "unauthorized",
                "error": "Incorrect API key provided: " + ", ".join(quoted),
            },
        )
        super()._send(handler, echo)


@pytest.fixture
def echoing() -> Iterator[EchoingUpstream]:
    server = EchoingUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def running() -> Iterator[Callable[..., ExporterProcess]]:
    yield from exporters()


def every_form(secrets: list[str], pairs: list[tuple[str, str]]) -> list[str]:
    forms = [*secrets, *(quote(s, safe="") for s in secrets)]
    for user, password in pairs:
        pair = f"{user}:{password}".encode()
        forms.append(base64.b64encode(pair).decode())
    return forms


def test_basic_auth_forms_are_masked_by_the_redactor() -> None:
    redactor = Redactor()
    redactor.set_owned("source:p", {PASSWORD, *basic_auth_forms(USER, PASSWORD)})
    header = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert redactor(f"rejected {header}") == f"rejected Basic {MASK}"
    assert redactor(f"?pw={quote(PASSWORD, safe='')}") == f"?pw={MASK}"
    latin = "Basic " + base64.b64encode("nutzer:pässwort-1".encode("latin-1")).decode()
    redactor.set_owned("source:q", basic_auth_forms("nutzer", "pässwort-1"))
    assert MASK in redactor(latin)


def test_an_upstream_echoing_credentials_leaks_none_of_them(
    write_config, running, echoing: EchoingUpstream, tmp_path: Path
) -> None:
    (tmp_path / "password").write_text(FILE_PASSWORD + "\n")
    (tmp_path / "token").write_text(FILE_TOKEN + "\n")
    (tmp_path / "headers.yml").write_text(f"X-Api-Key: {FILE_KEY}\n")
    query = "sum(increase(cost_total[{range}]))"
    url = echoing.url
    path = write_config(
        f"""
        global: {{poll_interval: 300ms, retries: 0, timeout: 2s}}
        sources:
          - {{name: basic, provider: prometheus, url: "{url}", query: "{query}",
              currency: USD, username: {USER}, password: "{PASSWORD}"}}
          - {{name: basic-file, provider: prometheus, url: "{url}", query: "{query}",
              currency: USD, username: {FILE_USER}, password_file: {tmp_path / "password"}}}
          - {{name: bearer, provider: prometheus, url: "{url}", query: "{query}",
              currency: USD, bearer_token: {TOKEN}}}
          - {{name: bearer-file, provider: prometheus, url: "{url}", query: "{query}",
              currency: USD, bearer_token_file: {tmp_path / "token"}}}
          - {{name: header, provider: prometheus, url: "{url}", query: "{query}",
              currency: USD, headers: {{X-Api-Key: {API_KEY}}}}}
          - {{name: header-file, provider: prometheus, url: "{url}", query: "{query}",
              currency: USD, headers_file: {tmp_path / "headers.yml"}}}
        budgets:
          - {{name: b, limit: 10, currency: USD,
              sources: [basic, basic-file, bearer, bearer-file, header, header-file]}}
        """
    )
    exporter = running(path, "--log.level=debug")
    deadline = time.monotonic() + 20
    while True:  # until every source has failed once, with the echo as its error
        assert time.monotonic() < deadline, "not every source was polled"
        assert exporter.proc.poll() is None, exporter.stop()[1]
        try:
            document = requests.get(f"{exporter.url}/api/v1/budgets", timeout=5).json()
        except requests.ConnectionError:
            document = {"sources": []}
        if sum(1 for s in document["sources"] if s["last_error"]) == 6:
            break
        time.sleep(0.1)
    sent = " ".join(str(seen.headers) for seen in echoing.seen)
    basics = [base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in PAIRS]
    for credential in (TOKEN, FILE_TOKEN, API_KEY, FILE_KEY, *basics):
        assert credential in sent  # really used, so really echoed
    pages = {
        p: requests.get(f"{exporter.url}{p}", timeout=5).text
        for p in ("/", "/api/v1/budgets", "/metrics")
    }
    _, log = exporter.stop()
    assert "Incorrect API key provided" in pages["/api/v1/budgets"]  # the echo came through
    for shown in (f"Basic {MASK}", f"Bearer {MASK}", f"X-Api-Key={MASK}"):
        assert shown in pages["/api/v1/budgets"] and shown in log
    forms = every_form([PASSWORD, FILE_PASSWORD, TOKEN, FILE_TOKEN, API_KEY, FILE_KEY], PAIRS)
    for where, text in {**pages, "log": log}.items():
        for form in forms:
            assert form not in text, f"{form!r} in {where}"
