"""The metric families of a snapshot, built from immutable budget views and source states
(``render`` turns them into bytes once per snapshot; see docs/metrics.md).  Gauges unless
marked::

    per budget {budget, currency, period, <the budget's static labels>}
        budget_limit_amount
        budget_spend_amount
        budget_billed_spend_amount
        budget_metered_spend_amount
        budget_forecast_amount
        budget_usage_ratio
        budget_forecast_ratio
        budget_warning_threshold_ratio
        budget_stop_threshold_ratio
        budget_anomaly_threshold_ratio
        budget_anomaly_min_daily_amount
        budget_anomaly_min_history_seconds
        budget_burn_rate_critical_horizon_seconds
        budget_burn_rate_warning_horizon_seconds
        budget_period_start_timestamp_seconds
        budget_period_end_timestamp_seconds
        budget_source_info{..., source, provider}                 always 1
        budget_meter_blind{..., source}                           per billed source with meters
        budget_converted_spend_amount{..., source, native_currency}         spend in
        budget_converted_spend_native_amount{..., source, native_currency}  another
        budget_unconverted_spend_amount{..., source, native_currency, reason}  currency
    per source {source, provider}
        budget_source_up
        budget_source_window_up{period}
        budget_source_last_success_timestamp_seconds
        budget_source_last_attempt_timestamp_seconds
        budget_source_poll_duration_seconds
        budget_source_poll_interval_seconds
        budget_source_data_through_timestamp_seconds
        budget_source_api_requests_total{status}                  counter
        budget_source_cost_amount{currency, period, <dimensions>} capped per source
        <a provider's own samples>{<their labels>}
    exporter
        budget_exporter_build_info{version}                       always 1
        budget_exporter_config_last_reload_successful
        budget_exporter_config_last_reload_success_timestamp_seconds
        budget_currency_mismatch_lines_total{budget, source, currency}   counter
    rendered at each scrape (holds_families)
        budget_held_amount{budget, currency}
        budget_exporter_holds_store_up{store}
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from budget_exporter import __version__
from budget_exporter.accounting.budgets import BudgetView
from budget_exporter.accounting.feeds import Feed
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.core.model import REQUEST_STATUSES, TARGET_LABELS, SpendLine
from budget_exporter.exposition.rendering import Rendered

CACHED = "Cached from the last successful poll; scrapes never call the provider."
"""Appended to the HELP of every value that comes from a poll."""
OTHER = "other"
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_FIXED_COST_LABELS = ("source", "provider", "currency", "period")
_SHARE_PREFERENCE = {"monthly": 0, "daily": 1, "quarterly": 2, "yearly": 3}
"""Which period gets the series left over when a source's cap is shared (first first)."""


@dataclass(frozen=True)
class ExporterStatus:
    """Process-level facts exported next to the budgets."""

    reload_successful: bool
    last_reload_success: float | None
    mismatches: Mapping[tuple[str, str, str], int] = field(default_factory=dict)


def label_name(name: str) -> str:
    """A valid Prometheus label name for a provider dimension."""
    clean = _INVALID_LABEL_CHARS.sub("_", name)
    if not clean or clean[0].isdigit():
        clean = "_" + clean
    if clean in TARGET_LABELS:
        return f"exported_{clean}"  # a provider's dimension must not clash with target labels
    return "dim_" + clean if clean in _FIXED_COST_LABELS or clean.startswith("__") else clean


def cap_lines(lines: Sequence[SpendLine], limit: int) -> list[SpendLine]:
    """Keep the ``limit - 1`` largest lines per currency and sum the rest into ``other``.

    Keeps the label cardinality of ``budget_source_cost_amount`` bounded while
    the total per currency stays exact.
    """
    by_currency: dict[str, list[SpendLine]] = defaultdict(list)
    for line in lines:
        by_currency[line.currency].append(line)
    out: list[SpendLine] = []
    for currency, group in by_currency.items():
        if len(group) <= limit:
            out.extend(group)
            continue
        group = sorted(group, key=lambda ln: ln.amount, reverse=True)
        keep, rest = group[: limit - 1], group[limit - 1 :]
        keys = sorted({k for ln in rest for k, _ in ln.dimensions})
        out.extend(keep)
        out.append(
            SpendLine.of(
                rest[0].period,
                sum((ln.amount for ln in rest), Decimal(0)),
                currency,
                {k: OTHER for k in keys},
            )
        )
    return out


