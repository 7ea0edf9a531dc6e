"""A scripted HTTP server on 127.0.0.1 standing in for a provider's API."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.net import LocalServer, QuietHandler


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0
    """Seconds between the body's bytes (a server that never quite stops)."""


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class FakeUpstream(LocalServer):
    """Answers from a queue of :class:`Reply`; when it is empty, with ``default``."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply(json={})
        self.queue: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        upstream = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                upstream._answer(self)

            do_POST = do_GET

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self.queue.extend(replies)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        with self._lock:
            self.seen.append(
                Seen(
                    handler.command,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    dict(handler.headers),
                    body,
                )
            )
            reply = self.queue.popleft() if self.queue else self.default
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._send(handler, reply)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        payload = reply.body if reply.body is not None else json.dumps(reply.json).encode()
        try:
            handler.send_response(reply.status)
            ctype = "application/json" if reply.body is None else "text/html"
            handler.send_header("Content-Type", reply.headers.get("Content-Type", ctype))
            for name, value in reply.headers.items():
                if name != "Content-Type":
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if not reply.trickle:
                handler.wfile.write(payload)
            for byte in payload if reply.trickle else b"":
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(reply.trickle)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)
