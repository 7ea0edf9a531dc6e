"""``azure_cost_management``: Azure spend from the Cost Management Query API.

Reads ``POST {base_url}/{scope}/providers/Microsoft.CostManagement/query`` (``MonthToDate``
for the month, ``Custom`` with the window's days for any other period; no time
granularity, every ``nextLink`` page), with a token from Microsoft Entra ID
(``azure-identity``, the ``azure`` extra).  Emits spend lines::

    budget_source_cost_amount{period, currency,
        service_name, x_resource_group_name, sub_account_id, sub_account_name, region_id}

(the dimensions of ``group_by``, at most two).  Why the query skips the Azure SDK, and how
rows are read: docs/providers-azure.md.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from urllib3.util.retry import Retry

from budget_exporter.core.errors import SourceError
from budget_exporter.core.messages import first_line, shorten
from budget_exporter.core.model import Period, PollResult, SpendLine, Window
from budget_exporter.core.money import parse_amount
from budget_exporter.core.periods import supports
from budget_exporter.core.redaction import redactor
from budget_exporter.providers import _extras, register
from budget_exporter.providers._http import (
    CountingRetry,
    HttpStatusError,
    RequestStatus,
    require_tls_off_loopback,
    status_of_response,
)
from budget_exporter.providers.base import Provider, SourceConfig, label_value

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://management.azure.com"
DEFAULT_API_VERSION = "2023-11-01"

GroupBy = Literal[
    "ServiceName", "ResourceGroup", "SubscriptionId", "SubscriptionName", "ResourceLocation"
]

DIMENSIONS: Mapping[str, str] = {
    "ServiceName": "service_name",
    "ResourceGroup": "x_resource_group_name",
    "SubscriptionId": "sub_account_id",
    "SubscriptionName": "sub_account_name",
    "ResourceLocation": "region_id",
}
"""Cost Management grouping dimension -> FOCUS-style label name."""

_COLUMN_ALIASES: Mapping[str, tuple[str, ...]] = {
    "ResourceGroup": ("ResourceGroup", "ResourceGroupName"),
}
_COST_COLUMNS = ("Cost", "PreTaxCost", "CostUSD", "PreTaxCostUSD")
_CURRENCY_COLUMNS = ("Currency", "BillingCurrency", "BillingCurrencyCode")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")

_SCOPES = (
    ("subscription", re.compile(r"^subscriptions/[^/\s]+$", re.IGNORECASE)),
    ("resource group", re.compile(r"^subscriptions/[^/\s]+/resourceGroups/[^/\s]+$", re.I)),
    (
        "billing account",
        re.compile(r"^providers/Microsoft\.Billing/billingAccounts/[^/\s]+$", re.IGNORECASE),
    ),
)
_TENANT = re.compile(r"^[A-Za-z0-9.-]+$")
EXTRA = "azure"
SDK_MODULES = ("azure.identity",)


_RETRY_AFTER_HEADER = re.compile(
    r"^x-ms-ratelimit-microsoft\.(?:costmanagement-[a-z0-9-]+|consumption)-retry-after$",
    re.IGNORECASE,
)
"""Cost Management's throttling headers (``…-qpu-``, ``…-entity-``, ``…-tenant-``,
``…-clienttype-retry-after``; the older Consumption one too), in seconds."""


class AzureCostManagementConfig(SourceConfig):
    scope: str
    """``subscriptions/<id>``, ``subscriptions/<id>/resourceGroups/<name>`` or
    ``providers/Microsoft.Billing/billingAccounts/<id>`` (a leading ``/`` is fine)."""
    cost_type: Literal["ActualCost", "AmortizedCost"] = "ActualCost"
    group_by: tuple[GroupBy, ...] = ("ServiceName",)
    cost_column: Literal["Cost", "PreTaxCost", "CostUSD"] = "Cost"
    """The column the query sums; ``CostUSD`` reports USD whatever the billing currency."""

    auth: Literal["client_secret", "workload_identity", "managed_identity"] = "client_secret"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token_file: str | None = None
    """Workload identity: the federated token file (default ``AZURE_FEDERATED_TOKEN_FILE``)."""
    authority: str | None = None
    """Microsoft Entra ID authority host, e.g. ``login.microsoftonline.us``, or an https URL."""

    base_url: str = DEFAULT_BASE_URL
    """Azure Resource Manager endpoint (sovereign clouds, proxies, tests)."""
    token_scope: str | None = None
    """OAuth scope of the token; default ``<base_url origin>/.default``."""
    api_version: str = Field(default=DEFAULT_API_VERSION, pattern=r"^\d{4}-\d{2}-\d{2}(-preview)?$")
    max_pages: int = Field(default=50, ge=1, le=1000)

    secret_fields: ClassVar[frozenset[str]] = frozenset({"client_secret"})

    @field_validator("scope")
    @classmethod
    def _valid_scope(cls, value: str) -> str:
        scope = value.strip().strip("/")
        if not any(pattern.match(scope) for _, pattern in _SCOPES):
            raise ValueError(
                "must be subscriptions/<subscription id>, "
                "subscriptions/<subscription id>/resourceGroups/<name> or "
                "providers/Microsoft.Billing/billingAccounts/<billing account id>"
            )
        return scope

    @field_validator("group_by")
    @classmethod
    def _valid_group_by(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > 2:
            raise ValueError("Cost Management groups by at most two dimensions")
        if len(set(value)) != len(value):
            raise ValueError("lists a dimension twice")
        return value

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: str) -> str:
        text = value.strip()
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must not carry a query, fragment or user-info")
        require_tls_off_loopback(text)
        return text.rstrip("/")

    @field_validator("authority")
    @classmethod
    def _valid_authority(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().rstrip("/")
        parts = urlsplit(text if "://" in text else f"https://{text}")
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be a host name or an https URL (Microsoft Entra ID needs TLS)")
        return text

    @field_validator("tenant_id")
    @classmethod
    def _valid_tenant(cls, value: str | None) -> str | None:
        if value is not None and not _TENANT.match(value):
            raise ValueError("must be a tenant (directory) ID or domain name")
        return value

    @model_validator(mode="after")
    def _credentials_fit_auth(self) -> AzureCostManagementConfig:
        if self.auth == "client_secret":
            missing = [
                name
                for name in ("tenant_id", "client_id", "client_secret")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(
                    f"auth client_secret needs {', '.join(missing)} "
                    "(client_secret may come from client_secret_file)"
                )
        elif self.client_secret is not None:
            raise ValueError(
                f"client_secret is only used with auth: client_secret, not {self.auth}"
            )
        if self.token_file is not None and self.auth != "workload_identity":
            raise ValueError("token_file is only used with auth: workload_identity")
        if self.auth == "managed_identity" and (self.tenant_id or self.authority):
            raise ValueError("managed_identity uses neither tenant_id nor authority")
        problem = _extras.missing(self.provider, EXTRA, *SDK_MODULES)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def scope_kind(self) -> str:
        return next(kind for kind, pattern in _SCOPES if pattern.match(self.scope))

    @property
    def query_url(self) -> str:
        path = quote(self.scope, safe="/:@!$&'()*+,;=-._~")
        return f"{self.base_url}/{path}/providers/Microsoft.CostManagement/query"

    @property
    def oauth_scope(self) -> str:
        if self.token_scope:
            return self.token_scope
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}/.default"

    def query_body(self, days: tuple[date, date] | None = None) -> dict[str, Any]:
        """The Cost Management ``QueryDefinition`` sent with every page: month to date, or
        from the first to the last of ``days`` (both counted)."""
        when: dict[str, Any] = {"timeframe": "MonthToDate"}
        if days is not None:
            when = {
                "timeframe": "Custom",
                "timePeriod": {
                    "from": f"{days[0].isoformat()}T00:00:00Z",
                    "to": f"{days[1].isoformat()}T23:59:59Z",
                },
            }
        return {
            "type": self.cost_type,
            **when,
            "dataset": {
                "granularity": "None",
                "aggregation": {"totalCost": {"name": self.cost_column, "function": "Sum"}},
                "grouping": [{"type": "Dimension", "name": name} for name in self.group_by],
            },
        }


class _CostManagementRetry(CountingRetry):
    """The shared retry policy, also waiting as long as Cost Management's own headers ask.

    A throttled query answers 429 with ``x-ms-ratelimit-microsoft.costmanagement-
    <quota>-retry-after: <seconds>`` (one per exhausted quota) and sometimes the
    standard ``Retry-After``; the longest of them wins, capped like any
    ``Retry-After`` by ``global.max_retry_after``.
    """

    @classmethod
    def adopt(cls, retry: CountingRetry) -> _CostManagementRetry:
        adopted = cls.__new__(cls)
        adopted.__dict__.update(retry.__dict__)
        return adopted

    def get_retry_after(self, response):  # type: ignore[no-untyped-def]
        waits: list[float] = []
        try:
            standard = Retry.get_retry_after(self, response)
        except Exception:  # an unparsable Retry-After: fall back to the others
            standard = None
        if standard is not None:
            waits.append(standard)
        for name, value in response.headers.items():
            if _RETRY_AFTER_HEADER.match(name):
                try:
                    waits.append(max(float(value), 0.0))
                except ValueError:
                    continue
        if not waits:
            return None
        return min(max(waits), self.max_retry_after)


class _TokenRequestCounter:
    """azure-core hooks that count the token requests azure-identity sends."""

    def __init__(self, record: Callable[[RequestStatus], None]) -> None:
        self.record = record
        self.sent = 0
        self.answered = 0

    def on_request(self, request: Any) -> None:
        self.sent += 1

    def on_response(self, response: Any) -> None:
        self.answered += 1
        self.record(status_of_response(response.http_response.status_code))

    @property
    def unanswered(self) -> int:
        return self.sent - self.answered

    def settle(self, error: BaseException | None) -> None:
        """Count attempts that got no answer (connection failures, timeouts)."""
        unanswered = self.unanswered
        if unanswered > 0:
            kind = (
                "timeout" if error is not None and "Timeout" in type(error).__name__ else "network"
            )
            for _ in range(unanswered):
                self.record(kind)
        self.sent = self.answered = 0


def _reason(text: str) -> str:
    """The first line of an Azure error, without its trace and correlation IDs."""
    text = first_line(text)
    for marker in (" Trace ID:", " Correlation ID:"):
        text = text.split(marker, 1)[0]
    return shorten(text.removeprefix("Authentication failed: "))


def parse_query_result(
    document: Any, group_by: Sequence[str], cost_column: str = "Cost"
) -> PollResult:
    """One Cost Management query page as monthly spend lines, one per row.

    Rows are positional: each value is found through ``properties.columns``.
    """
    if not isinstance(document, dict):
        raise SourceError("Cost Management answer is not a JSON object")
    properties = document.get("properties")
    if properties is None:
        return PollResult()
    if not isinstance(properties, dict):
        raise SourceError("Cost Management answer: properties is not an object")
    rows = properties.get("rows") or []
    if not rows:
        return PollResult()
    columns = properties.get("columns")
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise SourceError("Cost Management answer has rows but no columns list")
    index: dict[str, int] = {}
    for position, column in enumerate(columns):
        if isinstance(column, dict) and isinstance(column.get("name"), str):
            index.setdefault(column["name"].lower(), position)

    def find(names: Sequence[str]) -> tuple[str, int] | None:
        for name in names:
            if name.lower() in index:
                return name, index[name.lower()]
        return None

    cost = find([cost_column, *(c for c in _COST_COLUMNS if c != cost_column)])
    if cost is None:
        names = ", ".join(str(c.get("name")) for c in columns if isinstance(c, dict))
        raise SourceError(f"Cost Management answer has no cost column (columns: {names})")
    cost_name, cost_at = cost
    currency_at = None if cost_name.endswith("USD") else find(_CURRENCY_COLUMNS)
    if currency_at is None and not cost_name.endswith("USD"):
        raise SourceError("Cost Management answer has no Currency column")
    dims_at: dict[str, int] = {}
    for name in group_by:
        found = find(_COLUMN_ALIASES.get(name, (name,)))
        if found is None:
            raise SourceError(f"Cost Management answer has no {name} column for group_by")
        dims_at[DIMENSIONS[name]] = found[1]

    lines: list[SpendLine] = []
    for number, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise SourceError(f"Cost Management row {number} does not match the columns")
        amount = parse_amount(row[cost_at], f"Cost Management row {number} {cost_name}")
        if currency_at is None:
            currency = "USD"
        else:
            value = row[currency_at[1]]
            if not isinstance(value, str) or not _CURRENCY.match(value.strip()):
                raise SourceError(f"Cost Management row {number} has no 3-letter currency")
            currency = value.strip().upper()
        dims = {
            label: label_value(row[at], f"Cost Management row {number}, column {at}")
            for label, at in dims_at.items()
        }
        lines.append(SpendLine.of(Period.MONTHLY, amount, currency, dims))
    return PollResult(lines=tuple(lines))


@register
class AzureCostManagementProvider(Provider):
    name = "azure_cost_management"
    config_model = AzureCostManagementConfig
    default_poll_interval = timedelta(hours=4)
    # Cost Management quotas are tight (about 100 calls per 5 minutes per scope).
    max_polls_per_second = 1.0
    """Cost Management refreshes a few times a day (data lags 8-24 h) and its
    query quotas are small and shared by the whole tenant."""
    # The month to date, or any other range of whole days (``Custom``); not today alone:
    # Cost Management lags 8-24 h.
    supported_periods = frozenset({Period.MONTHLY, Period.ANY})

    def __init__(self, config: AzureCostManagementConfig, context: Any) -> None:
        super().__init__(config, context)
        self.log = log.getChild(context.source)
        self.http = context.http_client()
        for adapter in self.http.session.adapters.values():
            adapter.max_retries = _CostManagementRetry.adopt(adapter.max_retries)
        self._tokens = _TokenRequestCounter(context.record_request)
        self._credential: Any = None
        self._unavailable_error: type[Exception] = Exception
        self._auth_error: type[Exception] = Exception
        self._azure_error: type[Exception] = Exception

    def close(self) -> None:
        self.http.close()
        credential, self._credential = self._credential, None
        if credential is not None:
            try:
                credential.close()
            except Exception as exc:  # closing must never fail a reload
                self.log.debug("closing the Azure credential failed: %s", exc)

    # -- credentials -------------------------------------------------------------

    def credential(self) -> Any:
        if self._credential is None:
            self._credential = self._build_credential()
        return self._credential

    def _build_credential(self) -> Any:
        config: AzureCostManagementConfig = self.config
        _extras.require(self.name, EXTRA, *SDK_MODULES, "azure.core.exceptions")
        from azure import identity
        from azure.core import exceptions as core

        timeout = self.context.timeout.total_seconds()
        pipeline: dict[str, Any] = {
            "raw_request_hook": self._tokens.on_request,
            "raw_response_hook": self._tokens.on_response,
            "retry_total": self.context.retries,
            "retry_backoff_factor": self.context.retry_backoff.total_seconds(),
            "connection_timeout": timeout,
            "read_timeout": timeout,
        }
        self._unavailable_error = identity.CredentialUnavailableError
        self._auth_error = core.ClientAuthenticationError
        self._azure_error = core.AzureError
        if config.authority:
            # A configured authority is trusted as given: skip MSAL's instance
            # discovery, which would ask login.microsoftonline.com about it.
            pipeline["authority"] = config.authority
            pipeline["disable_instance_discovery"] = True
        try:
            if config.auth == "client_secret":
                return identity.ClientSecretCredential(
                    config.tenant_id or "",
                    config.client_id or "",
                    config.client_secret or "",
                    **pipeline,
                )
            if config.auth == "workload_identity":
                return identity.WorkloadIdentityCredential(
                    tenant_id=config.tenant_id,
                    client_id=config.client_id,
                    token_file_path=config.token_file,
                    **pipeline,
                )
            return identity.ManagedIdentityCredential(client_id=config.client_id, **pipeline)
        except ValueError as exc:
            raise SourceError(
                f"cannot set up Azure {config.auth.replace('_', ' ')} credentials: "
                + _reason(redactor(str(exc)))
            ) from None

    def token(self) -> str:
        config: AzureCostManagementConfig = self.config
        credential = self.credential()
        error: BaseException | None = None
        try:
            return str(credential.get_token(config.oauth_scope).token)
        except self._unavailable_error as exc:
            error = exc
            raise SourceError(
                f"Azure {config.auth.replace('_', ' ')} is not available here: "
                + _reason(redactor(str(exc)))
            ) from None
        except self._auth_error as exc:
            error = exc
            if self._tokens.unanswered and not self._tokens.answered:
                raise SourceError(
                    "could not reach Microsoft Entra ID"
                    + (f" at {config.authority}" if config.authority else "")
                    + ": "
                    + _reason(redactor(str(exc)))
                ) from None
            raise SourceError(
                f"Microsoft Entra ID refused the {config.auth.replace('_', ' ')} credentials "
                f"(check tenant_id, client_id and the secret or token): "
                + _reason(redactor(str(exc)))
            ) from None
        except (self._azure_error, ValueError) as exc:
            error = exc
            raise SourceError(
                "getting an Azure access token failed: " + _reason(redactor(str(exc)))
            ) from None
        finally:
            self._tokens.settle(error)

    # -- polling -------------------------------------------------------------------

    def poll(self, windows: Sequence[Window]) -> PollResult:
        config: AzureCostManagementConfig = self.config
        now = self.context.now()
        lines: list[SpendLine] = []
        for window in windows:
            if not supports(self.supported_periods, window.period) or window.start >= now:
                continue  # today alone, or a custom range not begun: nothing to ask
            days = None
            if window.period != Period.MONTHLY:
                last = min(window.end - timedelta(days=1), now).date()
                days = (window.start.date(), last)
            totals: dict[tuple[str, tuple[tuple[str, str], ...]], Decimal] = {}
            for document in self.pages(self.token(), config.query_body(days)):
                page = parse_query_result(document, config.group_by, config.cost_column)
                for line in page.lines:  # the same dimensions on two pages are one line
                    key = (line.currency, line.dimensions)
                    totals[key] = totals.get(key, Decimal(0)) + line.amount
            lines.extend(
                SpendLine(window.period, amount, currency, dims)
                for (currency, dims), amount in totals.items()
            )
        return PollResult(lines=tuple(lines))

    def pages(self, token: str, body: dict[str, Any] | None = None) -> Iterator[Any]:
        """Each page of the query answer; ``nextLink`` pages take the same body."""
        config: AzureCostManagementConfig = self.config
        body = config.query_body() if body is None else body
        headers = {"Authorization": f"Bearer {token}"}
        url = config.query_url
        params: dict[str, str] | None = {"api-version": config.api_version}
        for _ in range(config.max_pages):
            response = self.post(url, params, body, headers)
            if response.status_code == 204 or not response.content.strip():
                return
            if response.status_code != 200:
                raise SourceError(
                    f"Cost Management answered HTTP {response.status_code} instead of a result"
                )
            try:
                document = json.loads(response.content, parse_float=Decimal)
            except ValueError:
                raise SourceError("Cost Management did not answer JSON") from None
            yield document
            link = (
                (document.get("properties") or {}).get("nextLink")
                if isinstance(document, dict)
                else None
            )
            if not link:
                return
            url, params = self.next_url(str(link)), None
        raise SourceError(f"more than max_pages ({config.max_pages}) pages of results")

    def next_url(self, link: str) -> str:
        """``nextLink`` as sent (its ``$skiptoken`` untouched), kept on ``base_url``'s host.

        The bearer token only ever goes to ``base_url``: a link to another host
        (the real ARM endpoint, seen through a proxy or a test double) is
        followed with the same path and query on ``base_url`` instead.
        """
        config: AzureCostManagementConfig = self.config
        base = urlsplit(config.base_url)
        parts = urlsplit(link)
        query = parts.query
        if not any(key == "api-version" for key, _ in parse_qsl(query, keep_blank_values=True)):
            query = f"{query}&" if query else ""
            query += urlencode({"api-version": config.api_version})
        if (parts.scheme, parts.netloc) == (base.scheme, base.netloc):
            return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        prefix = base.path.rstrip("/")
        path = parts.path if parts.path.startswith(prefix + "/") else prefix + parts.path
        return urlunsplit((base.scheme, base.netloc, path, query, ""))

    def post(
        self, url: str, params: dict[str, str] | None, body: Any, headers: dict[str, str]
    ) -> Any:
        config: AzureCostManagementConfig = self.config
        try:
            return self.http.request("POST", url, params=params, json=body, headers=headers)
        except HttpStatusError as exc:
            raise SourceError(f"{_explain(exc.status, str(exc), config)} ({exc})") from None


_ERROR_CODE = re.compile(r'"code"\s*:\s*"([^"]+)"')


def _explain(status: int, detail: str, config: AzureCostManagementConfig) -> str:
    """What an error answer means for the user, from its status and ARM error code."""
    where = f"{config.scope_kind} scope {config.scope}"
    match = _ERROR_CODE.search(detail)
    code = match.group(1) if match else ""
    if status == 403 or code in ("AuthorizationFailed", "RBACAccessDenied"):
        # Cost Management answers a missing role with 401 RBACAccessDenied as
        # often as with ARM's 403 AuthorizationFailed.
        if config.scope_kind == "billing account":
            role = (
                "a billing role on the billing account: Billing account reader (MCA), "
                "Enterprise administrator (read only) for EA"
            )
        else:
            role = "the Cost Management Reader role (or Reader) on it"
        return (
            f"the identity may not read costs at {where} (HTTP {status} {code}".rstrip()
            + f"): it needs Microsoft.CostManagement/query/read, i.e. {role}"
        )
    if status == 401:
        return (
            "Cost Management rejected the access token (HTTP 401): check that tenant_id is "
            "the tenant that owns the scope and that token_scope matches base_url"
        )
    if status == 404:
        return f"{where} was not found (HTTP 404): check scope and that the identity can see it"
    if code == "AccountCostDisabled":
        return (
            f"cost data is disabled for this account at {where} (HTTP 400 AccountCostDisabled): "
            "an EA enrolment administrator must enable the 'AO view charges' / "
            "'DA view charges' policy"
        )
    if status == 400:
        return f"Cost Management refused the query for {where} (HTTP 400)"
    if status == 429:
        return (
            "Cost Management kept throttling the query (HTTP 429) after the retries: its "
            "quotas are small and shared by the tenant; lengthen poll_interval or query "
            "fewer scopes"
        )
    return f"Cost Management answered HTTP {status} for {where}"
