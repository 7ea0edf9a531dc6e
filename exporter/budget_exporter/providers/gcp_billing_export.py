"""``gcp_billing_export``: Google Cloud spend from the BigQuery billing export.

Reads the standard usage cost table with one ``jobs.query`` per period and poll (net cost
of the invoice month, or of the invoice months of a window of whole months, or, for a week
or a custom range of days, of the usage in its UTC days; partitions of those days only,
``maximum_bytes_billed`` as a cap).  Emits::

    budget_source_cost_amount{period, currency, sub_account_id, service_name}
    budget_source_data_timestamp_seconds      MAX(export_time) of the invoice month
    budget_source_query_processed_bytes       bytes the last query scanned

Invoice months, time zones and what a query costs: docs/providers-gcp.md#gcp_billing_export.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import ConfigPath, Duration
from budget_exporter.core.model import Period, PollResult, Sample, SpendLine, Window
from budget_exporter.core.money import parse_amount
from budget_exporter.core.periods import month_aligned, supports
from budget_exporter.providers import _extras, _gcp, register
from budget_exporter.providers.base import Provider, SourceConfig

log = logging.getLogger(__name__)

API = "BigQuery"
FRESHNESS = "budget_source_data_timestamp_seconds"
FRESHNESS_DOC = (
    "Unix time of the newest cost data the source returned "
    "(BigQuery billing export: MAX(export_time) of the invoice month)."
)
BYTES = "budget_source_query_processed_bytes"
BYTES_DOC = "Bytes the source's last billing query processed (BigQuery bills by bytes scanned)."
_PROJECT = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,61}[a-z0-9]$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_TABLE = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")
_PARTITION_MARGIN = timedelta(days=1)
SDK_MODULES = (*_gcp.BASE_MODULES, "google.cloud.bigquery")


def split_table(value: str) -> tuple[str, str, str]:
    """``project.dataset.table`` (backticks and ``project:dataset.table`` accepted)."""
    text = value.strip().strip("`")
    if ":" in text and text.count(".") == 1:
        text = text.replace(":", ".", 1)  # legacy project:dataset.table
    parts = text.rsplit(".", 2)
    if len(parts) != 3:
        raise ValueError("must be project.dataset.table")
    project, dataset, table = parts
    if not _PROJECT.match(project):
        raise ValueError(f"{project!r} is not a valid project ID")
    if not _DATASET.match(dataset):
        raise ValueError(f"{dataset!r} is not a valid dataset name")
    if not _TABLE.match(table):
        raise ValueError(f"{table!r} is not a valid table name")
    return project, dataset, table


class GcpBillingExportConfig(SourceConfig):
    table: str
    """``project.dataset.gcp_billing_export_v1_XXXXXX_XXXXXX_XXXXXX`` (standard usage cost)."""
    project: str | None = None
    """Project that runs (and pays for) the query job; default: the table's project."""
    location: str | None = None
    """Location of the export dataset (``US``, ``EU``, ``europe-west1``...); optional."""
    time_zone: str = "America/Los_Angeles"
    include_credits: bool = True
    partition_filter: bool = True
    """Turn off only for a view or copy without ``_PARTITIONTIME``."""
    maximum_bytes_billed: int | None = Field(default=10 * 1024**3, ge=10 * 1024**2)
    query_timeout: Duration = timedelta(minutes=5)
    credentials_file: ConfigPath | None = None
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+[^\s?#]*$")
    """BigQuery API endpoint override: https, or plain http to a loopback address only."""

    @field_validator("endpoint_url")
    @classmethod
    def _tls_endpoint(cls, value: str | None) -> str | None:
        return _gcp.endpoint_url(value)

    @model_validator(mode="after")
    def _sdk_installed(self) -> GcpBillingExportConfig:
        problem = _extras.missing(self.provider, _gcp.EXTRA, *SDK_MODULES)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("table")
    @classmethod
    def _valid_table(cls, value: str) -> str:
        return ".".join(split_table(value))

    @field_validator("project")
    @classmethod
    def _valid_project(cls, value: str | None) -> str | None:
        if value is not None and not _PROJECT.match(value):
            raise ValueError("is not a valid project ID")
        return value

    @field_validator("time_zone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @property
    def job_project(self) -> str:
        return self.project or split_table(self.table)[0]


def invoice_month(window: Window) -> str:
    """``YYYYMM`` of the invoice month matching the (UTC) monthly window."""
    middle = window.start + (window.end - window.start) / 2
    return f"{middle.year:04d}{middle.month:02d}"


def invoice_months(window: Window) -> tuple[str, str]:
    """``YYYYMM`` of the first and last invoice months of a window of whole months."""
    last = window.end - timedelta(days=1)
    return f"{window.start.year:04d}{window.start.month:02d}", f"{last.year:04d}{last.month:02d}"


def partition_start(month: str, zone: str) -> datetime:
    """First export-day partition that can hold rows of invoice month ``month``.

    The invoice month starts at local midnight in ``zone``; partitions are UTC
    days; one day of margin covers rows exported just around the boundary.
    """
    local = datetime(int(month[:4]), int(month[4:]), 1, tzinfo=ZoneInfo(zone))
    utc_day = local.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return utc_day - _PARTITION_MARGIN


Span = str
"""What a query selects: ``month`` (one invoice month), ``months`` (a range of invoice
months) or ``usage`` (usage from ``@usage_start`` up to ``@usage_end``)."""
_SPANS = {
    "month": "invoice.month = @invoice_month",
    "months": "invoice.month BETWEEN @first_month AND @last_month",
    "usage": "usage_start_time >= @usage_start AND usage_start_time < @usage_end",
}


def build_query(config: GcpBillingExportConfig, span: Span = "month") -> str:
    credits = (
        "\n    + SUM(IFNULL((SELECT SUM(CAST(c.amount AS NUMERIC)) FROM UNNEST(credits) AS c), 0))"
        if config.include_credits
        else ""
    )
    partition = "\n  AND _PARTITIONTIME >= @partition_start" if config.partition_filter else ""
    return (
        "SELECT\n"
        "  project.id AS project_id,\n"
        "  service.description AS service_description,\n"
        "  currency,\n"
        f"  SUM(CAST(cost AS NUMERIC)){credits} AS net_cost,\n"
        "  MAX(export_time) AS last_export_time\n"
        f"FROM `{config.table}`\n"
        f"WHERE {_SPANS[span]}{partition}\n"
        "GROUP BY project_id, service_description, currency"
    )


def parse_rows(rows: Any, period: Period) -> PollResult:
    """The query's rows as spend lines, with the newest ``export_time`` as a freshness sample."""
    lines: list[SpendLine] = []
    newest: datetime | None = None
    for index, row in enumerate(rows):
        currency = row.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
            raise SourceError(f"row {index} of the billing export has no valid currency")
        cost = row.get("net_cost")
        amount = Decimal(0) if cost is None else parse_amount(cost, f"row {index} net_cost")
        dims = {
            "sub_account_id": row.get("project_id") or "",
            "service_name": row.get("service_description") or "",
        }
        lines.append(SpendLine.of(period, amount, currency, dims))
        exported = row.get("last_export_time")
        if isinstance(exported, datetime) and (newest is None or exported > newest):
            newest = exported
    samples = () if newest is None else (Sample.of(FRESHNESS, FRESHNESS_DOC, newest.timestamp()),)
    return PollResult(lines=tuple(lines), samples=samples)


_HINTS: dict[int | str, str] = {
    "bytesBilledLimitExceeded": "raise maximum_bytes_billed, or check that the partition filter "
    "is on",
    "rateLimitExceeded": "still rate-limited after global.retries retries",
    "quotaExceeded": "a BigQuery quota of the job project is used up; see the message",
    400: "check that table is a standard usage cost export table (gcp_billing_export_v1_...); "
    "for a view without _PARTITIONTIME set partition_filter: false",
    403: "the identity needs roles/bigquery.jobUser on the job project and "
    "roles/bigquery.dataViewer on the billing export dataset",
    404: "check table (project.dataset.gcp_billing_export_v1_<BILLING_ACCOUNT_ID>) and location",
}


@register
class GcpBillingExportProvider(Provider):
    name = "gcp_billing_export"
    config_model = GcpBillingExportConfig
    default_poll_interval = timedelta(hours=4)
    max_polls_per_second = 2.0
    # The invoice month; whole invoice months (quarters, fiscal years, ranges of months);
    # any other range of whole days by usage time.  Not today alone: the export lags hours.
    supported_periods = frozenset({Period.MONTHLY, Period.ANY})

    def __init__(self, config: GcpBillingExportConfig, context: Any) -> None:
        super().__init__(config, context)
        self.log = log.getChild(context.source)
        self._client: Any = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def client(self) -> Any:
        if self._client is None:
            _extras.require(self.name, _gcp.EXTRA, *SDK_MODULES)
            from google.auth.transport.requests import AuthorizedSession
            from google.cloud import bigquery

            config: GcpBillingExportConfig = self.config
            credentials = _gcp.load_credentials(config.credentials_file)
            session = _gcp.count_requests(AuthorizedSession(credentials), self.context)
            self._client = bigquery.Client(
                project=config.job_project,
                credentials=credentials,
                _http=session,
                location=config.location,
                client_info=_gcp.client_info("bigquery"),
                client_options=_gcp.client_options(config.endpoint_url),
            )
        return self._client

    def poll(self, windows: Sequence[Window]) -> PollResult:
        now = self.context.now()
        lines: list[SpendLine] = []
        newest: float | None = None
        processed_total: int | None = None
        for window in windows:
            if not supports(self.supported_periods, window.period) or window.start >= now:
                continue  # today alone, or a custom range not begun: nothing to ask
            rows, processed = _gcp.call(
                self.context,
                lambda w=window: self.run_query(self.client(), w, now),
                api=API,
                hints=_HINTS,
            )
            parsed = parse_rows(rows, window.period)
            self.log.debug(
                "%s window: %d lines, %s bytes processed",
                window.period,
                len(parsed.lines),
                processed,
            )
            lines.extend(parsed.lines)
            for sample in parsed.samples:
                newest = sample.value if newest is None else max(newest, sample.value)
            if processed is not None:
                processed_total = (processed_total or 0) + processed
        samples = [] if newest is None else [Sample.of(FRESHNESS, FRESHNESS_DOC, newest)]
        if processed_total is not None:
            samples.append(Sample.of(BYTES, BYTES_DOC, processed_total))
        return PollResult(lines=tuple(lines), samples=tuple(samples))

    def parameters(self, window: Window, now: datetime) -> tuple[Span, list[Any]]:
        """The span and the query parameters selecting ``window``'s spend."""
        from google.cloud import bigquery

        config: GcpBillingExportConfig = self.config
        if window.period == Period.MONTHLY:
            month = invoice_month(window)
            span: Span = "month"
            found = [bigquery.ScalarQueryParameter("invoice_month", "STRING", month)]
            first = partition_start(month, config.time_zone)
        elif month_aligned(window):
            month, last = invoice_months(window)
            span = "months"
            found = [
                bigquery.ScalarQueryParameter("first_month", "STRING", month),
                bigquery.ScalarQueryParameter("last_month", "STRING", last),
            ]
            first = partition_start(month, config.time_zone)
        else:
            span = "usage"
            found = [
                bigquery.ScalarQueryParameter("usage_start", "TIMESTAMP", window.start),
                bigquery.ScalarQueryParameter("usage_end", "TIMESTAMP", min(window.end, now)),
            ]
            first = window.start - _PARTITION_MARGIN
        if config.partition_filter:
            found.append(bigquery.ScalarQueryParameter("partition_start", "TIMESTAMP", first))
        return span, found

    def run_query(self, client: Any, window: Window, now: datetime) -> tuple[list[Any], int | None]:
        """Run ``window``'s query and read every page; raises the library's exceptions."""
        from google.cloud import bigquery

        config: GcpBillingExportConfig = self.config
        span, parameters = self.parameters(window, now)
        job_config = bigquery.QueryJobConfig(
            query_parameters=parameters,
            labels={"app": "budget-exporter", "source": self.context.source},
            use_query_cache=True,
        )
        if config.maximum_bytes_billed is not None:
            job_config.maximum_bytes_billed = config.maximum_bytes_billed
        try:
            result = client.query_and_wait(
                build_query(config, span),
                job_config=job_config,
                location=config.location,
                project=config.job_project,
                api_timeout=self.context.timeout.total_seconds(),
                wait_timeout=config.query_timeout.total_seconds(),
                retry=None,
                job_retry=None,
            )
            rows = list(result)
        except TimeoutError:
            raise SourceError(
                f"the billing query did not finish within query_timeout "
                f"({config.query_timeout.total_seconds():g}s)"
            ) from None
        processed = getattr(result, "total_bytes_processed", None)
        return rows, int(processed) if processed is not None else None
