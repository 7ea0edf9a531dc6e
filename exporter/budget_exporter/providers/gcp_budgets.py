"""``gcp_budgets``: budgets kept in Cloud Billing, as limits for budget-exporter budgets.

Reads the Cloud Billing Budget API (every budget of the account, every page) and the Cloud
Billing API (the account; with ``projects``, its project billing info).  Emits::

    budget_source_billing_account_info{billing_account_id, billing_account_name, currency}
    budget_source_project_billing_enabled{sub_account_id}       per configured project

and one provider budget per GCP budget with a calendar period or a custom range of days,
for ``limit_from``.  How a
GCP budget maps onto one: docs/providers-gcp.md#gcp_budgets.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from pydantic import Field, field_validator, model_validator

from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import ConfigPath
from budget_exporter.core.model import Period, PollResult, ProviderBudget, Sample, Window
from budget_exporter.providers import _extras, _gcp, register
from budget_exporter.providers.base import Provider, SourceConfig

log = logging.getLogger(__name__)

BUDGET_API = "Cloud Billing Budget API"
BILLING_API = "Cloud Billing API"
MAX_PAGES = 1000
ACCOUNT_INFO = "budget_source_billing_account_info"
ACCOUNT_INFO_DOC = "The Cloud Billing account a source reads; the value is always 1."
PROJECT_BILLED = "budget_source_project_billing_enabled"
PROJECT_BILLED_DOC = "1 if a configured project is billed to the source's billing account, else 0."
_PROJECT_ID = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,61}[a-z0-9]$")
_ENDPOINT = r"^https?://[^\s/?#]+[^\s?#]*$"
SDK_MODULES = (*_gcp.BASE_MODULES, "google.cloud.billing_v1", "google.cloud.billing.budgets_v1")


class GcpBudgetsConfig(SourceConfig):
    billing_account_id: str
    """``012345-6789AB-CDEF01`` (``billingAccounts/`` prefix accepted)."""
    projects: tuple[str, ...] = ()
    """Project IDs that should be billed to this account (checked on every poll)."""
    credentials_file: ConfigPath | None = None
    quota_project: str | None = None
    """Project charged for API quota; needed with user credentials (gcloud ADC)."""
    endpoint_url: str | None = Field(default=None, pattern=_ENDPOINT)
    """Budget API endpoint override (default https://billingbudgets.googleapis.com); plain
    http only to a loopback address."""
    billing_endpoint_url: str | None = Field(default=None, pattern=_ENDPOINT)
    """Cloud Billing API endpoint override (default https://cloudbilling.googleapis.com);
    plain http only to a loopback address."""

    @field_validator("endpoint_url", "billing_endpoint_url")
    @classmethod
    def _tls_endpoint(cls, value: str | None) -> str | None:
        return _gcp.endpoint_url(value)

    @model_validator(mode="after")
    def _sdk_installed(self) -> GcpBudgetsConfig:
        problem = _extras.missing(self.provider, _gcp.EXTRA, *SDK_MODULES)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("billing_account_id")
    @classmethod
    def _account(cls, value: str) -> str:
        return _gcp.billing_account_id(value)

    @field_validator("projects")
    @classmethod
    def _projects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(p.strip().removeprefix("projects/") for p in value)
        for project in cleaned:
            if not _PROJECT_ID.match(project):
                raise ValueError(f"{project!r} is not a valid project ID")
        return cleaned


def money(units: int, nanos: int) -> Decimal:
    """``google.type.Money`` units + nanos as an exact Decimal."""
    return Decimal(int(units)) + Decimal(int(nanos)).scaleb(-9)


def threshold_ratios(rules: Iterable[Any]) -> tuple[float | None, float | None]:
    """Warning and stop ratios from a budget's threshold rules on current spend."""
    from google.cloud.billing import budgets_v1

    current = (
        budgets_v1.ThresholdRule.Basis.BASIS_UNSPECIFIED,
        budgets_v1.ThresholdRule.Basis.CURRENT_SPEND,
    )
    ratios = sorted(
        {
            round(float(rule.threshold_percent), 6)
            for rule in rules
            if rule.spend_basis in current and 0 < rule.threshold_percent < 1
        }
    )
    if not ratios:
        return None, None
    if len(ratios) == 1:
        return ratios[0], None
    return ratios[0], ratios[-1]


def budget_period(budget: Any) -> Period | str:
    """The period of a budget (a custom date range with its days), or why it has none."""
    from google.cloud.billing import budgets_v1

    budget_filter = budget.budget_filter
    if "custom_period" in budget_filter:
        custom = budget_filter.custom_period
        if "end_date" not in custom:
            return "a custom period with no end date (all spend since its start)"
        try:
            first, last = (
                date(day.year, day.month, day.day) for day in (custom.start_date, custom.end_date)
            )
            return Period.of("custom", first_day=first, last_day=last)
        except ValueError as exc:
            return f"a custom period that is not a valid range of days ({exc})"
    periods = {
        budgets_v1.CalendarPeriod.CALENDAR_PERIOD_UNSPECIFIED: Period.MONTHLY,
        budgets_v1.CalendarPeriod.MONTH: Period.MONTHLY,
        budgets_v1.CalendarPeriod.QUARTER: Period.QUARTERLY,
        budgets_v1.CalendarPeriod.YEAR: Period.YEARLY,
    }
    return periods.get(budget_filter.calendar_period, "a calendar period it does not know")


def budget_id(budget: Any) -> str:
    return str(budget.name).rsplit("/", 1)[-1]


def budget_keys(budgets: Sequence[Any]) -> list[str]:
    """Display names where unique and non-empty, else budget IDs."""
    names = Counter(b.display_name for b in budgets if b.display_name)
    return [
        b.display_name if b.display_name and names[b.display_name] == 1 else budget_id(b)
        for b in budgets
    ]


_ACCOUNT_HINTS = {
    403: "the identity needs roles/billing.viewer (Billing Account Viewer) on the billing "
    "account: permission billing.accounts.get",
    404: "check billing_account_id",
}
_BUDGET_HINTS = {
    403: "the identity needs roles/billing.viewer (Billing Account Viewer) on the billing "
    "account: permission billing.budgets.list",
    404: "check billing_account_id",
}
_PROJECT_HINTS = {
    403: "the identity needs roles/billing.viewer (Billing Account Viewer) on the billing "
    "account: permission billing.resourceAssociations.list",
}


@register
class GcpBudgetsProvider(Provider):
    name = "gcp_budgets"
    config_model = GcpBudgetsConfig
    default_poll_interval = timedelta(hours=1)
    max_polls_per_second = 2.0
    # No spend lines, so any period is fine (a daily budget over "*" sources must not be
    # refused because of this source); provider budgets are monthly, quarterly or yearly.

    def __init__(self, config: GcpBudgetsConfig, context: Any) -> None:
        super().__init__(config, context)
        self.log = log.getChild(context.source)
        self._budgets_client: Any = None
        self._billing_client: Any = None
        self._reported: set[str] = set()

    def close(self) -> None:
        for client in (self._budgets_client, self._billing_client):
            if client is not None:
                client.transport.close()
        self._budgets_client = self._billing_client = None

    def clients(self) -> tuple[Any, Any]:
        if self._budgets_client is None or self._billing_client is None:
            _extras.require(self.name, _gcp.EXTRA, *SDK_MODULES)
            from google.cloud import billing_v1
            from google.cloud.billing import budgets_v1

            config: GcpBudgetsConfig = self.config
            credentials = _gcp.load_credentials(config.credentials_file, config.quota_project)
            budgets = budgets_v1.BudgetServiceClient(
                credentials=credentials,
                transport="rest",
                client_info=_gcp.client_info("gapic"),
                client_options=_gcp.client_options(config.endpoint_url),
            )
            billing = billing_v1.CloudBillingClient(
                credentials=credentials,
                transport="rest",
                client_info=_gcp.client_info("gapic"),
                client_options=_gcp.client_options(config.billing_endpoint_url),
            )
            for client in (budgets, billing):
                _gcp.count_requests(_gcp.transport_session(client), self.context)
            self._budgets_client, self._billing_client = budgets, billing
        return self._budgets_client, self._billing_client

    @property
    def account_name(self) -> str:
        return f"billingAccounts/{self.config.billing_account_id}"

    def poll(self, windows: Sequence[Window]) -> PollResult:
        config: GcpBudgetsConfig = self.config
        budgets_client, billing_client = self.clients()
        timeout = self.context.timeout.total_seconds()
        account = _gcp.call(
            self.context,
            lambda: billing_client.get_billing_account(
                name=self.account_name, retry=None, timeout=timeout
            ),
            api=BILLING_API,
            hints=_ACCOUNT_HINTS,
        )
        budgets = _gcp.call(
            self.context,
            lambda: self.list_budgets(budgets_client, timeout),
            api=BUDGET_API,
            hints=_BUDGET_HINTS,
        )
        samples = [
            Sample.of(
                ACCOUNT_INFO,
                ACCOUNT_INFO_DOC,
                1,
                {
                    "billing_account_id": config.billing_account_id,
                    "billing_account_name": account.display_name,
                    "currency": account.currency_code,
                },
            )
        ]
        if not account.open_:
            self.log.warning("billing account %s is closed", config.billing_account_id)
        if config.projects:
            billed = _gcp.call(
                self.context,
                lambda: self.billed_projects(billing_client, timeout),
                api=BILLING_API,
                hints=_PROJECT_HINTS,
            )
            for project in config.projects:
                on_account = project in billed
                if not on_account:
                    self.log.warning(
                        "project %s is not billed to billing account %s",
                        project,
                        config.billing_account_id,
                    )
                samples.append(
                    Sample.of(
                        PROJECT_BILLED,
                        PROJECT_BILLED_DOC,
                        1 if on_account else 0,
                        {"sub_account_id": project},
                    )
                )
        parsed = self.parse_budgets(budgets, account.currency_code)
        return replace(parsed, samples=tuple(samples))

    def list_budgets(self, client: Any, timeout: float) -> list[Any]:
        pager = client.list_budgets(
            request={"parent": self.account_name, "page_size": 100}, retry=None, timeout=timeout
        )
        return _all_items(pager, "budgets")

    def billed_projects(self, client: Any, timeout: float) -> set[str]:
        """IDs of the projects billed to the account (billing enabled)."""
        pager = client.list_project_billing_info(
            request={"name": self.account_name, "page_size": 100}, retry=None, timeout=timeout
        )
        return {
            info.project_id
            for info in _all_items(pager, "project_billing_info")
            if info.billing_enabled
        }

    def parse_budgets(self, budgets: Sequence[Any], account_currency: str) -> PollResult:
        """The budgets with a calendar period or a custom range of days as provider
        budgets; what keeps one from backing a limit is logged once."""
        found = []
        for budget, key in zip(budgets, budget_keys(budgets), strict=True):
            if key != budget.display_name and budget.display_name:
                self.report(
                    f"dup:{budget.name}",
                    "GCP budget %r shares its display name with another budget; "
                    "use its ID %r in limit_from",
                    budget.display_name,
                    key,
                )
            period = budget_period(budget)
            if not isinstance(period, Period):
                self.report(f"period:{budget.name}", "GCP budget %r has %s; skipped", key, period)
                continue
            amount = budget.amount
            if "specified_amount" in amount:
                specified = amount.specified_amount
                limit = money(specified.units, specified.nanos)
                currency = specified.currency_code or account_currency
            else:
                what = (
                    "a lastPeriodAmount limit (last period's spend, which the Budget API does "
                    "not report)"
                    if "last_period_amount" in amount
                    else "no amount"
                )
                self.report(
                    f"amount:{budget.name}",
                    "GCP budget %r has %s: it cannot back a limit_from budget; give it a "
                    "specified amount, or set limit in budget-exporter",
                    key,
                    what,
                )
                limit, currency = Decimal(0), account_currency
            if not currency:
                raise SourceError(f"GCP budget {key!r} has no currency and the account none")
            warning, stop = threshold_ratios(budget.threshold_rules)
            found.append(
                ProviderBudget(
                    key=key,
                    period=period,
                    limit=limit,
                    currency=currency.upper(),
                    warning_ratio=warning,
                    stop_ratio=stop,
                )
            )
        return PollResult(budgets=tuple(found))

    def report(self, key: str, message: str, *args: Any) -> None:
        """Log a fact about a budget once per provider instance (polls repeat hourly)."""
        if key not in self._reported:
            self._reported.add(key)
            self.log.warning(message, *args)


def _all_items(pager: Any, field: str) -> list[Any]:
    items: list[Any] = []
    for count, page in enumerate(pager.pages, start=1):
        if count > MAX_PAGES:
            raise SourceError(f"more than {MAX_PAGES} pages of {field}")
        items.extend(getattr(page, field))
    return items
