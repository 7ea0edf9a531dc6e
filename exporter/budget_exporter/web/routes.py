"""Requests, responses and the route table (path -> method -> handler), which answers 404,
405 with ``Allow`` and ``HEAD`` by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """Without the query string."""
    headers: Message
    body: bytes = b""
    query: str = ""
    """The query string, without the ``?``."""


Body = bytes | tuple[bytes, ...]
"""An answer's body: bytes, or parts sent one after the other without being joined
(a large pre-rendered exposition shared by every scrape, then a few bytes of its own)."""


@dataclass(frozen=True)
class Response:
    status: int
    body: Body = b""
    content_type: str = TEXT
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def parts(self) -> tuple[bytes, ...]:
        return self.body if isinstance(self.body, tuple) else (self.body,)

    @property
    def length(self) -> int:
        return sum(len(part) for part in self.parts)


Handler = Callable[[Request], Response]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose requests carry a body; the server reads no other request's body."""

MAX_BODY = 16 * 1024
"""The largest request body a route reads unless it says otherwise: the endpoints
that take one (the check API, ``/-/reload``) need a few kilobytes at most."""


def text(status: int, message: str, **headers: str) -> Response:
    return Response(status, (message + "\n").encode(), TEXT, headers)


def _not_found(request: Request) -> Response:
    return text(404, "Not found.")


@dataclass(frozen=True)
class Route:
    """What serves one request: the handler, whether it reads the request body and
    the largest body it takes (413 beyond, refused before it is read)."""

    handler: Handler
    reads_body: bool = False
    max_body: int = MAX_BODY


class Routes:
    """Exact paths with a handler per method, and prefixes that take every method
    (a sub-application such as the check API, answering its own 404 and 405)."""

    def __init__(self) -> None:
        self._paths: dict[str, dict[str, Handler]] = {}
        self._prefixes: list[tuple[str, Handler, int]] = []

    def add(self, path: str, methods: Mapping[str, Handler]) -> None:
        handlers = {method.upper(): handler for method, handler in methods.items()}
        if "GET" in handlers:
            handlers.setdefault("HEAD", handlers["GET"])
        self._paths[path] = handlers

    def add_prefix(self, prefix: str, handler: Handler, max_body: int = MAX_BODY) -> None:
        self._prefixes.append((prefix, handler, max_body))

    def allowed(self, path: str) -> list[str]:
        return sorted(self._paths.get(path, {}))

    def resolve(self, method: str, path: str) -> Route:
        handlers = self._paths.get(path)
        if handlers is not None:
            handler = handlers.get(method)
            if handler is None:
                allow = ", ".join(self.allowed(path))
                return Route(lambda _: text(405, "Method not allowed.", Allow=allow))
            return Route(handler, reads_body=method in BODY_METHODS)
        for prefix, handler, max_body in self._prefixes:
            if path.startswith(prefix):
                return Route(handler, reads_body=method in BODY_METHODS, max_body=max_body)
        return Route(_not_found)
