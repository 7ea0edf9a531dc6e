"""The dashboards' PromQL: selectors, label sets and the builders every query is made of.

Plain strings, no Grafana: ``$job``, ``$currency``... are the dashboards' variables,
which Grafana substitutes before the query reaches Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable

# -- selectors: the variables' choice -----------------------------------------------

EXPORTER_SELECTOR = 'job=~"$job", instance=~"$instance"'
"""Every query starts with the Job and Instance variables' choice."""
BUDGET_SELECTOR = f'{EXPORTER_SELECTOR}, team=~"$team", currency=~"$currency", budget=~"$budget"'
"""The overview's budgets: Team, Currency (one row per currency) and Budget."""
SOURCE_SELECTOR = f'{EXPORTER_SELECTOR}, provider=~"$provider", source=~"$source"'
"""The breakdown's sources: Provider and Source."""
COST_SELECTOR = f'{SOURCE_SELECTOR}, currency="$currency", period="$period"'
"""The breakdown's cost lines: its sources' lines of one currency and one period."""
CONVERSION_SELECTOR = (
    f'{EXPORTER_SELECTOR}, currency="$currency", period="$period", budget=~"$budget", '
    'source=~"$source"'
)
"""The breakdown's budgets' spend in other currencies: budgets in one currency and period."""

BUDGET_LABELS = "budget, currency, period"
"""The labels that name a budget's series."""

# -- copies of a series: replicas, scrape jobs, the Exporters variable ---------------

SCRAPE_LABELS = ("job", "instance", "namespace", "service", "endpoint", "pod", "container")
"""The labels a scrape adds to every series: Prometheus' job and instance, and the namespace,
service, endpoint, pod and container the Prometheus Operator adds.  The copies of one series
from two replicas or two scrape jobs differ only in these (not the exporter's own
``budget_exporter.core.model.TARGET_LABELS``, the names its own labels may not take)."""
SCRAPE_JOB_LABELS = ("job", "service", "endpoint")
"""Of the scrape labels, those that tell two scrape jobs of one exporter apart (not two
replicas)."""

# The Exporters variable names the label an ``exporter`` label is copied from:
# ``instance`` (apart) or a label no series has (merged: ``exporter`` stays empty).
APART = "instance"
MERGED = "__merged__"


def merged(expr: str, labels: Iterable[str] = SCRAPE_LABELS) -> str:
    """``expr`` with the copies of each series from several replicas or scrape jobs merged."""
    return f"max without ({', '.join(labels)}) ({expr})"


def with_exporter(expr: str) -> str:
    """``expr`` with an ``exporter`` label: its instance, or none when merged."""
    return f'label_replace({expr}, "exporter", "$1", "$exporters", "(.*)")'


def by_exporter(agg: str, labels: str, expr: str) -> str:
    """``agg by (labels, exporter)``: copies from scrape jobs (and merged exporters) once."""
    return f"{agg} by ({labels}, exporter) ({with_exporter(expr)})"


def shown_as(name_label: str, expr: str) -> str:
    """Add a ``shown`` label: ``name_label``, followed by `` @ exporter`` when apart."""
    joined = f'label_join({expr}, "shown", " @ ", "{name_label}", "exporter")'
    return f'label_replace({joined}, "shown", "$1", "shown", "(.*) @ ")'


# -- money units ----------------------------------------------------------------------

GRAFANA_CURRENCIES = (
    *("USD", "GBP", "EUR", "JPY", "RUB", "UAH", "BRL", "DKK", "ISK"),
    *("NOK", "SEK", "CZK", "CHF", "PLN", "ZAR", "INR", "KRW"),
)
"""ISO codes with a built-in Grafana currency unit; others get ``suffix: CODE``."""


def unit_of_currency(metric: str, selector: str) -> str:
    """One series per currency of ``metric{selector}``, its ``unit`` label the Grafana unit."""
    known = "|".join(GRAFANA_CURRENCIES)
    by_currency = f"max by (currency) ({metric}{{{selector}}})"
    suffix = f'label_replace({by_currency}, "unit", "suffix: $1", "currency", "(.+)")'
    return f'label_replace({suffix}, "unit", "currency$1", "currency", "({known})")'


