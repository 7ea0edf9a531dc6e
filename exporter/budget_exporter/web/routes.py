"""Requests, responses and the route table (path -> method -> handler).

The table answers what it does not serve by itself: 404 for an unknown path,
405 with ``Allow`` for a method the path does not take.  A ``GET`` route also
answers ``HEAD`` (the server sends the headers only).
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


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose requests carry a body; the server reads no other request's body."""


def text(status: int, message: str, **headers: str) -> Response:
    return Response(status, (message + "\n").encode(), TEXT, headers)


def _not_found(request: Request) -> Response:
    return text(404, "Not found.")


@dataclass(frozen=True)
class Route:
    """What serves one request: the handler, and whether it reads the request body."""

    handler: Handler
    reads_body: bool = False


class Routes:
    """Exact paths with a handler per method, and prefixes that take every method
    (a sub-application such as the check API, answering its own 404 and 405)."""

    def __init__(self) -> None:
        self._paths: dict[str, dict[str, Handler]] = {}
        self._prefixes: list[tuple[str, Handler]] = []

    def add(self, path: str, methods: Mapping[str, Handler]) -> None:
        handlers = {method.upper(): handler for method, handler in methods.items()}
        if "GET" in handlers:
            handlers.setdefault("HEAD", handlers["GET"])
        self._paths[path] = handlers

    def add_prefix(self, prefix: str, handler: Handler) -> None:
        self._prefixes.append((prefix, handler))

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
        for prefix, handler in self._prefixes:
            if path.startswith(prefix):
                return Route(handler, reads_body=method in BODY_METHODS)
        return Route(_not_found)
