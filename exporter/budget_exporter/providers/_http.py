"""The HTTP client every HTTP-based provider uses (``ProviderContext.http_client()``).

``requests`` with a counting urllib3 :class:`~urllib3.util.Retry`: every attempt is counted
in ``budget_source_api_requests_total``, bounded in time (a watchdog) and in size.  The
rules: docs/how-it-works.md and docs/security.md#what-a-poll-may-cost.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from ipaddress import ip_address
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from budget_exporter import __version__
from budget_exporter.core.errors import SourceError
from budget_exporter.core.messages import excerpt, shorten
from budget_exporter.core.model import RequestStatus
from budget_exporter.core.redaction import redactor

NEVER_RETRIED_5XX = frozenset({501, 505, 506, 508, 510, 511})
"""5xx answers a retry of the same request cannot change: 501 Not Implemented,
505 HTTP Version Not Supported, 506 Variant Also Negotiates, 508 Loop Detected,
510 Not Extended and 511 Network Authentication Required (a captive portal or
proxy wants credentials).  They fail the poll at once."""
RETRY_STATUSES = frozenset(
    {429, *(code for code in range(500, 600) if code not in NEVER_RETRIED_5XX)}
)
"""429 and every other 5xx (500, 502-504, 507, 509, Cloudflare's 520-530, Anthropic's
529 "overloaded", ...): retried with exponential backoff, honouring ``Retry-After``."""
USER_AGENT = f"budget-exporter/{__version__}"

DEFAULT_MAX_RESPONSE_SIZE = 8 * 2**20
"""Bytes an answer may hold once decompressed, unless a source sets ``max_response_size``.
Billing answers are small; anything larger is a misconfigured URL or a broken server."""
MAX_DECOMPRESSION_RATIO = 100
"""A compressed answer past 1 MiB may expand at most this many times (JSON gzips ~10-20x)."""
JSON_BYTES_PER_ITEM = 16
"""A JSON answer may hold one item (value, array element or object member) per this many
bytes of ``max_response_size``: 8 MiB allows 524,288 items, some 50 MB of Python objects."""
_RATIO_CHECKED_FROM = 2**20


def status_of_response(code: int) -> RequestStatus:
    if code == 429:
        return "throttled"
    if code >= 500:
        return "server_error"
    if code >= 400:
        return "client_error"
    return "ok"


def _causes(error: BaseException | None) -> list[BaseException]:
    """``error`` and what caused it, outermost first (requests wraps urllib3 wraps OSError)."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = getattr(error, "reason", None) or error.__cause__ or error.__context__
        if not isinstance(error, BaseException):
            error = None
    return chain


def status_of_error(error: BaseException | None) -> RequestStatus:
    for cause in _causes(error):
        if isinstance(cause, NewConnectionError):  # a subclass of ConnectTimeoutError
            return "network"
        if isinstance(
            cause, ReadTimeoutError | ConnectTimeoutError | requests.Timeout | TimeoutError
        ):
            return "timeout"
    return "network"


def root_cause(error: BaseException) -> str:
    """The innermost readable reason of a requests/urllib3 error."""
    innermost = _causes(error)[-1]
    return str(innermost) or type(innermost).__name__


class CountingRetry(Retry):
    """urllib3 ``Retry`` that reports retried attempts and caps ``Retry-After``."""

    def __init__(
        self,
        *args: Any,
        on_retry: Callable[[RequestStatus], None] | None = None,
        max_retry_after: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_retry = on_retry
        self.max_retry_after = max_retry_after

    def new(self, **kwargs: Any) -> CountingRetry:
        retry = super().new(**kwargs)
        retry.on_retry = self.on_retry
        retry.max_retry_after = self.max_retry_after
        return retry

    def increment(
        self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None
    ):  # type: ignore[no-untyped-def,override]
        # super() raises MaxRetryError when exhausted; the caller then counts
        # the final outcome, so only attempts that will be retried count here.
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.on_retry is not None:
            status = status_of_response(response.status) if response is not None else None
            if status is None and _attempt_expired():
                status = "timeout"
            self.on_retry(status or status_of_error(error))
        return retry

    def get_retry_after(self, response):  # type: ignore[no-untyped-def]
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.max_retry_after)