def share_series(lines_per_period: Mapping[str, int], limit: int) -> dict[str, int]:
    """How many of a source's ``limit`` series (in one currency) each period gets.

    The periods share the cap fairly: a period with fewer lines than an even
    share keeps them all and leaves the rest to the others, which split what is
    left evenly; slots left over by the rounding go to ``monthly`` first (then
    ``daily``, ``quarterly``, ``yearly``).  A period always gets one series at
    least, so that its total is exported even when ``limit`` is smaller than the
    number of periods.
    """
    shares: dict[str, int] = {}
    left = limit
    order = sorted(lines_per_period, key=lambda p: (lines_per_period[p], p))
    for i, period in enumerate(order):
        rest = order[i:]
        fair = left // len(rest)
        if lines_per_period[period] <= fair:  # keeps all its lines
            shares[period] = lines_per_period[period]
            left -= shares[period]
            continue
        # This period and every larger one get the even share, the odd slots by preference.
        preferred = sorted(
            rest, key=lambda p: (_SHARE_PREFERENCE.get(p, len(_SHARE_PREFERENCE)), p)
        )
        odd = left - fair * len(rest)
        for rank, name in enumerate(preferred):
            shares[name] = max(fair + 1 if rank < odd else fair, 1)
        break
    return shares


def cap_source_lines(lines: Sequence[SpendLine], limit: int) -> dict[str, list[SpendLine]]:
    """A source's lines by period, at most ``limit`` series per currency across all periods.

    Each period's share (:func:`share_series`) keeps its largest lines and sums
    the rest into ``other`` (:func:`cap_lines`), so every period's total stays exact.
    """
    grouped: dict[str, dict[str, list[SpendLine]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        grouped[line.currency][str(line.period)].append(line)
    out: dict[str, list[SpendLine]] = defaultdict(list)
    for by_period in grouped.values():
        shares = share_series({p: len(group) for p, group in by_period.items()}, limit)
        for period, group in by_period.items():
            out[period].extend(cap_lines(group, shares[period]))
    return out


def _merge_duplicates(
    lines: Iterable[SpendLine],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], Decimal]:
    """Sum lines that end up with identical labels (a series must appear once)."""
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], Decimal] = defaultdict(Decimal)
    for line in lines:
        dims = tuple(sorted({label_name(k): v for k, v in line.dimensions}.items()))
        merged[(line.currency, dims)] += line.amount
    return merged


def build_families(
    budgets: Sequence[BudgetView],
    states: Sequence[SourceState],
    status: ExporterStatus,
    max_series: Mapping[str, int],
    feeds: Sequence[Feed] = (),
) -> list[Metric]:
    """Every metric family; ``max_series`` caps each state's cost series, by source name."""
    families: list[Metric] = []
    families.extend(_budget_families(budgets))
    families.append(_feeds_family(feeds))
    families.extend(_source_families(states))
    families.append(_cost_family(states, max_series))
    families.extend(_sample_families(states))
    families.extend(_exporter_families(status))
    return families


