"""The HTTP front on 127.0.0.1 in process, spoken to over raw sockets: servers a test
starts (and that end with it), what a client sends byte by byte, and what it reads back."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from budget_exporter.runtime.engine import Engine
from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.transport import Limits

CONFIG = """
sources: [{name: a, provider: static, amount: 1, currency: USD}]
budgets: [{name: b, limit: 10, currency: USD}]
"""


@contextmanager
def servers(
    make_engine: Callable[[str], Engine], **default_limits: float
) -> Iterator[Callable[..., ExporterServer]]:
    """A ``start(limits={...}, routes={...}, **server_kwargs)`` that serves :data:`CONFIG`
    on an ephemeral port with ``default_limits`` overridden by ``limits``; every server
    started is shut down on leaving."""
    started: list[ExporterServer] = []

    def start(
        *,
        limits: Mapping[str, float] | None = None,
        routes: Mapping[str, Mapping[str, Callable[..., Any]]] | None = None,
        **kwargs: Any,
    ) -> ExporterServer:
        settings = Limits(**{**default_limits, **(limits or {})})
        server = ExporterServer(make_engine(CONFIG), "127.0.0.1:0", limits=settings, **kwargs)
        for path, methods in (routes or {}).items():
            server.routes.add(path, dict(methods))
        server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.shutdown()


@contextmanager
def no_warnings(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str] | None = None
) -> Iterator[None]:
    """Fail the test if the exporter logged a warning or worse (with ``capfd``, also if a
    traceback reached stderr)."""
    caplog.set_level(logging.DEBUG, logger="budget_exporter")
    yield
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
    if capfd is not None:
        assert "Traceback" not in capfd.readouterr().err


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status(reply: bytes) -> int:
    """The status code of a raw HTTP/1.1 reply."""
    return int(reply.split(b" ", 2)[1])


def exchange(port: int, *parts: bytes, pause: float = 0.0, half_close: bool = False) -> bytes:
    """Send ``parts`` (``pause`` seconds apart) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for part in parts:
            try:
                sock.sendall(part)
            except OSError:
                break  # the server closed on us: read what it said
            time.sleep(pause)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)