class _Watchdog:
    """One thread for every attempt deadline: a heap of due times under a condition.

    Arming and disarming cost a heap push and a flag; the thread sleeps until
    the earliest live deadline and then calls its ``expire`` outside the lock.
    However many attempts are in flight, the process has one watchdog thread.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _Armed]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float, expire: Callable[[_Armed], None]) -> _Armed:
        armed = _Armed(expire)
        with self._wakeup:
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), armed))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="http-deadline-watchdog", daemon=True
                )
                self._thread.start()
            if self._due[0][2] is armed:
                self._wakeup.notify()
        return armed

    def pending(self) -> int:
        """Deadlines armed and not yet cancelled nor expired."""
        with self._wakeup:
            return sum(1 for _, _, armed in self._due if not armed.cancelled)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while self._due and self._due[0][2].cancelled:
                    heapq.heappop(self._due)  # disarmed: drop lazily
                if not self._due:
                    self._wakeup.wait()
                    continue
                when, _, armed = self._due[0]
                left = when - time.monotonic()
                if left > 0:
                    self._wakeup.wait(left)
                    continue
                heapq.heappop(self._due)
                armed.cancelled = True
            armed.expire(armed)


class _Armed:
    __slots__ = ("cancelled", "expire")

    def __init__(self, expire: Callable[[_Armed], None]) -> None:
        self.expire = expire
        self.cancelled = False


_WATCHDOG = _Watchdog()


class _AttemptDeadline:
    """Closes the socket of an attempt that has not finished within ``seconds``.

    urllib3's timeouts bound each socket operation; a server sending one byte
    at a time never trips them.  Each attempt (urllib3 retries included) arms
    this deadline when it sends its request; the caller disarms it once the
    whole body is in.  All deadlines share one watchdog thread.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._armed: _Armed | None = None
        self._lock = threading.Lock()

    def arm(self, connection: HTTPConnection) -> None:
        with self._lock:
            if self._armed is not None:
                self._armed.cancelled = True
            self.expired = False
            self._armed = _WATCHDOG.watch(self.seconds, partial(self._expire, connection))

    def disarm(self) -> None:
        with self._lock:
            if self._armed is not None:
                self._armed.cancelled = True
                self._armed = None

    def _expire(self, connection: HTTPConnection, armed: _Armed) -> None:
        with self._lock:
            if self._armed is not armed:
                return  # disarmed, or re-armed for a retry, while the watchdog fired
            self._armed = None
            self.expired = True
            sock = connection.sock
        if sock is not None:
            # the plain socket's shutdown, also under TLS: the blocked read sees EOF at once
            with suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current = threading.local()


def _attempt_expired() -> bool:
    deadline: _AttemptDeadline | None = getattr(_current, "deadline", None)
    return deadline is not None and deadline.expired


