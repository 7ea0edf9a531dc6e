"""The HTTP client every HTTP-based provider uses.

``requests`` with urllib3's :class:`~urllib3.util.Retry` does the retrying
(429 and every 5xx that can succeed on a retry -- see :data:`RETRY_STATUSES` --
honouring ``Retry-After``, timeouts, connection errors, exponential
backoff).  A small :class:`Retry` subclass reports each attempt that gets
retried, so ``budget_source_api_requests_total`` counts every request the
exporter really sent, the monitor's own API bill included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from budget_exporter import __version__
from budget_exporter.errors import SourceError
from budget_exporter.redact import redactor
from budget_exporter.text import excerpt, shorten

RequestStatus = str
"""One of ``ok``, ``client_error``, ``server_error``, ``throttled``, ``timeout``, ``network``."""
REQUEST_STATUSES = ("ok", "client_error", "server_error", "throttled", "timeout", "network")
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
            self.on_retry(status or status_of_error(error))
        return retry

    def get_retry_after(self, response):  # type: ignore[no-untyped-def]
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.max_retry_after)


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
    ) -> None:
        self.timeout = timeout
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
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send one request (with retries); raise :class:`SourceError` unless 2xx.

        ``timeout`` bounds connecting and every read, and the whole body must
        arrive within it once the headers are in (a server trickling bytes
        cannot hold a poll), up to :data:`MAX_BODY_BYTES`.  Redirects are not
        followed.
        """
        kwargs.setdefault("timeout", self.timeout)
        where = describe_url(url)
        try:
            kwargs.setdefault("allow_redirects", False)  # credentials never follow a redirect
            response = self.session.request(method, url, stream=True, **kwargs)
            body = _read_body(response, time.monotonic() + self.timeout)
        except _BodyTooSlow:
            self._record("timeout")
            raise SourceError(
                f"{method} {where} timed out: the answer took longer than {self.timeout:g}s"
            ) from None
        except _BodyTooLarge:
            self._record(status_of_response(response.status_code))
            raise SourceError(
                f"{method} {where} answered more than {MAX_BODY_BYTES // 2**20} MiB"
            ) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            # urllib3's own errors come from reading the streamed body ourselves
            status = status_of_error(exc)
            self._record(status)
            if status == "timeout":
                raise SourceError(f"{method} {where} timed out after {self.timeout:g}s") from None
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
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError):
            ctype = response.headers.get("Content-Type", "no content type")
            raise SourceError(
                f"{method} {describe_url(url)} did not answer JSON ({ctype})"
            ) from None


MAX_BODY_BYTES = 64 * 2**20
"""Billing answers are small; anything larger is a misconfigured URL or a broken server."""


class _BodyTooSlow(Exception):
    pass


class _BodyTooLarge(Exception):
    pass


def _read_body(response: requests.Response, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := response.raw.read1(65536, decode_content=True):  # what has arrived
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _BodyTooLarge
            if time.monotonic() > deadline:
                raise _BodyTooSlow
    finally:
        response.close()
    return b"".join(chunks)


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