def _budget_families(budgets: Sequence[BudgetView]) -> list[Metric]:
    static = sorted({k for b in budgets for k, _ in b.labels})
    names = ["budget", "currency", "period", *static]

    def family(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=names)

    limit = family(
        "budget_limit_amount", f"Budget limit for the period, in the budget's currency. {CACHED}"
    )
    spend = family("budget_spend_amount", f"Spend so far in the current period. {CACHED}")
    billed = family(
        "budget_billed_spend_amount",
        "The part of budget_spend_amount from billing APIs (up to their data horizons); "
        f"0 when none. {CACHED}",
    )
    metered = family(
        "budget_metered_spend_amount",
        "The part of budget_spend_amount from metered sources (prometheus, after the bills' "
        f"data horizons); 0 for a budget without a meter. {CACHED}",
    )
    forecast = family(
        "budget_forecast_amount",
        "Forecast spend at the end of the period: the provider's forecast where it has one, "
        f"else a linear projection. {CACHED}",
    )
    usage = family(
        "budget_usage_ratio", f"Spend divided by limit (1 means the budget is used up). {CACHED}"
    )
    fratio = family("budget_forecast_ratio", f"Forecast divided by limit. {CACHED}")
    warning = family(
        "budget_warning_threshold_ratio", f"Usage ratio at which the budget warns. {CACHED}"
    )
    stop = family(
        "budget_stop_threshold_ratio", f"Usage ratio at which spending should stop. {CACHED}"
    )
    anomaly = family(
        "budget_anomaly_threshold_ratio",
        "Last day's spend over a typical day's at which BudgetSpendAnomaly fires.",
    )
    anomaly_floor = family(
        "budget_anomaly_min_daily_amount",
        "Smallest last day's spend for which BudgetSpendAnomaly fires.",
    )
    anomaly_history = family(
        "budget_anomaly_min_history_seconds",
        "Daily spend history needed before BudgetSpendAnomaly can fire.",
    )
    critical_horizon = family(
        "budget_burn_rate_critical_horizon_seconds",
        "BudgetBurnRateHigh is critical when the limit is this close at the current rate.",
    )
    warning_horizon = family(
        "budget_burn_rate_warning_horizon_seconds",
        "BudgetBurnRateHigh warns when the limit is this close at the current rate.",
    )
    start = family(
        "budget_period_start_timestamp_seconds", "Start of the current period (UTC), Unix time."
    )
    end = family(
        "budget_period_end_timestamp_seconds", "End of the current period (UTC), Unix time."
    )
    for b in budgets:
        extra = dict(b.labels)
        # One label set per budget, shared by its samples (add_metric would copy it for each).
        values = (b.name, b.currency, b.period, *(extra.get(k, "") for k in static))
        labels = dict(zip(names, values, strict=True))
        for metric, value in (
            (limit, float(b.limit)),
            (spend, float(b.spend)),
            (billed, float(b.billed)),
            (metered, float(b.metered)),
            (forecast, float(b.forecast)),
            (usage, b.usage_ratio),
            (fratio, b.forecast_ratio),
            (warning, b.warning_ratio),
            (stop, b.stop_ratio),
            (anomaly, b.tuning.anomaly_factor),
            (anomaly_floor, float(b.tuning.anomaly_min_daily_amount)),
            (anomaly_history, b.tuning.anomaly_min_history.total_seconds()),
            (critical_horizon, b.tuning.burn_rate_critical_horizon.total_seconds()),
            (warning_horizon, b.tuning.burn_rate_warning_horizon.total_seconds()),
            (start, b.window.start.timestamp()),
            (end, b.window.end.timestamp()),
        ):
            metric.samples.append(Sample(metric.name, labels, value))
    tuning = [anomaly, anomaly_floor, anomaly_history, critical_horizon, warning_horizon]
    amounts = [limit, spend, billed, metered, forecast]
    return [
        *amounts, usage, fratio, warning, stop, *tuning, start, end, *_blind_family(budgets),
        *_conversion_families(budgets),
    ]  # fmt: skip


def _conversion_families(budgets: Sequence[BudgetView]) -> list[Metric]:
    """Per budget, source and other currency: the spend counted after conversion, and the
    spend left out for want of a fresh rate (docs/currencies.md); each family is left out
    when no budget has such spend."""
    static = sorted({k for b in budgets for k, _ in b.labels})
    names = ["budget", "currency", "period", "source", "native_currency"]
    converted = GaugeMetricFamily(
        "budget_converted_spend_amount",
        "The part of budget_spend_amount a source spent in another currency (native_currency), "
        f"converted at the rate of a rates source, in the budget's currency. {CACHED}",
        labels=[*names, *static],
    )
    native = GaugeMetricFamily(
        "budget_converted_spend_native_amount",
        "The native amount (in native_currency) behind budget_converted_spend_amount: what the "
        f"budget counts of the source's spend in that currency, before conversion. {CACHED}",
        labels=[*names, *static],
    )
    left_out = GaugeMetricFamily(
        "budget_unconverted_spend_amount",
        "Spend of a source in another currency (native_currency, in that currency) that the "
        "budget does not count: reason no_rate (no rates source publishes one) or stale_rate "
        f"(the newest is older than its source's max_age). {CACHED}",
        labels=[*names, "reason", *static],
    )
    for b in budgets:
        extra = [dict(b.labels).get(k, "") for k in static]
        for c in b.conversions:
            values = [b.name, b.currency, b.period, c.source, c.currency, *extra]
            converted.add_metric(values, float(c.amount))
            native.add_metric(values, float(c.native))
        for gone in b.left_out:
            values = [b.name, b.currency, b.period, gone.source, gone.currency, gone.reason]
            left_out.add_metric([*values, *extra], float(gone.native))
    return [family for family in (converted, native, left_out) if family.samples]


