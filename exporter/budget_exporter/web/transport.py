"""The HTTP/1.1 transport: strict request parsing, waiting connections in a selector, a few
worker threads, deadlines both ways and the other limits a public port needs (see
docs/security.md#the-http-front).  Which handler answers is up to the :class:`App`.
"""

from __future__ import annotations

import _thread
import collections
import contextlib
import email.utils
import heapq
import itertools
import logging
import math
import re
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from typing import Protocol

from budget_exporter.web.routes import Request, Response, Route, text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    read_timeout: float = 15.0
    """Seconds a whole request may take to arrive (idle wait, TLS handshake, headers, body)."""
    write_timeout: float = 15.0
    """Seconds a client may take to take a whole answer."""
    max_connections: int = 512
    max_workers: int | None = None
    """Threads reading requests and writing answers; None: see :attr:`workers`."""
    max_body: int = 1 << 20
    """The largest body any route may read (each route also has its own, smaller, cap)."""
    max_header_bytes: int = 64 * 1024
    """The request line and the headers together."""
    max_headers: int = 100
    stall_grace: float = 0.5
    """Seconds a request coming in, or an answer going out, may wait on its client before
    the connection counts as slow (its worker, or its place, may then be taken)."""
    send_buffer: int | None = 128 * 1024
    """The kernel's send buffer per connection (``SO_SNDBUF``; the kernel doubles it):
    without a cap it grows to megabytes for a client that does not read."""
    backlog: int = 1024

    @property
    def workers(self) -> int:
        """``max_workers``, or a sixteenth of the connection cap (8 to 64), at most the cap."""
        if self.max_workers is not None:
            return max(1, self.max_workers)
        return min(self.max_connections, max(8, min(16, self.max_connections // 16)))


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
_PLAIN_TO_TLS_TEXT = b"Client sent an HTTP request to an HTTPS server.\n"
_PLAIN_TO_TLS = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
) % (len(_PLAIN_TO_TLS_TEXT), _PLAIN_TO_TLS_TEXT)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello
_SEND_SLICE = 256 * 1024  # bytes handed to one send() call (a view, not a copy)
_RECV_SIZE = 16 * 1024
_PEEK = 8 * 1024  # bytes looked at to tell whether a request head has all come
_JOIN_BELOW = 16 * 1024  # a body this small is sent with the headers, copied once
_SERVER = "budget-exporter"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
_KEEP_OPEN = (401, 403, 404, 405, 503)  # error answers after which the connection may go on


class _Slot:
    """One admitted connection and what it is doing."""

    def __init__(self, sock: socket.socket, client_address: tuple[str, int]) -> None:
        self.sock = sock
        self.client_address = client_address
        self.accepted = time.monotonic()
        self.deadline = self.accepted  # of the current request; set by the server
        self.waiting_since: float | None = self.accepted
        """Since when the connection waits on its client: for (the rest of) a request,
        or to take an answer; None while the answer is being made."""
        self.readable_since: float | None = None
        """When the bytes of its current request began to come (first seen readable)."""
        self.complete = False
        """Its request head is all there (seen without reading it)."""
        self.writing = False
        self.pending: collections.deque[memoryview] | None = None
        """What is left of an answer the client did not take at once (views, no copies):
        the selector writes it as the client reads, holding no thread."""
        self.keep_after = False  # read the next request once ``pending`` is written
        self.worker = False  # holds one of the workers
        self.tls = False  # the TLS handshake is done
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True
        # The plain socket's shutdown (also for TLS): a reading or writing thread stops at once.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def slow(self, now: float, grace: float) -> float | None:
        """Since when it waits on its client, if that makes it a candidate for eviction:
        any wait for a request to begin; a request coming in (in a worker) or an answer
        going out only once it has waited ``grace`` seconds (the client is slow, not just
        in the middle of it)."""
        since = self.waiting_since
        if since is None or ((self.writing or self.worker) and now - since < grace):
            return None
        return since


class ConnectionLimiter:
    """At most ``limit`` connections and ``workers`` of them in a worker thread; at
    either cap the connection waiting longest on its client makes room."""

    def __init__(self, limit: int, workers: int | None = None, grace: float = 0.5) -> None:
        self.limit = limit
        self.workers = workers if workers is not None else limit
        self.grace = grace
        self._slots: set[_Slot] = set()
        self._working: set[_Slot] = set()
        self._lock = threading.Lock()
        self.evicted = 0
        self.refused = 0
        self.taken_workers = 0
        """Workers taken from a slow client for a connection with something to say."""

    def admit(self, sock: socket.socket, client_address: tuple[str, int]) -> _Slot | None:
        with self._lock:
            if len(self._slots) >= self.limit:
                victim = self._slowest(self._slots)
                if victim is None:
                    self.refused += 1
                    return None
                self._evict(victim)
            slot = _Slot(sock, client_address)
            self._slots.add(slot)
            return slot

    def take_worker(self, slot: _Slot) -> bool:
        """Give ``slot`` a worker: a free one, or the slowest client's; False if none."""
        with self._lock:
            if slot not in self._slots:
                return False
            if len(self._working) >= self.workers:
                victim = self._slowest(self._working)
                if victim is None:
                    return False
                self._evict(victim)
                self.taken_workers += 1
            slot.worker = True
            # A request whose head is all there is read at once: it gets the grace from now.
            # One still coming is judged by when it began: a slow sender that waited for a
            # worker may lose it again at once.
            now = time.monotonic()
            slot.waiting_since = now if slot.complete else (slot.readable_since or now)
            self._working.add(slot)
            return True

    def _slowest(self, slots: Iterable[_Slot]) -> _Slot | None:
        now = time.monotonic()
        best: tuple[float, _Slot] | None = None
        for slot in slots:
            since = slot.slow(now, self.grace)
            if since is not None and (best is None or since < best[0]):
                best = (since, slot)
        return best[1] if best else None

    def _evict(self, victim: _Slot) -> None:
        self._slots.discard(victim)
        self._working.discard(victim)
        victim.worker = False
        victim.evict()
        self.evicted += 1

    def waiting(self, slot: _Slot, since: float) -> None:
        slot.waiting_since = since

    def answering(self, slot: _Slot) -> None:
        slot.waiting_since = None
        slot.readable_since = None
        slot.complete = False

    def release_worker(self, slot: _Slot) -> None:
        with self._lock:
            self._working.discard(slot)
            slot.worker = False

    def pass_worker(self, done: _Slot, slot: _Slot) -> bool | None:
        """Give ``done``'s worker to ``slot`` (no eviction: a worker is free); False if
        ``slot`` has been closed meanwhile (``done``'s worker is released either way);
        None if ``done`` has no worker to give: it was evicted, and its worker went to the
        connection that evicted it (the worker cap holds: this thread must end)."""
        with self._lock:
            if done not in self._working:
                return None
            self._working.discard(done)
            done.worker = False
            if slot not in self._slots:
                return False
            slot.worker = True
            slot.waiting_since = time.monotonic()  # its request head is all there
            self._working.add(slot)
            return True

    def release(self, slot: _Slot) -> None:
        with self._lock:
            self._slots.discard(slot)
            self._working.discard(slot)
            slot.worker = False

    @property
    def open(self) -> int:
        return len(self._slots)

    @property
    def busy_workers(self) -> int:
        return len(self._working)

    @property
    def writing(self) -> int:
        """Connections whose answer waits for the client to take it."""
        return sum(1 for slot in list(self._slots) if slot.writing)


class BadRequest(Exception):
    """A request answered with ``status`` and a one-line ``message``, then closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Reader:
    """A socket's input, buffered, that fails with :class:`TimeoutError` once
    ``deadline`` passes; holds at most what one line or body read asks for."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = math.inf
        self.received = 0
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _fill(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self.sock.settimeout(remaining)
        data = self.sock.recv(_RECV_SIZE)
        self.received += len(data)
        self._buffer += data
        return bool(data)

    def readline(self, limit: int) -> bytes:
        """A line with its ending; at most ``limit`` bytes (then without one), or what
        came before the client closed."""
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) >= limit:
                return self._take(limit)
            searched = len(self._buffer)
            if not self._fill():
                return self._take(len(self._buffer))

    def read(self, count: int) -> bytes:
        """``count`` bytes, or fewer if the client closed first."""
        while len(self._buffer) < count and self._fill():
            pass
        return self._take(min(count, len(self._buffer)))

    def _take(self, count: int) -> bytes:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data


@dataclass
class RequestHead:
    method: str
    target: str
    version: tuple[int, int]
    headers: Message

    @property
    def keep_alive(self) -> bool:
        tokens = {
            t.strip().lower()
            for v in self.headers.get_all("Connection") or []
            for t in v.split(",")
        }
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens


def read_head(reader: _Reader, max_bytes: int, max_headers: int) -> RequestHead | None:
    """The request line and headers (RFC 9112), None if the client closed before a
    request; :class:`BadRequest` for a malformed or oversized one."""
    budget = max_bytes
    line = b""
    for _ in range(3):  # blank lines before a request are ignored (RFC 9112, 2.2)
        line = reader.readline(budget + 1)
        if line not in (b"\r\n", b"\n"):
            break
    if not line:
        return None
    if not line.endswith(b"\n"):
        if len(line) > budget:
            raise BadRequest(414, "Request line too long")
        return None  # the client closed in the middle
    budget -= len(line)
    method, target, version = _request_line(line)
    headers = Message()
    count = 0
    while True:
        line = reader.readline(budget + 1)
        if not line.endswith(b"\n"):
            if len(line) > budget:
                raise BadRequest(431, "Request header fields too large")
            return None
        budget -= len(line)
        if line in (b"\r\n", b"\n"):
            break
        count += 1
        if count > max_headers:
            raise BadRequest(431, "Too many headers")
        name, value = _header(line)
        headers[name] = value
    hosts = headers.get_all("Host") or []
    if len(hosts) > 1:
        raise BadRequest(400, "More than one Host header")
    if version >= (1, 1) and not hosts:
        raise BadRequest(400, "Missing Host header")
    return RequestHead(method, target, version, headers)


def _request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    words = line.rstrip(b"\r\n").decode("iso-8859-1").split(" ")
    if len(words) != 3 or not all(words) or not _TOKEN.fullmatch(words[0].encode("latin-1")):
        raise BadRequest(400, "Bad request line")
    method, target, version_text = words
    version = _VERSION.fullmatch(version_text)
    if version is None:
        raise BadRequest(400, "Bad request version")
    major, minor = int(version[1]), int(version[2])
    if major != 1:
        raise BadRequest(505, "HTTP version not supported")
    if target.startswith("//"):
        target = "/" + target.lstrip("/")
    return method, target, (major, minor)


def _header(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise BadRequest(400, "Obsolete line folding in the headers")
    name, colon, value = line.rstrip(b"\r\n").partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise BadRequest(400, "Invalid header name (whitespace before the colon?)")
    value = value.strip(b" \t")
    if b"\r" in value or b"\0" in value:
        raise BadRequest(400, "Invalid character in a header value")
    return name.decode("ascii"), value.decode("iso-8859-1")


class _Connection:
    """Serves the requests of one connection while it holds a worker."""

    def __init__(self, server: HardenedHTTPServer, slot: _Slot, sock: socket.socket) -> None:
        self.server = server
        self.slot = slot
        self.sock = sock
        self.limits = server.limits
        self.reader = _Reader(sock)
        self.close = True

    def serve(self) -> bool:
        """Answer requests while the client's next one is already here; True to hand the
        connection back to the selector (kept alive with nothing buffered, or with the
        rest of an answer to write), False to close it."""
        while True:
            self.reader.deadline = self.slot.deadline
            go_on = self._one_request()
            if self.slot.pending is not None:  # the client did not take it all at once
                buffered = self.reader.buffered or _tls_pending(self.sock)
                self.slot.keep_after = go_on and not buffered  # no pipelining past a slow read
                return not self.slot.evicted
            if not go_on:
                return False
            now = time.monotonic()
            self.slot.deadline = now + self.limits.read_timeout
            self.server.limiter.waiting(self.slot, now)
            if not (self.reader.buffered or _tls_pending(self.sock)):
                return not self.slot.evicted

    def _one_request(self) -> bool:
        """Read and answer one request; whether the connection may go on."""
        received = self.reader.received
        try:
            head = read_head(self.reader, self.limits.max_header_bytes, self.limits.max_headers)
        except TimeoutError:
            if self.reader.received > received:  # part of a request came, too slowly
                log.debug("%s: request not complete within the deadline", self._client)
                self._send(text(408, "Request timed out."), head=False)
            return False
        except BadRequest as exc:
            self._send(text(exc.status, f"{exc}."), head=False)
            return False
        if head is None:
            return False  # the client closed the connection
        self.close = not head.keep_alive
        self.server.limiter.answering(self.slot)
        self._answer(head)
        return not self.close

    @property
    def _client(self) -> str:
        return self.slot.client_address[0]

    def _answer(self, request: RequestHead) -> None:
        head = request.method == "HEAD"
        path, _, query = request.target.partition("?")
        app = self.server.app
        headers = request.headers
        has_body = (
            "Transfer-Encoding" in headers or headers.get("Content-Length", "0").strip() != "0"
        )
        try:
            refusal = app.authorize(headers)
        except Exception:  # never drop a connection without an answer
            log.exception("error checking the credentials of %s %s", request.method, path)
            refusal = text(500, "Internal error.")
        if refusal is not None:
            self.close |= has_body  # an unread body cannot be skipped
            self._send(refusal, head)
            return
        route = app.route(request.method, path)
        body = b""
        if route.reads_body:
            read = self._read_body(request, min(route.max_body, self.limits.max_body))
            if isinstance(read, Response):
                self.close = True
                self._send(read, head)
                return
            body = read
        elif has_body:
            self.close = True
        try:
            response = route.handler(Request(request.method, path, headers, body, query))
        except Exception:  # never drop a connection without an answer
            log.exception("error answering %s %s", request.method, path)
            self.close = True
            response = text(500, "Internal error.")
        self._send(response, head)

    def _read_body(self, request: RequestHead, limit: int) -> bytes | Response:
        """The request body, or the answer refusing it.  ``100 Continue`` is sent only
        once the credentials and the announced size have passed."""
        headers = request.headers
        if "Transfer-Encoding" in headers:
            return text(411, "Send a Content-Length.")
        lengths = {value.strip() for value in headers.get_all("Content-Length") or ["0"]}
        if len(lengths) > 1:
            return text(400, "Conflicting Content-Length headers.")
        length = lengths.pop()
        if not (length.isascii() and length.isdigit()):
            return text(400, "Invalid Content-Length.")
        size = int(length)
        if size > limit:
            return text(413, f"Request body too large (at most {limit} bytes).")
        if size == 0:
            return b""
        expect = headers.get("Expect", "").strip().lower()
        if expect == "100-continue" and request.version >= (1, 1):
            try:
                self.sock.settimeout(max(self.reader.deadline - time.monotonic(), 0.01))
                self.sock.sendall(_CONTINUE)
            except OSError:
                return text(408, "Request body not complete within the deadline.")
        try:
            body = self.reader.read(size)
        except TimeoutError:
            return text(408, "Request body not complete within the deadline.")
        if len(body) < size:
            return text(400, "Request body shorter than its Content-Length.")
        return body

    def _send(self, response: Response, head: bool) -> None:
        if response.status >= 400 and response.status not in _KEEP_OPEN:
            self.close = True
        status = HTTPStatus(response.status)
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Server: {_SERVER}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Type: {response.content_type}",
        ]
        if response.status != 304:  # a 304's length would be that of the page it stands for
            lines.append(f"Content-Length: {response.length}")
        for name, value in {**self.server.app.headers, **response.headers}.items():
            lines.append(f"{name}: {value}")
        if self.close:
            lines.append("Connection: close")
        start = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        parts: tuple[bytes, ...] = (start,)
        if not head:
            # A small answer leaves in one packet; a large one is sent from its own buffer.
            first, *rest = response.parts
            small = len(first) <= _JOIN_BELOW
            parts = (start + first, *rest) if small else (start, first, *rest)
        views = collections.deque(memoryview(part) for part in parts if part)
        try:
            self.sock.settimeout(0.0)
            if send_some(self.sock, views):
                return
        except OSError as exc:  # the client went away, or was evicted
            log.debug("%s: connection ended while answering: %s", self._client, exc)
            self.close = True
            return
        # The rest goes out from the selector as the client takes it, within the deadline.
        now = time.monotonic()
        slot = self.slot
        slot.pending = views
        slot.deadline = now + self.limits.write_timeout
        slot.writing = True
        slot.waiting_since = now


def _came(slot: _Slot) -> float:
    """When the bytes of the request ``slot`` waits with began to come."""
    return slot.readable_since or 0.0


def _dispatch_order(slot: _Slot) -> tuple[bool, float]:
    """The parked are sorted by this and taken from the end: complete heads the oldest
    first, before incomplete ones the newest first."""
    return (slot.complete, -_came(slot) if slot.complete else _came(slot))


def send_some(sock: socket.socket, views: collections.deque[memoryview]) -> bool:
    """Send from ``views`` (in slices of their own buffers) what a non-blocking socket
    takes now; True once all is sent.  OSError if the connection is gone."""
    while views:
        view = views[0]
        try:
            sent = sock.send(view[:_SEND_SLICE])
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        if sent >= len(view):
            views.popleft()
        else:
            views[0] = view[sent:]
    return True


def _tls_pending(sock: socket.socket) -> int:
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


class HardenedHTTPServer(socketserver.TCPServer):
    """Accepts connections (TLS when ``ssl_context`` is set); serves them with a bounded
    number of worker threads."""

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
        self.limiter = ConnectionLimiter(limits.max_connections, limits.workers, limits.stall_grace)
        self._stopping = False
        self._serving = False
        self._stopped = threading.Event()
        self._returned: collections.deque[_Slot] = collections.deque()
        self._parked: list[_Slot] = []
        """Connections with bytes to read that wait for a worker; the selector adds them, and
        it and the workers ending a request take them (under ``_parked_lock``)."""
        self._parked_lock = threading.Lock()
        self._order = itertools.count()  # ties between equal deadlines, in the heap
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().__init__(address, None)  # type: ignore[arg-type]

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections and hold them, without a thread, until they have bytes to
        read (or their deadline passes); then serve each in a worker until its answer
        is written."""
        self._serving = True
        self.socket.setblocking(False)  # accept everything queued in one go
        deadlines: list[tuple[float, int, _Slot]] = []
        with selectors.DefaultSelector() as room:
            room.register(self.socket, selectors.EVENT_READ)
            room.register(self._wake_r, selectors.EVENT_READ)
            try:
                while not self._stopping:
                    timeout = poll_interval
                    if self._parked:  # a stalled writer may become takeable
                        timeout = min(timeout, self.limits.stall_grace / 2)
                    if deadlines:
                        timeout = min(timeout, max(deadlines[0][0] - time.monotonic(), 0.0))
                    for key, _ in room.select(timeout):
                        if key.fileobj is self.socket:
                            self._accept_all(room, deadlines)
                        elif key.fileobj is self._wake_r:
                            with contextlib.suppress(OSError):
                                self._wake_r.recv(4096)
                        elif key.data.pending is not None:
                            self._write_more(room, deadlines, key.data)
                        else:
                            room.unregister(key.fileobj)
                            self._ready(key.data)
                    self._take_back(room, deadlines)
                    self._dispatch_parked()
                    self._expire(room, deadlines)
            finally:
                for key in list(room.get_map().values()):
                    if key.fileobj not in (self.socket, self._wake_r):
                        self.shutdown_request(key.fileobj)  # type: ignore[arg-type]
                with self._parked_lock:
                    left = [*self._parked, *self._returned]
                for slot in left:
                    self.shutdown_request(slot.sock)
                self._stopped.set()

    def shutdown(self) -> None:
        self._stopping = True
        self._wake()
        if self._serving:
            self._stopped.wait()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

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
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.limits.send_buffer is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer)
            slot.deadline = slot.accepted + self.limits.read_timeout
            room.register(sock, selectors.EVENT_READ, slot)
            heapq.heappush(deadlines, (slot.deadline, next(self._order), slot))

    def _ready(self, slot: _Slot) -> None:
        """``slot`` has bytes to read: a worker for it, or a wait for one."""
        if slot.evicted:  # made room for a newer connection while it waited
            self.shutdown_request(slot.sock)
            return
        if slot.readable_since is None:
            slot.readable_since = time.monotonic()
        slot.complete = self._head_complete(slot)
        if self.limiter.take_worker(slot):
            # A bare thread: threading.Thread.start() waits for the thread to run, which
            # in a burst of connections would make each one wait for a context switch.
            _thread.start_new_thread(self._serve, (slot,))
        else:
            with self._parked_lock:
                self._parked.append(slot)

    def _dispatch_parked(self) -> None:
        """Free workers for waiting connections: those whose request head is all there
        first, in the order they came (first come, first served), then those still
        coming, the newest first (a slow sender that has trickled for long goes last)."""
        if not self._parked:
            return
        with self._parked_lock:
            waiting = list(self._parked)
        for slot in waiting:  # without the lock: a worker ending may take one meanwhile
            slot.complete = slot.complete or self._head_complete(slot)
        with self._parked_lock:
            gone = [s for s in self._parked if s.evicted]
            for slot in gone:
                self._parked.remove(slot)
            self._parked.sort(key=_dispatch_order)
            while self._parked and self.limiter.take_worker(self._parked[-1]):
                _thread.start_new_thread(self._serve, (self._parked.pop(),))
        for slot in gone:
            self.shutdown_request(slot.sock)

    def _next_parked(self, done: _Slot) -> _Slot | None:
        """The connection that has waited longest with its request head all there, given
        the worker ``done`` had; None if there is none (then the worker is released).

        A worker ending a request takes the next one itself: under load the workers go
        from connection to connection without a thread started per request or a turn of
        the selector in between, in the order the requests came."""
        taken: _Slot | None = None
        if self._parked and not self._stopping:
            with self._parked_lock:
                ready = [s for s in self._parked if s.complete and not s.evicted]
                if ready:
                    taken = min(ready, key=_came)
                    self._parked.remove(taken)
        if taken is None:
            self.limiter.release_worker(done)
            return None
        passed = self.limiter.pass_worker(done, taken)
        if passed:
            return taken
        if passed is None:  # this thread's worker was taken from it: ``taken`` waits on
            with self._parked_lock:
                self._parked.append(taken)
            self._wake()
            return None
        self.shutdown_request(taken.sock)  # evicted meanwhile, no longer counted
        return None

    def _head_complete(self, slot: _Slot) -> bool:
        """Whether the request head has all come, seen without reading it (a plain
        connection; under TLS the bytes cannot be seen, and count as complete)."""
        if self.ssl_context is not None:
            return True
        try:
            data = slot.sock.recv(_PEEK, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return True  # the worker will find out what is wrong
        return not data or b"\r\n\r\n" in data or b"\n\n" in data

    def _take_back(self, room: selectors.BaseSelector, deadlines: list) -> None:
        """Kept-alive connections whose worker is done: wait in the selector again."""
        while self._returned:
            slot = self._returned.popleft()
            if slot.evicted or self._stopping:
                self.limiter.release(slot)
                self.shutdown_request(slot.sock)
                continue
            event = selectors.EVENT_READ if slot.pending is None else selectors.EVENT_WRITE
            room.register(slot.sock, event, slot)
            heapq.heappush(deadlines, (slot.deadline, next(self._order), slot))

    def _write_more(self, room: selectors.BaseSelector, deadlines: list, slot: _Slot) -> None:
        """The client can take more of its answer: send it; once all is sent, wait for
        the next request (or close)."""
        assert slot.pending is not None
        left = sum(len(view) for view in slot.pending)
        try:
            done = send_some(slot.sock, slot.pending)
        except OSError as exc:
            log.debug("%s: connection ended while answering: %s", slot.client_address[0], exc)
            done, slot.keep_after = True, False
        now = time.monotonic()
        if not done:
            if sum(len(view) for view in slot.pending) < left:
                slot.waiting_since = now  # it took something: not stalled
            return
        slot.pending, slot.writing = None, False
        if slot.keep_after and not slot.evicted and not self._stopping:
            slot.deadline = now + self.limits.read_timeout
            slot.waiting_since = now
            room.modify(slot.sock, selectors.EVENT_READ, slot)
            heapq.heappush(deadlines, (slot.deadline, next(self._order), slot))
            return
        room.unregister(slot.sock)
        self.limiter.release(slot)
        self.shutdown_request(slot.sock)

    def _expire(self, room: selectors.BaseSelector, deadlines: list) -> None:
        """Close the connections that sent nothing, or did not take their answer,
        before their deadline."""
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            deadline, _, slot = heapq.heappop(deadlines)
            if deadline != slot.deadline:
                continue  # an older request's deadline
            with self._parked_lock:
                parked = slot in self._parked
                if parked:
                    self._parked.remove(slot)
            if not parked:
                try:
                    room.unregister(slot.sock)
                except (KeyError, ValueError):
                    continue  # in a worker: it keeps its own deadline
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

    def _serve(self, slot: _Slot) -> None:
        """Serve ``slot``, then, while connections wait for a worker, the one that has
        waited longest, in this same thread; end when none waits."""
        following: _Slot | None = slot
        while following is not None:
            following = self._serve_one(following)

    def _serve_one(self, slot: _Slot) -> _Slot | None:
        """Serve ``slot``; the connection this worker goes on with, if one waits."""
        keep = False
        following: _Slot | None = None
        try:
            if self.ssl_context is None or slot.tls or self._handshake(slot):
                keep = _Connection(self, slot, slot.sock).serve()
        except (OSError, ssl.SSLError) as exc:  # the client went away, or spoke no TLS
            log.debug("connection from %s ended: %s", slot.client_address[0], exc)
        except Exception:
            log.exception("error serving a connection from %s", slot.client_address[0])
        finally:
            following = self._next_parked(slot)
            if keep and not self._stopping:
                self._returned.append(slot)
            else:
                self.limiter.release(slot)
                self.shutdown_request(slot.sock)
            if keep or following is None:
                self._wake()  # a connection to take back, or a free worker
        return following

    def _handshake(self, slot: _Slot) -> bool:
        """The TLS handshake within the request deadline; plain HTTP gets a plain 400."""
        sock = slot.sock
        sock.settimeout(max(slot.deadline - time.monotonic(), 0.01))
        first = sock.recv(1, socket.MSG_PEEK)
        if not first:
            return False
        if first[0] != _TLS_HANDSHAKE and first.isalpha():
            self._plain_to_tls(sock)
            return False
        conn = self.ssl_context.wrap_socket(  # type: ignore[union-attr]
            sock, server_side=True, do_handshake_on_connect=False
        )
        slot.sock = conn  # eviction must reach the socket that now owns the descriptor
        conn.settimeout(max(slot.deadline - time.monotonic(), 0.01))
        conn.do_handshake()  # bounded as a whole by the timeout
        slot.tls = True
        return True

    def _plain_to_tls(self, sock: socket.socket) -> None:
        log.debug("plain HTTP on the TLS port from %s", sock.getpeername()[0])
        sock.settimeout(0.05)
        with contextlib.suppress(OSError):  # read what came, so that closing does not reset
            sock.recv(self.limits.max_header_bytes)
        sock.settimeout(1.0)
        with contextlib.suppress(OSError):
            sock.sendall(_PLAIN_TO_TLS)
