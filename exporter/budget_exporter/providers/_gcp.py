"""Plumbing shared by the GCP providers: credentials, request counting, retries and errors.

Reads nothing itself; :func:`call` wraps each Google API call of ``gcp_billing_export``
and ``gcp_budgets``, and :class:`CountingAdapter` counts every request they send in
``budget_source_api_requests_total``.  Why it is built this way:
docs/providers-gcp.md#how-the-gcp-providers-talk-to-google.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from budget_exporter.core.errors import SourceError
from budget_exporter.core.messages import excerpt, first_line, shorten
from budget_exporter.providers._http import (
    RETRY_STATUSES,
    USER_AGENT,
    require_tls_off_loopback,
    status_of_error,
    status_of_response,
)
from budget_exporter.providers.base import ProviderContext

log = logging.getLogger(__name__)

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
BILLING_ACCOUNT_ID = re.compile(r"^[0-9A-Fa-f]{6}-[0-9A-Fa-f]{6}-[0-9A-Fa-f]{6}$")
RETRY_CODES = RETRY_STATUSES  # the same rule as every other HTTP API
RETRY_REASONS = frozenset(
    {"rateLimitExceeded", "backendError", "internalError", "RATE_LIMIT_EXCEEDED"}
)
_THROTTLE_MARKERS = (b"rateLimitExceeded", b"RATE_LIMIT_EXCEEDED", b"RESOURCE_EXHAUSTED")
_REST_PREFIX = re.compile(r"^(?:GET|POST|PUT|PATCH|DELETE) \S+: ")
_MAX_MESSAGE = 400

T = TypeVar("T")


EXTRA = "gcp"
BASE_MODULES = ("google.auth", "google.api_core")
"""Modules every GCP provider needs; each provider adds its own client library."""


def endpoint_url(value: str | None) -> str | None:
    """An endpoint override: https, or plain http to a loopback address only.

    Every request carries a bearer token, which plain http would send in clear.
    """
    if value is not None:
        require_tls_off_loopback(value)
    return value


def load_credentials(credentials_file: str | None, quota_project: str | None = None) -> Any:
    """A service-account key from ``credentials_file``, else Application Default Credentials.

    ``quota_project`` (sent as ``x-goog-user-project``) is the project charged
    for API quota; user credentials from gcloud need one for the billing APIs.
    """
    credentials = _load_credentials(credentials_file)
    if quota_project:
        if not hasattr(credentials, "with_quota_project"):
            raise SourceError("these credentials cannot carry a quota_project")
        credentials = credentials.with_quota_project(quota_project)
    return credentials


def _load_credentials(credentials_file: str | None) -> Any:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
    from google.oauth2 import service_account

    if credentials_file:
        try:
            with open(credentials_file, encoding="utf-8") as handle:
                info = json.load(handle)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SourceError(
                f"cannot read credentials_file {credentials_file}: {reason}"
            ) from None
        except ValueError:
            raise SourceError(f"credentials_file {credentials_file} is not JSON") from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise SourceError(
                f"credentials_file {credentials_file} is not a service-account key "
                '("type": "service_account"); point GOOGLE_APPLICATION_CREDENTIALS at other '
                "credential files"
            )
        try:
            return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        except Exception as exc:
            # google-auth names missing fields or a bad key format; never echo key material.
            detail = (
                shorten(first_line(str(exc)), _MAX_MESSAGE) if isinstance(exc, ValueError) else ""
            )
            if not detail or "PRIVATE KEY" in detail or "\\n" in detail:
                detail = type(exc).__name__
            raise SourceError(
                f"credentials_file {credentials_file} is not a usable service-account key: {detail}"
            ) from None
    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError:
        raise SourceError(
            "no Google credentials found: set credentials_file to a service-account key, or "
            "provide Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, Workload "
            "Identity on GKE, or `gcloud auth application-default login`)"
        ) from None
    except GoogleAuthError as exc:
        raise SourceError(
            f"Application Default Credentials failed: {type(exc).__name__}: "
            f"{shorten(first_line(str(exc)), _MAX_MESSAGE)}"
        ) from None
    return credentials


def client_info(library: str) -> Any:
    """A ``ClientInfo`` that names budget-exporter in the User-Agent."""
    if library == "bigquery":
        from google.api_core.client_info import ClientInfo
    else:
        from google.api_core.gapic_v1.client_info import ClientInfo
    return ClientInfo(user_agent=USER_AGENT)


class CountingAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that reports the outcome of every request it sends."""

    def __init__(self, record: Callable[[str], None]) -> None:
        super().__init__(max_retries=0)
        self._record = record

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().send(request, *args, **kwargs)
        except Exception as exc:
            self._record(status_of_error(exc))
            raise
        self._record(_status(response))
        return response


def _status(response: requests.Response) -> str:
    status = status_of_response(response.status_code)
    if response.status_code == 403:
        # BigQuery and the GAPIC APIs signal rate limits with 403 and a reason.
        try:
            head = response.content[:4096]
        except Exception:
            return status
        if any(marker in head for marker in _THROTTLE_MARKERS):
            return "throttled"
    return status


def count_requests(session: requests.Session, context: ProviderContext) -> requests.Session:
    """Mount a :class:`CountingAdapter` on ``session`` for http and https."""
    session.headers["User-Agent"] = USER_AGENT  # the REST transports leave requests' default
    adapter = CountingAdapter(context.record_request)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def transport_session(client: Any) -> requests.Session:
    """The ``AuthorizedSession`` a GAPIC client's REST transport sends through."""
    session = getattr(client.transport, "_session", None)
    if not isinstance(session, requests.Session):
        raise SourceError(
            f"{type(client).__name__} has no REST session to count requests on; "
            "this google-cloud-billing version is not supported"
        )
    return session