def _blind_family(budgets: Sequence[BudgetView]) -> list[Metric]:
    """1 per budget and billed source whose joined meters add nothing while the bill's
    open part shows spend (see docs/realtime.md#when-the-meter-is-wrong); budgets
    without a joined meter have no series, and without any the family is left out."""
    static = sorted({k for b in budgets for k, _ in b.labels})
    blind = GaugeMetricFamily(
        "budget_meter_blind",
        "1 if the meters joined to the billed source (label source) add nothing to the "
        "budget while the bill shows spend after its data horizon (their query matched no "
        "series, or their dimensions differ from the budget's match): the bill's open part "
        f"is counted instead; else 0. {CACHED}",
        labels=["budget", "currency", "period", "source", *static],
    )
    for b in budgets:
        extra = dict(b.labels)
        for part in b.parts:
            if part.meters or part.meters_left_out:
                values = [b.name, b.currency, b.period, part.source]
                blind.add_metric(
                    [*values, *(extra.get(k, "") for k in static)], 1 if part.blind else 0
                )
    return [blind] if blind.samples else []


def _source_families(states: Sequence[SourceState]) -> list[Metric]:
    labels = ["source", "provider"]
    up = GaugeMetricFamily(
        "budget_source_up",
        "1 if the last background poll of the source succeeded, else 0 (scrapes never poll).",
        labels=labels,
    )
    window_up = GaugeMetricFamily(
        "budget_source_window_up",
        "1 if the last poll answered for the source's window of this period, else 0 (a "
        "window that fails alone keeps its last good figures; the source is down).",
        labels=[*labels, "period"],
    )
    success = GaugeMetricFamily(
        "budget_source_last_success_timestamp_seconds",
        "Unix time of the last successful poll.",
        labels=labels,
    )
    attempt = GaugeMetricFamily(
        "budget_source_last_attempt_timestamp_seconds",
        "Unix time of the last poll attempt.",
        labels=labels,
    )
    duration = GaugeMetricFamily(
        "budget_source_poll_duration_seconds",
        "How long the last poll took, retries included.",
        labels=labels,
    )
    interval = GaugeMetricFamily(
        "budget_source_poll_interval_seconds",
        "Configured time between polls of the source.",
        labels=labels,
    )
    requests = CounterMetricFamily(
        "budget_source_api_requests",
        "Requests sent to the provider's API, by outcome (the monitor's own API bill).",
        labels=[*labels, "status"],
    )
    through = GaugeMetricFamily(
        "budget_source_data_through_timestamp_seconds",
        "Data horizon of a billed source: its figures fully cover spend before this Unix time "
        f"(a meter joined with metered_after counts from here). {CACHED}",
        labels=labels,
    )
    for s in states:
        values = [s.name, s.provider]
        interval.add_metric(values, s.poll_interval_seconds)
        if s.result is not None and s.result.data_through is not None:
            through.add_metric(values, s.result.data_through.timestamp())
        for status in REQUEST_STATUSES:
            requests.add_metric([*values, status], s.requests.get(status, 0))
        if not s.attempted:
            continue
        up.add_metric(values, 1 if s.up else 0)
        for period, answered in _windows_up(s):
            window_up.add_metric([*values, period], 1 if answered else 0)
        if s.last_attempt is not None:
            attempt.add_metric(values, s.last_attempt)
        if s.last_success is not None:
            success.add_metric(values, s.last_success)
        if s.duration is not None:
            duration.add_metric(values, s.duration)
    return [up, window_up, success, attempt, duration, interval, requests, through]


def _windows_up(state: SourceState) -> list[tuple[str, bool]]:
    """Each period the source's last good result covers or failed for, and whether the last
    poll answered for it (a poll that failed whole answered for none)."""
    failed = {f.period for f in state.result.failed_windows} if state.result else set()
    periods = sorted({str(w.period) for w in state.windows} | failed)
    whole = not state.up and state.last_attempt != state.last_success
    return [(period, not whole and period not in failed) for period in periods]


def _feeds_family(feeds: Sequence[Feed]) -> Metric:
    static = sorted({k for f in feeds for k, _ in f.labels})
    info = GaugeMetricFamily(
        "budget_source_info",
        "1 for each source that feeds a budget: one of its sources with lines that pass (or "
        "could pass) its match, or its limit_from source.",
        labels=["budget", "currency", "period", "source", "provider", *static],
    )
    for f in feeds:
        extra = dict(f.labels)
        values = [f.budget, f.currency, f.period, f.source, f.provider]
        info.add_metric([*values, *(extra.get(k, "") for k in static)], 1)
    return info