@contextmanager
def _deadline_per_attempt(seconds: float) -> Iterator[_AttemptDeadline]:
    deadline = _AttemptDeadline(seconds)
    _current.deadline = deadline
    try:
        yield deadline
    finally:
        deadline.disarm()
        _current.deadline = None


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        deadline: _AttemptDeadline | None = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.arm(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    request = _WatchedHTTPConnection.request  # type: ignore[assignment]


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections arm the current attempt deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


class HttpStatusError(SourceError):
    """The upstream answered with a non-2xx status after all retries."""

    def __init__(self, message: str, status: int, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        """The answer's body (capped at 64 KiB), for providers whose APIs explain errors there."""


class HttpClient:
    """A ``requests`` session with retries, timeouts and request accounting."""

    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        record: Callable[[RequestStatus], None],
        max_retry_after: float = 300.0,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        self.timeout = timeout
        self.max_response_size = max_response_size
        self._record = record
        retry = CountingRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            allowed_methods=None,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff,
            backoff_max=max(backoff * 32, 1.0),
            respect_retry_after_header=True,
            raise_on_status=False,
            on_retry=record,
            max_retry_after=max_retry_after,
        )
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = _WatchedAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send one request (with retries); raise :class:`SourceError` unless 2xx.

        Each attempt must finish within ``timeout`` (connecting, the headers and
        the whole body: a server trickling bytes cannot hold a poll), and the
        answer must fit the caps described in the module's docstring.
        Redirects are not followed.
        """
        kwargs.setdefault("timeout", self.timeout)
        where = describe_url(url)
        with _deadline_per_attempt(self.timeout) as deadline:
            try:
                kwargs.setdefault("allow_redirects", False)  # credentials never follow a redirect
                response = self.session.request(method, url, stream=True, **kwargs)
                body = _read_body(response, self.max_response_size)
                if deadline.expired:  # the watchdog cut a body without a length short
                    raise _TooSlow
            except _TooLarge as exc:
                self._record(status_of_response(response.status_code))
                raise SourceError(f"{method} {where} {exc}") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, _TooSlow) as exc:
                # urllib3's own errors come from reading the streamed body ourselves
                status = "timeout" if deadline.expired else status_of_error(exc)
                self._record(status)
                if status == "timeout":
                    raise SourceError(
                        f"{method} {where} timed out: no complete answer within {self.timeout:g}s"
                    ) from None
                raise SourceError(
                    f"{method} {where} failed: {redactor(shorten(root_cause(exc)))}"
                ) from None
        response._content = body  # what .json() and .text read (requests' own cache)
        self._record(status_of_response(response.status_code))
        if response.is_redirect or 300 <= response.status_code < 400:
            target = describe_url(urljoin(url, response.headers.get("Location", "")))
            raise HttpStatusError(
                f"{method} {where} answered HTTP {response.status_code}, a redirect to {target}: "
                "not followed (credentials are sent only to the configured URL)",
                response.status_code,
            )
        if not response.ok:
            raise HttpStatusError(
                f"{method} {where} answered HTTP {response.status_code} {response.reason or ''}".rstrip()
                + _detail(response),
                response.status_code,
                body[:65536],
            )
        return response

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """:meth:`request` and decode the JSON body."""
        response = self.request(method, url, **kwargs)
        max_items = max(self.max_response_size // JSON_BYTES_PER_ITEM, 1)
        if json_items(response.content) > max_items:
            raise SourceError(
                f"{method} {describe_url(url)} answered JSON of more than {max_items} items "
                f"(one per {JSON_BYTES_PER_ITEM} bytes of max_response_size)"
            )
        try:
            return response.json()
        except RecursionError:
            raise SourceError(
                f"{method} {describe_url(url)} answered JSON nested too deeply"
            ) from None
        except (ValueError, json.JSONDecodeError):
            ctype = response.headers.get("Content-Type", "no content type")
            raise SourceError(
                f"{method} {describe_url(url)} did not answer JSON ({ctype})"
            ) from None


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_items(body: bytes) -> int:
    """An upper bound of the values in a JSON document, counted without parsing it:
    every value but the first of a container follows a comma (strings are skipped)."""
    skeleton = _JSON_STRING.sub(b"", body)
    return skeleton.count(b",") + skeleton.count(b"[") + skeleton.count(b"{") + 1


class _TooSlow(Exception):
    pass


class _TooLarge(Exception):
    pass


def _read_body(response: requests.Response, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := response.raw.read1(65536, decode_content=True):  # what has arrived
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise _TooLarge(f"answered more than {format_size(max_bytes)} (max_response_size)")
            wire = response.raw.tell()
            if size > _RATIO_CHECKED_FROM and size > MAX_DECOMPRESSION_RATIO * max(wire, 1):
                raise _TooLarge(
                    f"answered a compressed body expanding more than {MAX_DECOMPRESSION_RATIO}x"
                )
    finally:
        response.close()
    return b"".join(chunks)


def format_size(size: int) -> str:
    """``8 MiB``, ``512 KiB`` or ``100 bytes``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def describe_url(url: str) -> str:
    """Scheme, host and path of ``url``: never its query string or user-info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (127.0.0.0/8, ``::1``)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def require_tls_off_loopback(url: str) -> None:
    """Raise :class:`ValueError` when ``url`` is plain http to a host other than loopback.

    Credentials travel with every request, so an endpoint override may drop TLS
    only for a local fake or proxy.
    """
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("must use https (plain http only to a loopback address)")


def _detail(response: requests.Response) -> str:
    """A short, redacted excerpt of an error body (APIs explain 4xx there)."""
    try:
        body = response.text.strip()
    except Exception:
        return ""
    if not body:
        return ""
    return ": " + redactor(excerpt(body, 200))