def client_options(endpoint_url: str | None) -> Any:
    from google.api_core.client_options import ClientOptions

    if endpoint_url:
        return ClientOptions(api_endpoint=endpoint_url.rstrip("/"))
    return ClientOptions()


# -- retries -----------------------------------------------------------------------


def call(
    context: ProviderContext,
    fn: Callable[[], T],
    *,
    api: str,
    hints: Mapping[int | str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()`` with the source's retry policy; any failure becomes a SourceError."""
    attempt = 0
    while True:
        try:
            return fn()
        except SourceError:
            raise
        except Exception as exc:
            if attempt >= context.retries or not is_transient(exc):
                raise source_error(exc, api, hints or {}) from None
            delay = context.retry_backoff.total_seconds() * (2**attempt)
            after = _retry_after(exc)
            if after is not None:
                delay = max(delay, after)
            delay = min(delay, context.max_retry_after.total_seconds())
            log.getChild(context.source).info(
                "%s: transient error (%s), retrying in %.1fs", api, _kind(exc), delay
            )
            sleep(delay)
            attempt += 1


def is_transient(exc: BaseException) -> bool:
    from google.api_core import exceptions as core
    from google.auth import exceptions as auth

    if isinstance(exc, core.GoogleAPICallError):
        return exc.code in RETRY_CODES or bool(_reasons(exc) & RETRY_REASONS)
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(exc, auth.TransportError):
        return True
    if isinstance(exc, auth.RefreshError):
        return bool(getattr(exc, "retryable", False))
    return False


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _kind(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"HTTP {code}" if isinstance(code, int) else type(exc).__name__


# -- errors ------------------------------------------------------------------------


def source_error(exc: BaseException, api: str, hints: Mapping[int | str, str]) -> SourceError:
    """A clear, secret-free SourceError for any failure of a Google API call."""
    from google.api_core import exceptions as core
    from google.auth import exceptions as auth

    if isinstance(exc, core.GoogleAPICallError):
        code = exc.code
        status = _status_name(exc)
        text = f"{api} answered HTTP {code}" if code else f"{api} failed"
        if status:
            text += f" {status}"
        message = api_message(exc)
        if message:
            text += f": {message}"
        reasons = _reason_list(exc)
        hint = next((hints[r] for r in reasons if r in hints), None)
        if hint is None and isinstance(code, int):
            hint = hints.get(code)
        if code == 403 and set(reasons) & {"SERVICE_DISABLED", "accessNotConfigured"}:
            hint = "enable the API in the project that makes the calls (see the message above)"
        if hint:
            text += f" ({hint})"
        return SourceError(text)
    if isinstance(exc, auth.RefreshError):
        return SourceError(
            f"{api}: Google rejected the credentials ({shorten(_refresh_reason(exc), _MAX_MESSAGE)}); "
            "check credentials_file or the Application Default Credentials"
        )
    if isinstance(exc, auth.DefaultCredentialsError):
        return SourceError(
            f"{api}: no usable Google credentials ({shorten(first_line(str(exc)), _MAX_MESSAGE)})"
        )
    if isinstance(exc, requests.Timeout | TimeoutError):
        return SourceError(f"{api} timed out")
    if isinstance(exc, requests.ConnectionError | auth.TransportError):
        return SourceError(
            f"{api} could not be reached: {shorten(first_line(str(exc)), _MAX_MESSAGE)}"
        )
    return SourceError(
        f"{api} failed: {type(exc).__name__}: {shorten(first_line(str(exc)), _MAX_MESSAGE)}"
    )


def api_message(exc: Any) -> str:
    """Google's own explanation, without the ``METHOD URL:`` prefix the clients add."""
    message = str(getattr(exc, "message", "") or "")
    message = _REST_PREFIX.sub("", message)
    return excerpt(message, _MAX_MESSAGE)


def _payload(exc: Any) -> dict[str, Any]:
    """The ``error`` object of the answer's JSON body, if any."""
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _status_name(exc: Any) -> str:
    """``PERMISSION_DENIED`` (GAPIC) or ``accessDenied`` (BigQuery), if the answer names one."""
    status = _payload(exc).get("status")
    if isinstance(status, str) and status:
        return status
    reasons = _reason_list(exc)
    return reasons[0] if reasons else ""


def _reasons(exc: Any) -> set[str]:
    return set(_reason_list(exc))


def _reason_list(exc: Any) -> list[str]:
    """Reasons from ``errors[].reason`` (BigQuery) and ``ErrorInfo`` details (GAPIC)."""
    payload = _payload(exc)
    details = payload.get("details") if isinstance(payload.get("details"), list) else []
    items = [*(getattr(exc, "errors", None) or ()), *details]
    found: list[str] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("reason"), str) and item["reason"]:
            found.append(item["reason"])
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason and reason not in found:
        found.append(reason)
    return found


def _refresh_reason(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], str):
        return args[0]
    return type(exc).__name__


def billing_account_id(value: str) -> str:
    """``012345-6789AB-CDEF01`` from itself or ``billingAccounts/012345-6789AB-CDEF01``."""
    value = value.strip().removeprefix("billingAccounts/")
    if not BILLING_ACCOUNT_ID.match(value):
        raise ValueError("must look like 012345-6789AB-CDEF01")
    return value.upper()