def _cost_family(states: Sequence[SourceState], max_series: Mapping[str, int]) -> Metric:
    """Every line of every period a source is polled for (monthly always; daily,
    quarterly, yearly where a budget uses them), capped per source and currency, the
    cap shared among the periods (:func:`cap_source_lines`)."""
    rows: list[tuple[str, str, str, str, tuple[tuple[str, str], ...], Decimal]] = []
    for s in states:
        if s.result is None:
            continue
        by_period = cap_source_lines(s.result.lines, max_series[s.name])
        for period in sorted(by_period):
            for (currency, dims), amount in _merge_duplicates(by_period[period]).items():
                rows.append((s.name, s.provider, currency, period, dims, amount))
    keys = sorted({k for *_, dims, _ in rows for k, _ in dims})
    family = GaugeMetricFamily(
        "budget_source_cost_amount",
        "Spend so far in the current period (label period) reported by a source, by FOCUS "
        f"dimensions. {CACHED}",
        labels=[*_FIXED_COST_LABELS, *keys],
    )
    for name, provider, currency, period, dims, amount in rows:
        d = dict(dims)
        values = [name, provider, currency, period, *(d.get(k, "") for k in keys)]
        family.add_metric(values, float(amount))
    return family


def _sample_families(states: Sequence[SourceState]) -> list[Metric]:
    grouped: dict[str, list[tuple[SourceState, dict[str, str], float]]] = defaultdict(list)
    docs: dict[str, str] = {}
    for s in states:
        if s.result is None:
            continue
        for sample in s.result.samples:
            grouped[sample.name].append((s, dict(sample.labels), sample.value))
            docs.setdefault(sample.name, sample.documentation)
    families: list[Metric] = []
    for name in sorted(grouped):
        keys = sorted(
            {k for _, labels, _ in grouped[name] for k in labels} - {"source", "provider"}
        )
        family = GaugeMetricFamily(
            name, f"{docs[name]} {CACHED}", labels=["source", "provider", *keys]
        )
        for s, labels, value in grouped[name]:
            family.add_metric([s.name, s.provider, *(labels.get(k, "") for k in keys)], value)
        families.append(family)
    return families


def _exporter_families(status: ExporterStatus) -> list[Metric]:
    info = GaugeMetricFamily(
        "budget_exporter_build_info",
        "Build information; the value is always 1.",
        labels=["version"],
    )
    info.add_metric([__version__], 1)
    reload_ok = GaugeMetricFamily(
        "budget_exporter_config_last_reload_successful",
        "1 if the last configuration (re)load succeeded, else 0.",
        value=1 if status.reload_successful else 0,
    )
    families: list[Metric] = [info, reload_ok]
    if status.last_reload_success is not None:
        families.append(
            GaugeMetricFamily(
                "budget_exporter_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration (re)load.",
                value=status.last_reload_success,
            )
        )
    mismatch = CounterMetricFamily(
        "budget_currency_mismatch_lines",
        "Spend lines left out of a budget because their currency is not the budget's "
        "(counted once per poll of the source, when no rates source converts currencies).",
        labels=["budget", "source", "currency"],
    )
    for (budget, source, currency), count in sorted(status.mismatches.items()):
        mismatch.add_metric([budget, source, currency], count)
    families.append(mismatch)
    return families


def holds_families(
    held: Mapping[str, Decimal], currencies: Mapping[str, str], store: str, store_up: bool
) -> list[Metric]:
    """The amounts held per budget (every configured budget, 0 when none) and the health
    of the holds store; rendered at each scrape, as holds change between polls."""
    amount = GaugeMetricFamily(
        "budget_held_amount",
        "Amount held against the budget by allowed checks in flight, plus recorded costs no "
        "meter poll has covered yet (counted by the check API on top of budget_spend_amount).",
        labels=["budget", "currency"],
    )
    for budget, currency in currencies.items():
        amount.add_metric([budget, currency], float(held.get(budget, Decimal(0))))
    up = GaugeMetricFamily(
        "budget_exporter_holds_store_up",
        "1 if the store of holds (memory, or a shared Redis) answered its last request, else 0.",
        labels=["store"],
    )
    up.add_metric([store], 1 if store_up else 0)
    return [amount, up]


def render(families: list[Metric], live: Callable[[bool], bytes] | None = None) -> Rendered:
    """Both formats of the families, plain and gzipped, for :meth:`Rendered.select`;
    ``live`` renders the families that change between snapshots, at each scrape."""
    return Rendered.of(families, live)