# -- budgets and their sources --------------------------------------------------------

DAY = 86400
"""Seconds in a day: rates are shown per day."""
RATE_WINDOWS = ("1h", "6h", "1d")
SUSTAINABLE = "budget:budget_remaining_amount:rate_to_period_end"
"""The spend per second that uses up what is left of the limit by the end of the period."""
SOURCE_STATE = "source:budget_source_state:up_and_age"
"""Per source: 0 up, 1 late, 2 stale, 3 down (a recording rule of rules/)."""


def spend_rate(window: str) -> str:
    """The recorded spend rate of each budget over ``window`` (per second)."""
    return f"budget:budget_spend_amount:rate{window}"


def per_budget(metric: str, agg: str = "max", selector: str = BUDGET_SELECTOR) -> str:
    """One series per budget (and exporter, when apart) of a per-budget metric."""
    return by_exporter(agg, BUDGET_LABELS, f"{metric}{{{selector}}}")


def budget_sources(per_source: str, agg: str, by: str = BUDGET_LABELS) -> str:
    """``per_source`` (labels job, instance, source) over each budget's sources."""
    joined = (
        f"budget_source_info{{{BUDGET_SELECTOR}}} * on (job, instance, source) "
        f"group_left () ({per_source})"
    )
    return by_exporter(agg, by, joined)


def source_states(by: str = BUDGET_LABELS) -> str:
    """The worst state (up, late, stale, down) among a budget's sources."""
    return budget_sources(f"{SOURCE_STATE}{{{EXPORTER_SELECTOR}}}", "max", by)


def data_age(by: str = BUDGET_LABELS) -> str:
    """Age of the oldest figures among a budget's sources."""
    last = f"budget_source_last_success_timestamp_seconds{{{EXPORTER_SELECTOR}}}"
    return f"time() - {budget_sources(last, 'min', by)}"


# -- cost lines -------------------------------------------------------------------------

STEP = "$__interval"
STEP_SECONDS = "($__interval_ms / 1000)"
PERIOD_ENDS = "period:budget_period_end_timestamp_seconds:utc"
"""When the current period of each ``period`` label ends (a recording rule of rules/): the
UTC day, month, quarter and year from the calendar (a source's monthly lines exist with no
monthly budget), every other period (weekly, fiscal, custom) from the exporter's own
``budget_period_end_timestamp_seconds`` of the budgets counting it."""
CUSTOM_RANGE = ".*/.*"
"""The ``period`` labels of custom ranges (``2026-04-01/2026-09-30``): one window each."""


def cost_lines(selector: str = COST_SELECTOR, offset: str = "") -> str:
    """Each cost line once: copies from replicas (when merged) and scrape jobs merged."""
    return merged(with_exporter(f"budget_source_cost_amount{{{selector}}}{offset}"))


def period_started() -> str:
    """One series ``{period=...}`` for each period that started in the last step.

    The period that was current a step ago ended since then.  Whatever the period (a day,
    an ISO or Sunday week, a calendar or fiscal quarter or year), its end is the one the
    exporter works with: ``PERIOD_ENDS`` takes the non-calendar ones from the exporter's
    per-budget end gauge, so no calendar is assumed here.  A custom range (its label
    ``2026-04-01/2026-09-30`` has a ``/``) has one window: its end starts no new period,
    and the late costs and credits that still arrive after it are changes like any other.
    """
    ended = f'{PERIOD_ENDS}{{period!~"{CUSTOM_RANGE}"}} offset {STEP}'
    return f"({ended} > time() - {STEP_SECONDS}) <= time()"


def change_over_range() -> str:
    """Each cost line's change over the range, correct across the period's reset.

    The sum of its changes step by step, where a step across the start of the line's
    period, or to a line that was not there, counts the line's whole amount (the new
    period's spend so far, not the drop to it).  Credits and refunds that lower a line
    within a period count as negative change.
    """
    now, before = cost_lines(), cost_lines(offset=f" offset {STEP}")
    step = f"({now} - ({before} unless on (period) ({period_started()}))) or {now}"
    return f"sum_over_time(({step})[$__range:{STEP}])"


