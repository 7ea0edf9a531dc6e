"""The HTTP endpoints: ``/``, ``/metrics``, ``/-/healthy``, ``/-/ready``, ``/-/reload``."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from budget_exporter import api
from budget_exporter.engine import Engine
from budget_exporter.landing import render_landing
from budget_exporter.webconfig import BasicAuth, WebConfig

log = logging.getLogger("budget_exporter.web")

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_PORT = 9820
_MAX_BODY = 1 << 20
_HANDSHAKE_TIMEOUT = 10.0
_IDLE_TIMEOUT = 30.0
_TEXT = "text/plain; charset=utf-8"


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


class _Server(ThreadingHTTPServer):
    """One thread per connection; TLS handshakes happen in that thread, not in the
    accept loop, so a client that connects and stays silent blocks nobody else."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = (
        128  # the default 5 drops connections of concurrent scrapers (1 s SYN retry)
    )

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.ssl_context = ssl_context
        super().__init__(address, handler)

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with contextlib.suppress(OSError):  # small answers leave at once (no Nagle delay)
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_HANDSHAKE_TIMEOUT)
        try:
            secure = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            secure.close()


class ExporterServer:
    """Serves the engine's snapshot; starts in a background thread."""

    def __init__(
        self,
        engine: Engine,
        listen_address: str,
        web_config: WebConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
        metrics_path: str = "/metrics",
        on_reload: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        self.engine = engine
        self.metrics_path = metrics_path
        self.on_reload = on_reload  # None: the lifecycle API is off (--web.enable-lifecycle)
        web_config = web_config or WebConfig()
        self.headers = dict(web_config.http_server_config.headers)
        self.auth = BasicAuth(web_config.basic_auth_users) if web_config.basic_auth_users else None
        host, port = parse_listen_address(listen_address)
        self.httpd = _Server((host, port), self._handler(), ssl_context)
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

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "budget-exporter"
            timeout = _IDLE_TIMEOUT  # idle keep-alive connections do not hold a thread forever
            sys_version = ""
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s %s", self.address_string(), format % args)

            def do_GET(self) -> None:
                self._dispatch(head=False)

            def do_HEAD(self) -> None:
                self._dispatch(head=True)

            def do_POST(self) -> None:
                self._dispatch(head=False)

            do_PUT = do_POST

            def _dispatch(self, head: bool) -> None:
                try:
                    self._route(head)
                except Exception:  # never drop a connection without an answer
                    log.exception("error answering %s %s", self.command, self.path.split("?")[0])
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self._send(500, b"Internal error.\n", _TEXT, head, {"Connection": "close"})

            def _read_body(self, head: bool) -> bytes | None:
                """The request body, or None after answering a request we cannot read."""
                if "Transfer-Encoding" in self.headers:
                    self._refuse(411, b"Send a Content-Length.\n", head)
                    return None
                length = self.headers.get("Content-Length", "0").strip()
                if not (length.isascii() and length.isdigit()):
                    self._refuse(400, b"Invalid Content-Length.\n", head)
                    return None
                if int(length) > _MAX_BODY:
                    self._refuse(413, b"Request body too large.\n", head)
                    return None
                return self.rfile.read(int(length)) if int(length) else b""

            def _refuse(
                self, code: int, body: bytes, head: bool, extra: dict[str, str] | None = None
            ) -> None:
                """Answer and close: an unread request body cannot be skipped."""
                self.close_connection = True
                self._send(code, body, _TEXT, head, {**(extra or {}), "Connection": "close"})

            def _route(self, head: bool) -> None:
                if not self._authorized(head):
                    return
                body = self._read_body(head)
                if body is None:
                    return
                path = self.path.split("?", 1)[0]
                method = self.command
                if path == server.metrics_path and method in ("GET", "HEAD"):
                    self._metrics(head)
                elif path == "/-/healthy" and method in ("GET", "HEAD"):
                    if server.engine.healthy():
                        self._send(200, b"Healthy.\n", _TEXT, head)
                    else:
                        self._send(503, b"Unhealthy: a polling thread has stopped.\n", _TEXT, head)
                elif path == "/-/ready" and method in ("GET", "HEAD"):
                    pending = server.engine.pending_sources()
                    if pending:
                        text = f"Not ready: waiting for the first poll of {', '.join(pending)}.\n"
                        self._send(503, text.encode(), _TEXT, head)
                    else:
                        self._send(200, b"Ready.\n", _TEXT, head)
                elif path == "/-/reload":
                    if method not in ("POST", "PUT"):
                        self._send(
                            405, b"Use POST to reload.\n", _TEXT, head, {"Allow": "POST, PUT"}
                        )
                        return
                    if server.on_reload is None:
                        self._send(403, b"Lifecycle API is not enabled.\n", _TEXT, head)
                        return
                    ok, message = server.on_reload()
                    self._send(200 if ok else 500, (message + "\n").encode(), _TEXT, head)
                elif path.startswith(api.PREFIX):
                    code, payload, extra = api.handle(server.engine, method, path, body)
                    self._send(code, payload, api.CONTENT_TYPE, head, extra=extra)
                elif path == "/" and method in ("GET", "HEAD"):
                    query = self.path.partition("?")[2]
                    page = render_landing(server.engine.snapshot, server.metrics_path, query)
                    self._send(200, page, "text/html; charset=utf-8", head)
                elif path in (server.metrics_path, "/-/healthy", "/-/ready", "/"):
                    self._send(405, b"Method not allowed.\n", _TEXT, head, {"Allow": "GET, HEAD"})
                else:
                    self._send(404, b"Not found.\n", _TEXT, head)

            def _metrics(self, head: bool) -> None:
                body, ctype, encoding = server.engine.snapshot.rendered.select(
                    self.headers.get("Accept"), self.headers.get("Accept-Encoding")
                )
                extra = {"Vary": "Accept, Accept-Encoding"}
                if encoding is not None:
                    extra["Content-Encoding"] = encoding
                self._send(200, body, ctype, head, extra=extra)

            def _authorized(self, head: bool) -> bool:
                if server.auth is None:
                    return True
                header = self.headers.get("Authorization", "")
                scheme, _, value = header.partition(" ")
                if scheme.lower() == "basic":
                    try:
                        user, _, password = (
                            base64.b64decode(value, validate=True).decode().partition(":")
                        )
                    except (binascii.Error, UnicodeDecodeError):
                        user = password = ""
                    if server.auth.check(user, password):
                        return True
                # Refused before reading any body: close rather than skip it.
                self._refuse(
                    401,
                    b"Unauthorized.\n",
                    head,
                    {"WWW-Authenticate": 'Basic realm="budget-exporter"'},
                )
                return False

            def _send(
                self,
                code: int,
                body: bytes,
                ctype: str,
                head: bool,
                extra: dict[str, str] | None = None,
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in {**server.headers, **(extra or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        return Handler
