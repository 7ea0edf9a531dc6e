"""The exporter's endpoints: ``/``, ``/metrics``, ``/-/healthy``, ``/-/ready``,
``/-/reload`` and the check API, as a route table served by
:class:`~budget_exporter.web.transport.HardenedHTTPServer`."""

from __future__ import annotations

import base64
import binascii
import ssl
import threading
from collections.abc import Callable
from dataclasses import replace
from email.message import Message

from budget_exporter.runtime.engine import Engine
from budget_exporter.runtime.reload import ReloadResult
from budget_exporter.web import api, jsonbody
from budget_exporter.web.landing import SCRIPT_PATH, landing_page, render_landing, script_page
from budget_exporter.web.pagecache import PageCache
from budget_exporter.web.routes import Request, Response, Route, Routes, text
from budget_exporter.web.transport import HardenedHTTPServer, Limits
from budget_exporter.web.webconfig import AuthBusy, BasicAuth, WebConfig

DEFAULT_PORT = 9820


def parse_listen_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[IPv6]:PORT``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {address!r}: use HOST:PORT or :PORT")
    return host.strip("[]"), int(port)


def check_metrics_path(path: str) -> str:
    """``--web.telemetry-path``: absolute, and not one of the other endpoints."""
    if not path.startswith("/") or path == "/":
        raise ValueError(f"invalid telemetry path {path!r}: it must start with / and not be /")
    if path.startswith(("/-/", api.PREFIX)):
        raise ValueError(f"invalid telemetry path {path!r}: it clashes with another endpoint")
    return path


BUSY = {"Retry-After": "1"}


class ExporterServer:
    """Serves the engine's snapshot; starts in a background thread.

    ``on_reload`` serves ``/-/reload``; without it (no ``--web.enable-lifecycle``)
    the endpoint answers 403, as Prometheus does.
    """

    def __init__(
        self,
        engine: Engine,
        listen_address: str,
        web_config: WebConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
        metrics_path: str = "/metrics",
        on_reload: Callable[[], ReloadResult] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.engine = engine
        self.metrics_path = metrics_path
        self.on_reload = on_reload
        web_config = web_config or WebConfig()
        self.headers = dict(web_config.http_server_config.headers)
        self.auth = BasicAuth(web_config.basic_auth_users) if web_config.basic_auth_users else None
        # The landing page and the budgets document, rendered once per snapshot.
        self.landing_cache = PageCache()
        self.budgets_cache = PageCache()
        self.routes = self._routes()
        host, port = parse_listen_address(listen_address)
        limits = limits or Limits()
        if self.auth is not None:  # workers waiting for a password check are not free either
            limits = replace(limits, max_workers=limits.workers + self.auth.max_pending)
        self.httpd = HardenedHTTPServer((host, port), self, limits, ssl_context)
        self.scheme = "https" if ssl_context is not None else "http"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _routes(self) -> Routes:
        routes = Routes()
        routes.add("/", {"GET": self._landing})
        routes.add(SCRIPT_PATH, {"GET": lambda request: script_page().response(request)})
        routes.add(self.metrics_path, {"GET": self._metrics})
        routes.add("/-/healthy", {"GET": self._healthy})
        routes.add("/-/ready", {"GET": self._ready})
        reload = self._reload if self.on_reload is not None else _lifecycle_off
        routes.add("/-/reload", {"POST": reload, "PUT": reload})
        # The API answers its own 404 and 405; its bodies are small JSON documents.
        routes.add_prefix(api.PREFIX, self._api, max_body=jsonbody.MAX_BYTES)
        return routes

    # What the transport asks (budget_exporter.web.transport.App).

    def route(self, method: str, path: str) -> Route:
        return self.routes.resolve(method, path)

    def authorize(self, headers: Message) -> Response | None:
        if self.auth is None:
            return None
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            user, password = _basic_credentials(value)
            try:
                if self.auth.check(user, password):
                    return None
            except AuthBusy:  # not a wrong password: a busy checker, worth a retry
                return text(503, "Too many password checks waiting, retry shortly.", **BUSY)
        return text(401, "Unauthorized.", **{"WWW-Authenticate": 'Basic realm="budget-exporter"'})

    # The endpoints.

    def _metrics(self, request: Request) -> Response:
        # The parts as they are: the snapshot's bytes are shared by every scrape, not copied.
        body, content_type, encoding = self.engine.snapshot.rendered.select_parts(
            request.headers.get("Accept"), request.headers.get("Accept-Encoding")
        )
        headers = {"Vary": "Accept, Accept-Encoding"}
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        return Response(200, body, content_type, headers)

    def _healthy(self, request: Request) -> Response:
        if self.engine.healthy():
            return text(200, "Healthy.")
        return text(503, "Unhealthy: a polling thread has stopped.")

    def _ready(self, request: Request) -> Response:
        pending = self.engine.pending_sources()
        if pending:
            return text(503, f"Not ready: waiting for the first poll of {', '.join(pending)}.")
        return text(200, "Ready.")

    def _reload(self, request: Request) -> Response:
        assert self.on_reload is not None
        ok, message = self.on_reload()
        return text(200 if ok else 500, message)

    def _landing(self, request: Request) -> Response:
        try:
            page = landing_page(
                self.engine.snapshot,
                self.metrics_path,
                request.query,
                self.engine.clock(),
                self.landing_cache,
                render_landing,
            )
        except api.FilterError as exc:
            return text(400, f"Bad filter: {exc}.")
        return page.response(request)

    def _api(self, request: Request) -> Response:
        if request.path == api.BUDGETS_PATH and request.method in ("GET", "HEAD"):
            try:
                page = api.budgets_page(self.engine, request.query, self.budgets_cache)
            except api.FilterError as exc:
                status, payload, extra = api.error_reply(400, str(exc))
                return Response(status, payload, api.CONTENT_TYPE, extra)
            return page.response(request)
        status, payload, extra = api.handle(self.engine, request.method, request.path, request.body)
        return Response(status, payload, api.CONTENT_TYPE, extra)


def _basic_credentials(value: str) -> tuple[str, str]:
    """User and password of a ``Basic`` credential; empty ones (a failed check) when it
    is not base64 of UTF-8, e.g. holds a non-ASCII byte."""
    try:
        decoded = base64.b64decode(value.strip().encode("ascii"), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):  # UnicodeError is a ValueError
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def _lifecycle_off(request: Request) -> Response:
    return text(403, "Lifecycle API is not enabled.")
