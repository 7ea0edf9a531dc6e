"""The HTTP/1.1 transport: ``http.server`` parsing, with the limits a public port needs.

* **No thread for a silent connection.**  A new connection waits in a selector
  until its first bytes arrive; only then does it get a thread of its own.
* **A deadline per request.**  Waiting for a request, the TLS handshake, the
  request line, the headers and the body must all happen within
  ``read_timeout`` (counted from the accept, then from the previous answer):
  a client sending one byte at a time is cut off at the deadline with 408 (or a
  plain close when it sent nothing), whatever its pace.
* **A cap on connections.**  At ``max_connections`` a new connection closes the
  one that has waited longest for its next request (an idle keep-alive, or a
  slow client still sending one), so a scraper always gets in; when every
  connection is busy answering, the new one gets 503 at once.
* **A large listen backlog** (1024, or the kernel's ``somaxconn`` if lower), so a
  burst of connections waits in the queue instead of retrying SYNs.
* **Bodies only where a route reads one** (POST/PUT), with a single decimal
  ``Content-Length`` (conflicting duplicates are refused, no chunked bodies) of at
  most ``max_body`` bytes; a request whose body we do not read is answered and
  its connection closed.
* **TCP_NODELAY**, so small answers leave at once; a client that goes away is
  logged at debug level, never as an error.

Which handler answers is up to the :class:`App` (auth and the route table).
"""

from __future__ import annotations

import _thread
import contextlib
import heapq
import io
import logging
import math
import selectors
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Protocol

from budget_exporter.web.routes import Request, Response, Route, text

log = logging.getLogger("budget_exporter.web")


@dataclass(frozen=True)
class Limits:
    read_timeout: float = 15.0
    """Seconds a whole request may take to arrive (idle wait, TLS handshake, headers, body)."""
    max_connections: int = 512
    max_body: int = 1 << 20
    backlog: int = 1024


class App(Protocol):
    """What the transport asks the application."""

    headers: dict[str, str]
    """Sent with every answer (the web config's security headers)."""

    def authorize(self, headers: Message) -> Response | None:
        """None to go on, or the answer refusing the request."""

    def route(self, method: str, path: str) -> Route: ...


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 22\r\nRetry-After: 1\r\nConnection: close\r\n\r\nToo many connections.\n"
)


class _Slot:
    """One admitted connection: its socket, and since when it waits for a request."""

    def __init__(self, sock: socket.socket, client_address: tuple[str, int]) -> None:
        self.sock = sock
        self.client_address = client_address
        self.accepted = time.monotonic()
        self.waiting_since: float | None = self.accepted
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True
        # The plain socket's shutdown (also for TLS): the reading thread sees EOF at once.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class ConnectionLimiter:
    """At most ``limit`` connections; at the cap the longest-waiting one makes room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: set[_Slot] = set()
        self._lock = threading.Lock()
        self.evicted = 0
        self.refused = 0

    def admit(self, sock: socket.socket, client_address: tuple[str, int]) -> _Slot | None:
        with self._lock:
            if len(self._slots) >= self.limit:
                waiting = [s for s in self._slots if s.waiting_since is not None]
                if not waiting:
                    self.refused += 1
                    return None
                victim = min(waiting, key=lambda s: s.waiting_since or 0.0)
                self._slots.discard(victim)
                victim.evict()
                self.evicted += 1
            slot = _Slot(sock, client_address)
            self._slots.add(slot)
            return slot

    def waiting(self, slot: _Slot, since: float) -> None:
        with self._lock:
            slot.waiting_since = since

    def answering(self, slot: _Slot) -> None:
        with self._lock:
            slot.waiting_since = None

    def release(self, slot: _Slot) -> None:
        with self._lock:
            self._slots.discard(slot)

    @property
    def open(self) -> int:
        return len(self._slots)


class _DeadlineReader(io.RawIOBase):
    """A socket's input that fails with :class:`TimeoutError` once ``deadline`` passes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = math.inf
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self.sock.settimeout(remaining)
        count = self.sock.recv_into(buffer)
        self.received += count
        return count