# -- spend in other currencies ------------------------------------------------------------

CONVERSION_LABELS = "budget, currency, period, source, native_currency"
"""The labels that name a budget's spend from one source in one other currency."""
CONVERTED = "budget_converted_spend_amount"
"""A budget's spend in another currency, converted: in the budget's currency."""
CONVERTED_NATIVE = "budget_converted_spend_native_amount"
"""The native amount behind ``CONVERTED``: in the native currency."""
UNCONVERTED = "budget_unconverted_spend_amount"
"""A budget's spend in another currency left out for want of a fresh rate: in its own."""
LEFT_OUT_REASONS = {"stale_rate": 2, "no_rate": 1}
"""``budget_unconverted_spend_amount``'s reasons as the numbers the dashboard shows as
words (0: converted)."""
RATE = "budget_exchange_rate"
"""Each rate a rates source published: one ``base`` in ``quote``, for a ``date``."""


def conversion(metric: str, selector: str = "") -> str:
    """Per budget, source and other currency (and exporter, when apart): ``metric``."""
    return by_exporter("max", CONVERSION_LABELS, f"{metric}{{{CONVERSION_SELECTOR}{selector}}}")


def other_currencies() -> str:
    """One series (value 0) per budget, source and other currency the budget has spend in:
    converted or left out."""
    return f"({conversion(CONVERTED)} or {conversion(UNCONVERTED)}) * 0"


def native_spend() -> str:
    """Each row of ``other_currencies()`` with the native amount, in that currency: what the
    budget counts before conversion (its ``match`` applied), or what it leaves out."""
    return f"{conversion(CONVERTED_NATIVE)} or {conversion(UNCONVERTED)}"


def applied_rate() -> str:
    """Each converted row's rate, as applied: one unit of ``native_currency`` in the
    budget's currency (the converted amount over the native one)."""
    return f"{conversion(CONVERTED)} / {conversion(CONVERTED_NATIVE)}"


def left_out_reason() -> str:
    """Each row of ``other_currencies()``: 0 converted, else the number of the reason it is
    left out (``LEFT_OUT_REASONS``)."""
    reasons = []
    for reason, number in LEFT_OUT_REASONS.items():
        left_out = conversion(UNCONVERTED, f', reason="{reason}"')
        reasons.append(f"{left_out} * 0 + {number}")
    return " or ".join([*reasons, other_currencies()])


def _published(selector: str, native_from: str, by: str) -> str:
    """Rates of ``RATE{selector}``, the ``native_from`` label copied to ``native_currency``."""
    named = with_exporter(f"{RATE}{{{EXPORTER_SELECTOR}, {selector}}}")
    named = f'label_replace({named}, "native_currency", "$1", "{native_from}", "(.*)")'
    return f"max by ({by}, native_currency, exporter) ({named})"


def rates_into_currency() -> str:
    """Every published rate that converts an other currency of ``other_currencies()`` into
    ``$currency``: one unit of ``native_currency`` in ``$currency``, labelled with its
    rates ``source``, its ``date`` and its ``kind``: ``direct`` (native to $currency),
    ``inverse`` (1 / $currency to native) or ``cross`` (through the ``base`` both are
    published from, by one source for one day), the rates the exporter chooses among
    (docs/currencies.md#which-rate).
    """
    into = 'quote="$currency"'
    direct = _published(into, "base", "source, date")
    inverse = "1 / " + _published('base="$currency"', "quote", "source, date")
    # base -> $currency over base -> native: one native in $currency.
    published_into = with_exporter(f"{RATE}{{{EXPORTER_SELECTOR}, {into}}}")
    via = f"max by (source, date, base, exporter) ({published_into})"
    cross = f"{via} / on (source, date, base, exporter) group_right () " + _published(
        'base!="$currency", quote!="$currency"', "quote", "source, date, base"
    )
    found = " or ".join(
        f'label_replace({expr}, "kind", "{kind}", "", "")'
        for expr, kind in ((direct, "direct"), (inverse, "inverse"), (cross, "cross"))
    )
    natives = f"max by (native_currency, exporter) ({other_currencies()})"
    return f"({found}) and on (native_currency, exporter) {natives}"