class _Connection(BaseHTTPRequestHandler):
    """Serves the requests of one connection, one after the other."""

    server: HardenedHTTPServer
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # errors about a malformed request line get a status line
    server_version = "budget-exporter"
    disable_nagle_algorithm = True
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(message)s.\n"

    def __init__(
        self,
        sock: socket.socket,
        client_address: tuple[str, int],
        server: HardenedHTTPServer,
        slot: _Slot,
    ) -> None:
        self.slot = slot
        super().__init__(sock, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by one that keeps the request deadline
        self.reader = _DeadlineReader(self.connection)
        self.reader.deadline = self.slot.accepted + self.server.limits.read_timeout
        self.rfile = io.BufferedReader(self.reader, 65536)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        self.close_connection = True
        self.command, self.requestline, self.request_version = "", "", "HTTP/1.1"
        limiter, received = self.server.limiter, self.reader.received
        limiter.waiting(self.slot, self.reader.deadline - self.server.limits.read_timeout)
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                return  # the client closed the connection
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.parse_request():
                return  # answered 400, 431 or 505 already
        except TimeoutError:
            if self.reader.received > received:  # part of a request came, too slowly
                log.debug("%s: request not complete within the deadline", self.address_string())
                self._send(text(408, "Request timed out."), head=False)
            return
        limiter.answering(self.slot)
        self._answer()
        self.reader.deadline = time.monotonic() + self.server.limits.read_timeout

    def _answer(self) -> None:
        head = self.command == "HEAD"
        path, _, query = self.path.partition("?")
        app = self.server.app
        has_body = (
            "Transfer-Encoding" in self.headers
            or self.headers.get("Content-Length", "0").strip() != "0"
        )
        refusal = app.authorize(self.headers)
        if refusal is not None:
            self.close_connection |= has_body  # an unread body cannot be skipped
            self._send(refusal, head)
            return
        route = app.route(self.command, path)
        body = b""
        if route.reads_body:
            read = self._read_body()
            if isinstance(read, Response):
                self.close_connection = True
                self._send(read, head)
                return
            body = read
        elif has_body:
            self.close_connection = True
        try:
            response = route.handler(Request(self.command, path, self.headers, body, query))
        except Exception:  # never drop a connection without an answer
            log.exception("error answering %s %s", self.command, path)
            self.close_connection = True
            response = text(500, "Internal error.")
        self._send(response, head)

    def _read_body(self) -> bytes | Response:
        """The request body, or the answer refusing it."""
        if "Transfer-Encoding" in self.headers:
            return text(411, "Send a Content-Length.")
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or ["0"]}
        if len(lengths) > 1:
            return text(400, "Conflicting Content-Length headers.")
        length = lengths.pop()
        if not (length.isascii() and length.isdigit()):
            return text(400, "Invalid Content-Length.")
        if int(length) > self.server.limits.max_body:
            return text(413, "Request body too large.")
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:
            return text(408, "Request body not complete within the deadline.")
        if len(body) < int(length):
            return text(400, "Request body shorter than its Content-Length.")
        return body

    def _send(self, response: Response, head: bool) -> None:
        self.connection.settimeout(self.server.limits.read_timeout)  # a client not reading
        if response.status >= 400 and response.status not in (401, 403, 404, 405, 503):
            self.close_connection = True
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in {**self.server.app.headers, **response.headers}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(response.body)


class HardenedHTTPServer(socketserver.TCPServer):
    """Accepts connections (TLS when ``ssl_context`` is set); one thread each."""

    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.request_queue_size = limits.backlog  # the kernel caps it at net.core.somaxconn
        self.app = app
        self.limits = limits
        self.ssl_context = ssl_context
        self.limiter = ConnectionLimiter(limits.max_connections)
        self._stopping = False
        self._serving = False
        self._stopped = threading.Event()
        super().__init__(address, _Connection)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections and hold them, without a thread, until their first bytes
        arrive (or their deadline passes); then serve each in a thread of its own."""
        self._serving = True
        self.socket.setblocking(False)  # accept everything queued in one go
        deadlines: list[tuple[float, int, _Slot]] = []
        with selectors.DefaultSelector() as room:
            room.register(self.socket, selectors.EVENT_READ)
            try:
                while not self._stopping:
                    timeout = poll_interval
                    if deadlines:
                        timeout = min(timeout, max(deadlines[0][0] - time.monotonic(), 0.0))
                    for key, _ in room.select(timeout):
                        if key.fileobj is self.socket:
                            self._accept_all(room, deadlines)
                        else:
                            room.unregister(key.fileobj)
                            self._dispatch(key.data)
                    self._expire(room, deadlines)
            finally:
                for key in list(room.get_map().values()):
                    if key.fileobj is not self.socket:
                        self.shutdown_request(key.fileobj)  # type: ignore[arg-type]
                self._stopped.set()

    def shutdown(self) -> None:
        self._stopping = True
        if self._serving:
            self._stopped.wait()

    def _accept_all(self, room: selectors.BaseSelector, deadlines: list) -> None:
        while True:
            try:
                sock, client_address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: try again on the next wake-up
                log.debug("accept failed", exc_info=True)
                return
            slot = self.limiter.admit(sock, client_address)
            if slot is None:
                self._busy(sock)
                continue
            sock.setblocking(True)
            room.register(sock, selectors.EVENT_READ, slot)
            deadline = slot.accepted + self.limits.read_timeout
            heapq.heappush(deadlines, (deadline, id(slot), slot))

    def _dispatch(self, slot: _Slot) -> None:
        if slot.evicted:  # made room for a newer connection while it said nothing
            self.shutdown_request(slot.sock)
            return
        # A bare thread: threading.Thread.start() waits for the thread to run, which
        # in a burst of connections would make each one wait for a context switch.
        _thread.start_new_thread(self._serve, (slot.sock, slot.client_address, slot))

    def _expire(self, room: selectors.BaseSelector, deadlines: list) -> None:
        """Close the connections that sent nothing before their deadline."""
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            _, _, slot = heapq.heappop(deadlines)
            try:
                room.unregister(slot.sock)
            except (KeyError, ValueError):
                continue  # already in a thread of its own
            self.limiter.release(slot)
            self.shutdown_request(slot.sock)

    def _busy(self, sock: socket.socket) -> None:
        """503 without blocking the accept loop (under TLS a plain close: no handshake)."""
        log.debug("at the cap of %d connections: refusing one", self.limits.max_connections)
        if self.ssl_context is None:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.send(_BUSY)
        self.shutdown_request(sock)

    def _serve(self, sock: socket.socket, client_address: tuple[str, int], slot: _Slot) -> None:
        conn = sock
        try:
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
                slot.sock = conn  # eviction must reach the socket that now owns the descriptor
                conn.settimeout(
                    max(slot.accepted + self.limits.read_timeout - time.monotonic(), 0.01)
                )
                conn.do_handshake()  # bounded as a whole by the timeout
            _Connection(conn, client_address, self, slot)
        except (OSError, ssl.SSLError) as exc:  # the client went away, or spoke no TLS
            log.debug("connection from %s ended: %s", client_address[0], exc)
        except Exception:
            log.exception("error serving a connection from %s", client_address[0])
        finally:
            self.limiter.release(slot)
            self.shutdown_request(conn)
