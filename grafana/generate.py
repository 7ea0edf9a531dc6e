#!/usr/bin/env python3
"""Generate the budget-exporter Grafana dashboards with grafana-foundation-sdk.

    python grafana/generate.py            # write grafana/dashboards/*.json
    python grafana/generate.py --check    # exit 1 if the committed JSON is stale

The JSON under ``grafana/dashboards/`` is generated: edit this file, never the
JSON.  ``helm/sync.py`` copies the result into the Helm chart.

Conventions kept by every panel:

* Money is never summed across currencies: the ``currency`` variable is
  single-valued and every money query filters on it (or groups by it).
* Money panels take their unit from the data: an extra instant query (refId
  ``UNIT``) returns the Grafana unit for the selected currency as a label, and
  the "Config from query results" transformation applies it.  Currencies
  without a built-in Grafana unit get the ISO code as a suffix.
* Ratios are shown in percent; every panel has a minimum of 0.
* Two exporter replicas, or two scrape jobs on one exporter, never double a
  figure: per-budget and per-source panels take ``max by (...)`` over the
  series' identifying labels, and the spend panels and top movers first merge
  the copies of each cost line with ``max without (<target labels>)`` (the
  labels a scrape adds: job, instance, namespace, service, endpoint, pod,
  container), then sum.  API request counts are the one exception: they are
  summed across replicas, each of which really sends its own requests, and
  merged only across scrape jobs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models.common import DataSourceRef

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
TAGS = ["budget-exporter", "finops", "cost"]
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
REFRESH = "5m"
TIME_FROM = "now-30d"

# ISO codes with a built-in Grafana currency unit; others get "suffix: CODE".
GRAFANA_CURRENCIES = (
    *("USD", "GBP", "EUR", "JPY", "RUB", "UAH", "BRL", "DKK", "ISK"),
    *("NOK", "SEK", "CZK", "CHF", "PLN", "ZAR", "INR", "KRW"),
)

# Budget states as recorded by budget:budget_state:thresholds (rules/).
STATES = {
    "0": ("OK", "green"),
    "1": ("Warning", "orange"),
    "2": ("Stop", "red"),
    "3": ("Exceeded", "dark-red"),
}
UNATTRIBUTED = "(unattributed)"

# Labels a scrape adds to every series: Prometheus' job and instance, and the namespace,
# service, endpoint, pod and container the Prometheus Operator adds.  The copies of one
# series from two replicas or two scrape jobs differ only in these.
TARGET_LABELS = ("job", "instance", "namespace", "service", "endpoint", "pod", "container")
# Of those, the ones that tell two scrape jobs of one exporter apart (not two replicas).
SCRAPE_JOB_LABELS = ("job", "service", "endpoint")

PanelT = TypeVar("PanelT", bargauge.Panel, stat.Panel, table.Panel, timeseries.Panel)


# -- helpers -----------------------------------------------------------------------


def query(expr: str, ref: str, legend: str | None = None) -> prometheus.Dataquery:
    """A range query drawn as time series."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref).range()
    if legend is not None:
        q = q.legend_format(legend)
    return q


def instant(
    expr: str, ref: str, legend: str | None = None, table_format: bool = False
) -> prometheus.Dataquery:
    """An instant query, as time series or as a table (for merges and config)."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref).instant()
    if table_format:
        q = q.format(prometheus_models.PromQueryFormat.TABLE)
    if legend is not None:
        q = q.legend_format(legend)
    return q


def unit_query(metric: str, selector: str) -> prometheus.Dataquery:
    """Instant table query whose ``unit`` column is the Grafana unit of ``$currency``."""
    known = "|".join(GRAFANA_CURRENCIES)
    by_currency = f"max by (currency) ({metric}{{{selector}}})"
    suffix = f'label_replace({by_currency}, "unit", "suffix: $1", "currency", "(.+)")'
    expr = f'label_replace({suffix}, "unit", "currency$1", "currency", "({known})")'
    return instant(expr, "UNIT", table_format=True)


def merged(expr: str, labels: Iterable[str] = TARGET_LABELS) -> str:
    """``expr`` with the copies of each series from several replicas or scrape jobs merged."""
    return f"max without ({', '.join(labels)}) ({expr})"


def unit_from_data() -> models.DataTransformerConfig:
    """Apply the UNIT query's ``unit`` column to every numeric field."""
    return models.DataTransformerConfig(
        id_val="configFromData",
        options={
            "configRefId": "UNIT",
            "mappings": [
                {"fieldName": "unit", "handlerKey": "unit"},
                {"fieldName": "currency", "handlerKey": None},
                {"fieldName": "Value", "handlerKey": None},
                {"fieldName": "Time", "handlerKey": None},
            ],
        },
    )


def transform(id_val: str, options: dict[str, Any]) -> models.DataTransformerConfig:
    return models.DataTransformerConfig(id_val=id_val, options=options)


def prop(id_val: str, value: Any) -> models.DynamicConfigValue:
    return models.DynamicConfigValue(id_val=id_val, value=value)


def fixed_color(color: str) -> models.DynamicConfigValue:
    return prop("color", {"mode": "fixed", "fixedColor": color})


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=v, color=c) for v, c in steps])
    )


def legend(
    mode: common_models.LegendDisplayMode = common_models.LegendDisplayMode.LIST,
    calcs: Iterable[str] = (),
) -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .display_mode(mode)
        .placement(common_models.LegendPlacement.BOTTOM)
        .calcs(list(calcs))
    )


def tooltip() -> common_builders.VizTooltipOptions:
    return (
        common_builders.VizTooltipOptions()
        .mode(common_models.TooltipDisplayMode.MULTI)
        .sort(common_models.SortOrder.DESCENDING)
    )


def last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def value_mappings(states: dict[str, tuple[str, str]]) -> list[models.ValueMapping]:
    """Numeric states shown as coloured words (``states``: value -> (text, colour))."""
    return [
        models.ValueMap(
            options={
                value: models.ValueMappingResult(text=text, color=color, index=int(value))
                for value, (text, color) in states.items()
            }
        )
    ]


def query_variable(
    name: str,
    label: str,
    definition: str,
    description: str,
    multi: bool = True,
    all_value: str | None = ".*",
) -> dashboard.QueryVariable:
    """A label_values() variable; multi-valued ones default to All (``all_value``, or
    Grafana's own: the options offered, when None)."""
    var = (
        dashboard.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query({"query": definition, "refId": f"{name}-variable", "qryType": 1})
        .definition(definition)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        if all_value is not None:
            var = var.all_value(all_value)
        var = var.current(models.VariableOption(selected=True, text="All", value="$__all"))
    return var


def datasource_variable() -> dashboard.DatasourceVariable:
    return (
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .description("The Prometheus that scrapes budget-exporter.")
        .type("prometheus")
    )


def dashboard_link(title: str, tags: list[str]) -> dashboard.DashboardLink:
    return (
        dashboard.DashboardLink(title)
        .type(models.DashboardLinkType.DASHBOARDS)
        .tags(tags)
        .as_dropdown(False)
        .include_vars(True)
        .keep_time(True)
    )


def builtin_annotation() -> dashboard.AnnotationQuery:
    """Grafana's own annotations and alerts, as every dashboard has them."""
    return (
        dashboard.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .built_in(1)
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
    )


def described(panel: PanelT, title: str, description: str, width: int, height: int = 8) -> PanelT:
    """A panel's title, description and size on the 24-column grid."""
    return panel.title(title).description(description).span(width).height(height)


def money(panel: PanelT, metric: str, selector: str, *targets: prometheus.Dataquery) -> PanelT:
    """A money panel: the UNIT query on ``metric`` (first target), then ``targets``.

    The unit comes from the data (see the module docstring); money has two decimals
    and never goes below zero.
    """
    panel.with_target(unit_query(metric, selector))
    for target in targets:
        panel.with_target(target)
    return panel.with_transformation(unit_from_data()).min(0).decimals(2)


def base_dashboard(title: str, uid: str, description: str, time_from: str) -> dashboard.Dashboard:
    """The settings, link, annotation and data source variable every dashboard starts with."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time(time_from, "now")
        .refresh(REFRESH)
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .editable()
        .link(dashboard_link("budget-exporter", ["budget-exporter"]))
        .annotation(builtin_annotation())
        .with_variable(datasource_variable())
    )


class Layout:
    """Adds panels with stable, unique ids in reading order."""

    def __init__(self, board: dashboard.Dashboard) -> None:
        self.board = board
        self.next_id = 1

    def row(self, title: str, repeat: str | None = None) -> None:
        row = dashboard.Row(title).id(self.next_id)
        if repeat:
            row = row.repeat(repeat)
        self.next_id += 1
        self.board.with_row(row)

    def add(self, panel: Any) -> None:
        self.board.with_panel(panel.id(self.next_id).datasource(DATASOURCE))
        self.next_id += 1


# -- Exporters: job, instance, and keeping exporters apart --------------------------

EXPORTER_SELECTOR = 'job=~"$job", instance=~"$instance"'
"""Every query starts with the Job and Instance variables' choice."""


def exporter_variables() -> list[Any]:
    """Job, Instance (both "All" by default) and Exporters (apart unless merged)."""
    return [
        query_variable(
            "job",
            "Job",
            "label_values(budget_exporter_build_info, job)",
            "The Prometheus scrape jobs of budget-exporter to show.",
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(budget_exporter_build_info{job=~"$job"}, instance)',
            "The exporters (scrape targets) to show.",
        ),
        dashboard.CustomVariable("exporters")
        .label("Exporters")
        .description(
            "Apart: the figures of each exporter (instance) are shown on their own, so two "
            "exporters with a budget or source of the same name never merge. Merged: copies of "
            "a series from several exporters (replicas of one configuration) are shown once."
        )
        .values(f"Apart : {APART}, Merged : {MERGED}")
        .options(
            [
                models.VariableOption(selected=True, text="Apart", value=APART),
                models.VariableOption(selected=False, text="Merged", value=MERGED),
            ]
        )
        .current(models.VariableOption(selected=True, text="Apart", value=APART)),
    ]


# The Exporters variable names the label an ``exporter`` label is copied from:
# ``instance`` (apart) or a label no series has (merged: ``exporter`` stays empty).
APART = "instance"
MERGED = "__merged__"


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


# -- Budget overview -------------------------------------------------------------

BUDGET_SELECTOR = f'{EXPORTER_SELECTOR}, team=~"$team", currency=~"$currency", budget=~"$budget"'
BUDGET_LABELS = "budget, currency, period"
DAY = 86400
BREAKDOWN_URL = (
    "/d/budget-exporter-breakdown/budget-breakdown?${__url_time_range}"
    "&${datasource:queryparam}&${job:queryparam}&${instance:queryparam}"
    "&${exporters:queryparam}&var-budget=${__data.fields.budget}"
    "&var-currency=${__data.fields.currency}&var-period=${__data.fields.period}"
)
"""The breakdown dashboard for the clicked budget: its period, currency and sources."""
DRILL_DOWN = prop(
    "links",
    [
        {
            "title": "Breakdown of ${__data.fields.budget}: its sources, services and models",
            "url": BREAKDOWN_URL,
        }
    ],
)


def per_budget(metric: str, agg: str = "max", selector: str = BUDGET_SELECTOR) -> str:
    """One series per budget (and exporter, when apart) of a per-budget metric."""
    return by_exporter(agg, BUDGET_LABELS, f"{metric}{{{selector}}}")


def source_state(selector: str = EXPORTER_SELECTOR) -> str:
    """Per source: 0 up, 1 late (2 poll intervals without success), 2 stale (3), 3 down."""
    age = (
        f"(time() - budget_source_last_success_timestamp_seconds{{{selector}}}) "
        f"/ budget_source_poll_interval_seconds{{{selector}}}"
    )
    late = f"(({age}) >= bool 2) + (({age}) >= bool 3)"
    down = f"3 * (1 - budget_source_up{{{selector}}})"
    return (
        f'max by (job, instance, source) (label_replace({down}, "check", "up", "", "") '
        f'or label_replace({late}, "check", "age", "", ""))'
    )


def budget_sources(per_source: str, agg: str, by: str = BUDGET_LABELS) -> str:
    """``per_source`` (labels job, instance, source) over each budget's sources."""
    joined = (
        f"budget_source_info{{{BUDGET_SELECTOR}}} * on (job, instance, source) "
        f"group_left () ({per_source})"
    )
    return by_exporter(agg, by, joined)


def data_age(by: str = BUDGET_LABELS) -> str:
    """Age of the oldest figures among a budget's sources."""
    last = f"budget_source_last_success_timestamp_seconds{{{EXPORTER_SELECTOR}}}"
    return f"time() - {budget_sources(last, 'min', by)}"


SOURCE_STATES = {
    "0": ("Up", "green"),
    "1": ("Late", "orange"),
    "2": ("Stale", "red"),
    "3": ("Down", "red"),
}


def per_row_threshold_bars(name_label: str, value: str, warning: str, stop: str) -> bargauge.Panel:
    """One bar per ``name_label`` value, coloured at that row's own thresholds.

    ``value``, ``warning`` and ``stop`` are PromQL with one series per name (and
    exporter).  They run as table queries (with a zero base) labelled ``shown``
    (the name, and the exporter when apart) and are merged into one row per bar;
    "Rows to fields" turns each row into a bar whose thresholds come from the
    row: green from 0, amber from ``warning``, red from ``stop``.  The panel's
    static thresholds apply only where Grafana lacks the transformation.
    """
    mappings: list[dict[str, Any]] = [
        {"fieldName": "shown", "handlerKey": "field.name"},
        {"fieldName": "Value #A", "handlerKey": "field.value"},
    ]
    for ref, color in (("B", "green"), ("C", "orange"), ("D", "red")):
        mappings.append(
            {
                "fieldName": f"Value #{ref}",
                "handlerKey": "threshold1",
                "handlerArguments": {"threshold": {"color": color}},
            }
        )
    mappings.append({"fieldName": "Time", "handlerKey": "__ignore"})
    return (
        bargauge.Panel()
        .with_target(instant(shown_as(name_label, value), "A", table_format=True))
        .with_target(instant(shown_as(name_label, f"0 * ({warning})"), "B", table_format=True))
        .with_target(instant(shown_as(name_label, warning), "C", table_format=True))
        .with_target(instant(shown_as(name_label, stop), "D", table_format=True))
        .with_transformation(transform("merge", {}))
        .with_transformation(transform("sortBy", {"sort": [{"field": "Value #A", "desc": True}]}))
        .with_transformation(transform("rowsToFields", {"mappings": mappings}))
        .color_scheme(dashboard.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .show_unfilled(True)
        .value_mode(common_models.BarGaugeValueMode.COLOR)
        .reduce_options(last_value())
        .min(0)
    )


def usage_bargauge(title: str, description: str, width: int, height: int) -> bargauge.Panel:
    """Usage ratio per budget, amber at each budget's warning ratio, red at its stop ratio."""
    bars = per_row_threshold_bars(
        "budget",
        per_budget("budget_usage_ratio"),
        per_budget("budget_warning_threshold_ratio"),
        per_budget("budget_stop_threshold_ratio"),
    )
    return (
        described(bars, title, description, width, height)
        .unit("percentunit")
        .decimals(1)
        .max(1)
        .thresholds(thresholds((None, "green"), (0.8, "orange"), (0.95, "red")))
    )


def table_of(
    panel: table.Panel,
    columns: list[tuple[str, str, str]],
    first: Iterable[str],
    sort_by: str,
) -> table.Panel:
    """A money table: one instant query per column, merged into a row per budget.

    ``columns`` are (ref, expr, title); the label columns ``first`` come first
    (budget, period...), the others (currency, exporter when apart) after them.
    """
    money(
        panel,
        "budget_limit_amount",
        BUDGET_SELECTOR,
        *(instant(expr, ref, table_format=True) for ref, expr, _ in columns),
    )
    rename = {f"Value #{ref}": name for ref, _, name in columns}
    rename.update({"budget": "Budget", "period": "Period", "currency": "Currency"})
    rename["exporter"] = "Exporter"
    order = [*first, *(f"Value #{ref}" for ref, _, _ in columns), "currency", "exporter"]
    return (
        panel.with_transformation(transform("merge", {}))
        .with_transformation(
            transform(
                "organize",
                {
                    "excludeByName": {"Time": True},
                    "indexByName": {name: i for i, name in enumerate(order)},
                    "renameByName": rename,
                },
            )
        )
        .with_transformation(transform("sortBy", {"sort": [{"field": sort_by, "desc": True}]}))
        .sort_by([common_builders.TableSortByFieldState().display_name(sort_by).desc(True)])
        .override_by_name("budget", [DRILL_DOWN])
    )


def ratio_cell(*steps: tuple[float | None, str]) -> list[models.DynamicConfigValue]:
    """A percentage cell on a background coloured at ``steps``."""
    return [
        prop("unit", "percentunit"),
        prop("decimals", 1),
        prop("thresholds", thresholds(*steps).build()),
        prop("color", {"mode": "thresholds"}),
        prop("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
    ]


USAGE_STEPS: tuple[tuple[float | None, str], ...] = (
    (None, "green"),
    (0.8, "orange"),
    (0.95, "red"),
    (1, "dark-red"),
)
"""The exporter's default warning and stop ratios: a table cell has one set of thresholds."""


def budgets_table() -> table.Panel:
    columns = [
        ("A", per_budget("budget_spend_amount"), "Spend"),
        ("B", per_budget("budget_limit_amount"), "Limit"),
        ("C", per_budget("budget_usage_ratio"), "Usage"),
        ("D", per_budget("budget_forecast_amount"), "Forecast"),
        ("E", per_budget("budget_forecast_ratio"), "Forecast ratio"),
        (
            "F",
            f"{per_budget('budget:budget_period_remaining_seconds:end_minus_time')} / {DAY}",
            "Days left",
        ),
        ("G", per_budget("budget:budget_state:thresholds"), "State"),
        ("H", budget_sources(source_state(), "max"), "Sources"),
        ("I", data_age(), "Data age"),
    ]
    panel = described(
        table.Panel(),
        "All budgets in $currency",
        "Every budget in this currency: spend, limit, usage, forecast for the end of the "
        "period and its ratio to the limit, days left, state (at the budget's own warning and "
        "stop ratios), whether its sources are up and fresh, and the age of its oldest figures. "
        "Click a budget for its breakdown.",
        16,
        10,
    )
    return (
        table_of(panel, columns, ["budget", "period"], "Usage")
        .override_by_name("Usage", ratio_cell(*USAGE_STEPS))
        .override_by_name("Forecast ratio", ratio_cell((None, "green"), (1, "red")))
        .override_by_name("Days left", [prop("unit", "none"), prop("decimals", 1)])
        .override_by_name(
            "State",
            [
                prop("unit", "none"),
                prop("decimals", 0),
                prop("mappings", value_mappings(STATES)),
                prop("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
            ],
        )
        .override_by_name(
            "Sources",
            [
                prop("unit", "none"),
                prop("decimals", 0),
                prop("mappings", value_mappings(SOURCE_STATES)),
                prop("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
            ],
        )
        .override_by_name("Data age", [prop("unit", "s"), prop("decimals", 0)])
    )


RATE_WINDOWS = ("1h", "6h", "1d")


def spend_rate(window: str) -> str:
    return f"budget:budget_spend_amount:rate{window}"


SUSTAINABLE = "budget:budget_remaining_amount:rate_to_period_end"


def burn_table() -> table.Panel:
    columns = [
        *(
            (ref, f"{per_budget(spend_rate(window))} * {DAY}", f"Burn rate ({window})")
            for ref, window in zip("ABC", RATE_WINDOWS, strict=True)
        ),
        ("D", f"{per_budget(SUSTAINABLE)} * {DAY}", "Sustainable rate"),
        ("E", f"{per_budget(spend_rate('6h'))} / {per_budget(SUSTAINABLE)}", "Burn ratio (6h)"),
    ]
    panel = described(
        table.Panel(),
        "Burn rate in $currency",
        "Each budget's spend per day over the last hour, 6 hours and day (recording rules "
        "budget:budget_spend_amount:rate1h/6h/1d), against the sustainable rate: what is left "
        "of the limit divided by the time left in the period (budget:budget_remaining_amount:"
        "rate_to_period_end), per day. The burn ratio is the 6-hour rate divided by the "
        "sustainable rate: above 100 % the budget runs out before the period ends.",
        24,
        7,
    )
    return table_of(panel, columns, ["budget", "period"], "Burn ratio (6h)").override_by_name(
        "Burn ratio (6h)", ratio_cell((None, "green"), (1, "orange"), (2, "red"))
    )


def alerts_table() -> table.Panel:
    selector = f'alertname=~"Budget.*", {EXPORTER_SELECTOR}'
    panel = described(
        table.Panel(),
        "Budget alerts",
        "The budget-exporter alerts Prometheus is evaluating (ALERTS): firing, or pending "
        "until their `for:` has passed. Firing alerts also show as red annotations on the "
        "time series.",
        24,
        6,
    )
    order = ["alertstate", "severity", "alertname", "budget", "source", "period", "currency"]
    return (
        panel.with_target(instant(f"ALERTS{{{selector}}}", "A", table_format=True))
        .with_transformation(
            transform(
                "organize",
                {
                    "excludeByName": {"Time": True, "Value": True, "__name__": True},
                    "indexByName": {name: i for i, name in enumerate(order)},
                    "renameByName": {
                        "alertstate": "State",
                        "severity": "Severity",
                        "alertname": "Alert",
                        "budget": "Budget",
                        "source": "Source",
                    },
                },
            )
        )
        .with_transformation(transform("sortBy", {"sort": [{"field": "State", "desc": False}]}))
        .unit("none")
        .min(0)
        .override_by_name(
            "State",
            [
                prop(
                    "mappings",
                    [
                        models.ValueMap(
                            options={
                                "firing": models.ValueMappingResult(color="red", index=0),
                                "pending": models.ValueMappingResult(color="orange", index=1),
                            }
                        )
                    ],
                ),
                prop("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
            ],
        )
    )


def alerts_annotation() -> dashboard.AnnotationQuery:
    return (
        dashboard.AnnotationQuery()
        .name("Budget alerts")
        .datasource(DATASOURCE)
        .enable(True)
        .hide(False)
        .icon_color("red")
        .expr(f'ALERTS{{alertname=~"Budget.*", alertstate="firing", {EXPORTER_SELECTOR}}}')
        .step("60s")
        .title_format("{{alertname}}")
        .text_format("{{budget}}{{source}} ({{severity}})")
        .tag_keys("severity,budget,source")
        .use_value_for_time(False)
    )


def budget_series(
    make: Callable[[str, str, str], prometheus.Dataquery],
) -> list[prometheus.Dataquery]:
    """Each budget's spend, limit and forecast (refs A, B, C), made by ``query`` or ``instant``."""
    return [
        make(
            per_budget(f"budget_{metric}_amount"),
            ref,
            f"{name} ({{{{budget}}}}{{{{exporter}}}})",
        )
        for ref, metric, name in (
            ("A", "spend", "Spend"),
            ("B", "limit", "Limit"),
            ("C", "forecast", "Forecast"),
        )
    ]


def budget_stats() -> stat.Panel:
    panel = described(
        stat.Panel(),
        "Spend vs limit vs forecast",
        "Spend so far in the current period, the budget's limit and the forecast spend at "
        "the end of the period.",
        6,
    )
    return (
        money(panel, "budget_limit_amount", BUDGET_SELECTOR, *budget_series(instant))
        .reduce_options(last_value())
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .color_mode(common_models.BigValueColorMode.VALUE)
        .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME)
        .orientation(common_models.VizOrientation.VERTICAL)
        .override_by_regexp(r"Spend \(.*\)", [fixed_color("blue")])
        .override_by_regexp(r"Limit \(.*\)", [fixed_color("text")])
        .override_by_regexp(r"Forecast \(.*\)", [fixed_color("purple")])
    )


DASHED = prop("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})


def budget_timeseries() -> timeseries.Panel:
    panel = described(
        timeseries.Panel(),
        "Spend over the period",
        "Spend so far in the period, with the limit (red, dashed) and the forecast for the "
        "end of the period (purple, dotted). Spend drops to zero when a new period starts.",
        12,
    )
    return (
        money(panel, "budget_limit_amount", BUDGET_SELECTOR, *budget_series(query))
        .fill_opacity(10)
        .line_width(2)
        .span_nulls(True)
        .legend(legend(calcs=["lastNotNull"]))
        .tooltip(tooltip())
        .override_by_regexp(r"Spend \(.*\)", [fixed_color("blue")])
        .override_by_regexp(
            r"Limit \(.*\)", [fixed_color("red"), DASHED, prop("custom.fillOpacity", 0)]
        )
        .override_by_regexp(
            r"Forecast \(.*\)",
            [
                fixed_color("purple"),
                prop("custom.lineStyle", {"fill": "dot", "dash": [0, 10]}),
                prop("custom.fillOpacity", 0),
            ],
        )
    )


def burn_timeseries() -> timeseries.Panel:
    panel = described(
        timeseries.Panel(),
        "Burn rate vs sustainable rate",
        "Spend per day over the last hour, 6 hours and day, against the rate (red, dashed) "
        "that would use up exactly what is left of the limit by the end of the period. A burn "
        "rate above the red line runs out before the period ends.",
        12,
    )
    rates = [
        query(f"{per_budget(spend_rate(window))} * {DAY}", ref, f"{window} ({{{{budget}}}})")
        for ref, window in zip("ABC", RATE_WINDOWS, strict=True)
    ]
    sustainable = query(f"{per_budget(SUSTAINABLE)} * {DAY}", "D", "Sustainable ({{budget}})")
    return (
        money(panel, "budget_limit_amount", BUDGET_SELECTOR, *rates, sustainable)
        .fill_opacity(0)
        .line_width(2)
        .span_nulls(True)
        .legend(legend(calcs=["lastNotNull"]))
        .tooltip(tooltip())
        .override_by_regexp(r"Sustainable \(.*\)", [fixed_color("red"), DASHED])
    )


def billed_metered_timeseries() -> timeseries.Panel:
    panel = described(
        timeseries.Panel(),
        "Billed and metered spend",
        "The budget's spend split by where it comes from, stacked: billed (green), from "
        "billing APIs up to their data horizons, and metered (orange), from metered sources "
        "after the horizons. The stack is the budget's spend; metered is 0 without a meter.",
        12,
    )
    parts = [
        query(
            per_budget(f"budget_{metric}_spend_amount"),
            ref,
            f"{name} ({{{{budget}}}}{{{{exporter}}}})",
        )
        for ref, metric, name in (("A", "billed", "Billed"), ("B", "metered", "Metered"))
    ]
    return (
        money(panel, "budget_limit_amount", BUDGET_SELECTOR, *parts)
        .fill_opacity(30)
        .line_width(1)
        .span_nulls(True)
        .stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL).group("A")
        )
        .legend(legend(calcs=["lastNotNull"]))
        .tooltip(tooltip())
        .override_by_regexp(r"Billed \(.*\)", [fixed_color("green")])
        .override_by_regexp(r"Metered \(.*\)", [fixed_color("orange")])
    )


def budget_sources_table() -> table.Panel:
    by = "source, provider"
    panel = described(
        table.Panel(),
        "Sources of $budget",
        "The sources the budget's figures come from (budget_source_info): Up, Late (no "
        "successful poll for two of the source's poll intervals), Stale (three) or Down (the "
        "last poll failed), and the age of their figures.",
        12,
    )
    return (
        panel.with_target(instant(budget_sources(source_state(), "max", by), "A", True))
        .with_target(instant(data_age(by), "B", table_format=True))
        .with_transformation(transform("merge", {}))
        .with_transformation(
            transform(
                "organize",
                {
                    "excludeByName": {"Time": True},
                    "indexByName": {"source": 0, "provider": 1, "Value #A": 2, "Value #B": 3},
                    "renameByName": {
                        "source": "Source",
                        "provider": "Provider",
                        "exporter": "Exporter",
                        "Value #A": "State",
                        "Value #B": "Data age",
                    },
                },
            )
        )
        .min(0)
        .unit("s")
        .override_by_name(
            "State",
            [
                prop("unit", "none"),
                prop("mappings", value_mappings(SOURCE_STATES)),
                prop("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
            ],
        )
    )


def overview() -> dashboard.Dashboard:
    board = (
        base_dashboard(
            "Budget overview",
            "budget-exporter-overview",
            "Spend against budgets across clouds, LLM APIs and SaaS APIs, from budget-exporter.",
            TIME_FROM,
        )
        .annotation(alerts_annotation())
        .with_variable(exporter_variables()[0])
        .with_variable(exporter_variables()[1])
        .with_variable(exporter_variables()[2])
        .with_variable(
            query_variable(
                "team",
                "Team",
                f"label_values(budget_limit_amount{{{EXPORTER_SELECTOR}}}, team)",
                "The team label of the budgets (a static label from the exporter's config).",
            )
        )
        .with_variable(
            query_variable(
                "currency",
                "Currency",
                f'label_values(budget_limit_amount{{{EXPORTER_SELECTOR}, team=~"$team"}}, '
                "currency)",
                "The currencies to show: one row of panels per currency (amounts are never "
                "added across currencies).",
            )
        )
        .with_variable(
            query_variable(
                "budget",
                "Budget",
                f'label_values(budget_limit_amount{{{EXPORTER_SELECTOR}, team=~"$team", '
                'currency=~"$currency"}, budget)',
                "The budgets to show; one row of detail panels is repeated for each.",
            )
        )
    )
    layout = Layout(board)
    layout.row("Budget alerts")
    layout.add(alerts_table())
    layout.row("Budgets in $currency", repeat="currency")
    layout.add(
        usage_bargauge(
            "Budget usage",
            "Spend as a share of each budget's limit, most used first. Each bar turns amber at "
            "the budget's own warning ratio and red at its stop ratio.",
            8,
            10,
        )
    )
    layout.add(budgets_table())
    layout.add(burn_table())
    layout.row("Budget: $budget", repeat="budget")
    layout.add(
        usage_bargauge(
            "Usage",
            "Spend as a share of the limit; amber from the budget's warning ratio, red from its "
            "stop ratio.",
            6,
            8,
        )
    )
    layout.add(budget_stats())
    layout.add(budget_timeseries())
    layout.add(burn_timeseries())
    layout.add(billed_metered_timeseries())
    layout.add(budget_sources_table())
    return board


# -- Breakdown -------------------------------------------------------------------

SOURCE_SELECTOR = f'{EXPORTER_SELECTOR}, provider=~"$provider", source=~"$source"'
COST_SELECTOR = f'{SOURCE_SELECTOR}, currency="$currency", period="$period"'


def cost_lines(selector: str = COST_SELECTOR, offset: str = "") -> str:
    """Each cost line once: copies from replicas (when merged) and scrape jobs merged."""
    return merged(with_exporter(f"budget_source_cost_amount{{{selector}}}{offset}"))


def spend_by(
    dimension: str, title: str, description: str, only_attributed: bool = False
) -> timeseries.Panel:
    """Spend so far in the period by one dimension, stacked, in the selected currency."""
    sel = COST_SELECTOR
    if only_attributed:
        sel = f'{sel}, {dimension}!=""'
    expr = f"sum by ({dimension}, currency, exporter) ({cost_lines(sel)})"
    if not only_attributed and dimension not in ("source", "provider"):
        # Lines without the dimension are named, not dropped: the total stays whole.
        expr = f'label_replace({expr}, "{dimension}", "{UNATTRIBUTED}", "{dimension}", "")'
    panel = described(timeseries.Panel(), title, description, 12)
    return (
        money(
            panel,
            "budget_source_cost_amount",
            COST_SELECTOR,
            query(expr, "A", f"{{{{{dimension}}}}} {{{{exporter}}}}"),
        )
        .fill_opacity(40)
        .line_width(1)
        .stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL).group("A")
        )
        .span_nulls(True)
        .legend(
            legend(common_models.LegendDisplayMode.TABLE, ["lastNotNull"])
            .placement(common_models.LegendPlacement.RIGHT)
            .sort_by("Last *")
            .sort_desc(True)
        )
        .tooltip(tooltip())
    )


STEP = "$__interval"
STEP_SECONDS = "($__interval_ms / 1000)"


def period_boundaries() -> str:
    """One series ``{period=...}`` for each period that started in the last step.

    Periods are UTC calendar periods, as in the exporter.
    """
    now, before = "vector(time())", f"vector(time() - {STEP_SECONDS})"
    changed = {
        "daily": f"floor({now} / {DAY}) != floor({before} / {DAY})",
        "monthly": f"month({now}) != month({before})",
        "quarterly": f"ceil(month({now}) / 3) != ceil(month({before}) / 3)",
        "yearly": f"year({now}) != year({before})",
    }
    return " or ".join(
        f'label_replace({test}, "period", "{period}", "", "")' for period, test in changed.items()
    )


def change_over_range() -> str:
    """Each cost line's change over the range, correct across the period's reset.

    The sum of its changes step by step, where a step across the start of the
    line's period counts the new period's spend so far (not the drop to it),
    and a line that appears counts its whole amount.  Credits and refunds that
    lower a line within a period count as negative change.
    """
    now, before = cost_lines(), cost_lines(offset=f" offset {STEP}")
    boundary = f"({period_boundaries()})"
    step = (
        f"(({now} - {before}) unless on (period) {boundary}) "
        f"or ({now} and on (period) {boundary}) "
        f"or ({now} unless {before})"
    )
    return f"sum_over_time(({step})[$__range:{STEP}])"


def top_movers() -> bargauge.Panel:
    labels = (
        "{{source}} {{service_name}} {{model}} {{charge_category}} {{sub_account_id}} "
        "{{region_id}} {{exporter}}"
    )
    change = change_over_range()
    movers = instant(f"sort_desc({change} and topk($topn, abs({change})))", "A", labels)
    panel = described(
        bargauge.Panel(),
        "Top $topn movers over the time range",
        "The cost lines whose spend changed most over the selected time range, up or down: "
        "the sum of each line's changes, where the start of a new period counts the new "
        "period's spend so far instead of the drop to it. Credits, refunds and corrections "
        "that lower a line show as negative (green) bars.",
        24,
        9,
    )
    return (
        panel.with_target(unit_query("budget_source_cost_amount", COST_SELECTOR))
        .with_target(movers)
        .with_transformation(unit_from_data())
        .decimals(2)
        .reduce_options(last_value())
        .display_mode(common_models.BarGaugeDisplayMode.BASIC)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .color_scheme(dashboard.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
        .thresholds(thresholds((None, "green"), (0, "blue")))
        .show_unfilled(True)
    )


def sources_up() -> stat.Panel:
    panel = described(
        stat.Panel(),
        "Sources up",
        "Whether the last poll of each source succeeded (budget_source_up).",
        6,
    )
    return (
        panel.with_target(
            instant(
                by_exporter("max", "source, provider", f"budget_source_up{{{SOURCE_SELECTOR}}}"),
                "A",
                "{{source}} {{exporter}}",
            )
        )
        .min(0)
        .max(1)
        .reduce_options(last_value())
        .mappings(
            [
                models.ValueMap(
                    options={
                        "0": models.ValueMappingResult(text="Down", color="red", index=0),
                        "1": models.ValueMappingResult(text="Up", color="green", index=1),
                    }
                )
            ]
        )
        .thresholds(thresholds((None, "red"), (1, "green")))
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME)
    )


def last_success_age() -> bargauge.Panel:
    interval = by_exporter(
        "max", "source", f"budget_source_poll_interval_seconds{{{SOURCE_SELECTOR}}}"
    )
    last = by_exporter(
        "max", "source", f"budget_source_last_success_timestamp_seconds{{{SOURCE_SELECTOR}}}"
    )
    bars = per_row_threshold_bars(
        "source", f"time() - {last}", f"2 * {interval}", f"3 * {interval}"
    )
    return (
        described(
            bars,
            "Time since last successful poll",
            "Age of each source's figures. Amber after two of the source's poll intervals, red "
            "after three, when BudgetDataStale starts counting down.",
            6,
        )
        .unit("s")
        .decimals(0)
        .thresholds(thresholds((None, "green"), (7200, "orange"), (10800, "red")))
    )


def api_requests() -> timeseries.Panel:
    panel = described(
        timeseries.Panel(),
        "Provider API requests by status",
        "Requests the exporter sent to each provider's API, by outcome: the monitor's own "
        "API usage (some billing APIs charge per request). Replicas are added up when merged, "
        "since each sends its own requests; a second scrape job is not.",
        12,
    )
    increase = f"increase(budget_source_api_requests_total{{{SOURCE_SELECTOR}}}[$__rate_interval])"
    return (
        panel.with_target(
            query(
                "sum by (source, status, exporter) ("
                + merged(with_exporter(increase), SCRAPE_JOB_LABELS)
                + ")",
                "A",
                "{{source}} {{exporter}} {{status}}",
            )
        )
        .unit("short")
        .min(0)
        .decimals(0)
        .draw_style(common_models.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL).group("A")
        )
        .legend(legend(common_models.LegendDisplayMode.TABLE, ["sum"]))
        .tooltip(tooltip())
        .override_by_regexp(".* ok$", [fixed_color("green")])
        .override_by_regexp(".* throttled$", [fixed_color("orange")])
        .override_by_regexp(".* (client_error|server_error|timeout|network)$", [fixed_color("red")])
    )


def poll_duration() -> timeseries.Panel:
    panel = described(
        timeseries.Panel(),
        "Poll duration",
        "How long the last poll of each source took, retries included.",
        12,
    )
    return (
        panel.with_target(
            query(
                by_exporter(
                    "max", "source", f"budget_source_poll_duration_seconds{{{SOURCE_SELECTOR}}}"
                ),
                "A",
                "{{source}} {{exporter}}",
            )
        )
        .unit("s")
        .min(0)
        .legend(legend(calcs=["lastNotNull", "max"]))
        .tooltip(tooltip())
    )


def config_reload() -> stat.Panel:
    panel = described(
        stat.Panel(),
        "Configuration",
        "Whether the exporter's last configuration (re)load succeeded, and how many exporters "
        "are scraped.",
        12,
    )
    return (
        panel.with_target(
            instant(
                f"min(budget_exporter_config_last_reload_successful{{{EXPORTER_SELECTOR}}})",
                "A",
                "Last reload",
            )
        )
        # Distinct exporters: two scrape jobs on one exporter share its instance.
        .with_target(
            instant(
                f"count(count by (instance) (budget_exporter_build_info{{{EXPORTER_SELECTOR}}}))",
                "B",
                "Exporters",
            )
        )
        .unit("none")
        .min(0)
        .reduce_options(last_value())
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME)
        .override_by_name(
            "Last reload",
            [
                prop(
                    "mappings",
                    [
                        models.ValueMap(
                            options={
                                "0": models.ValueMappingResult(text="Failed", color="red"),
                                "1": models.ValueMappingResult(text="OK", color="green"),
                            }
                        )
                    ],
                )
            ],
        )
        .override_by_name("Exporters", [fixed_color("blue")])
    )


def breakdown() -> dashboard.Dashboard:
    board = base_dashboard(
        "Budget breakdown",
        "budget-exporter-breakdown",
        "Where the money goes: spend so far in the period by provider, source, service, "
        "sub-account, region and LLM model, the biggest movers, and the exporter's own health. "
        "Opened from a budget in the overview, it shows that budget's sources.",
        "now-7d",
    )
    for variable in exporter_variables():
        board = board.with_variable(variable)
    board = (
        board.with_variable(
            query_variable(
                "period",
                "Period",
                f"label_values(budget_source_cost_amount{{{EXPORTER_SELECTOR}}}, period)",
                "Spend so far in the current daily, monthly, quarterly or yearly period. "
                "Monthly is always there; the others when a budget uses them.",
                multi=False,
            ).current(models.VariableOption(selected=True, text="monthly", value="monthly"))
        )
        .with_variable(
            query_variable(
                "currency",
                "Currency",
                f'label_values(budget_source_cost_amount{{{EXPORTER_SELECTOR}, period="$period"}}'
                ", currency)",
                "Spend is shown one currency at a time: amounts are never added across currencies.",
                multi=False,
            )
        )
        .with_variable(
            query_variable(
                "budget",
                "Budget",
                f'label_values(budget_source_info{{{EXPORTER_SELECTOR}, currency="$currency"}}, '
                "budget)",
                "Show only the sources of these budgets (budget_source_info). All: every source.",
            )
        )
        .with_variable(
            query_variable(
                "provider",
                "Provider",
                f"label_values(budget_source_up{{{EXPORTER_SELECTOR}}}, provider)",
                "The provider (aws, gcp, openai, http_json...) of the sources to show.",
            )
        )
        .with_variable(
            # budget_source_up has no budget label, so it matches only when Budget is All:
            # then every source is offered, else only the chosen budgets' sources.  No
            # custom "All" value: All means exactly the sources offered.
            query_variable(
                "source",
                "Source",
                'label_values({__name__=~"budget_source_info|budget_source_up", '
                f'{EXPORTER_SELECTOR}, budget=~"$budget", provider=~"$provider"}}, source)',
                "The sources to show: those of the chosen budgets.",
                all_value=None,
            )
        )
        .with_variable(
            dashboard.CustomVariable("topn")
            .label("Top N")
            .description("How many cost lines the movers panel shows.")
            .values("5,10,20,50")
            .current(models.VariableOption(selected=True, text="10", value="10"))
        )
    )
    layout = Layout(board)
    layout.row("Spend so far in the $period period, in $currency")
    dims: list[tuple[str, str, str, bool]] = [
        ("provider", "Spend by provider", "Spend so far in the period per provider.", False),
        ("source", "Spend by source", "Spend so far in the period per configured source.", False),
        (
            "service_name",
            "Spend by service",
            "Spend so far in the period per FOCUS service_name; lines a source does not "
            f"attribute to a service show as {UNATTRIBUTED}.",
            False,
        ),
        (
            "sub_account_id",
            "Spend by sub-account",
            "Spend so far in the period per FOCUS sub_account_id (AWS account, GCP project, "
            f"Azure subscription...); unattributed lines show as {UNATTRIBUTED}.",
            False,
        ),
        (
            "region_id",
            "Spend by region",
            "Spend so far in the period per FOCUS region_id; unattributed lines show as "
            f"{UNATTRIBUTED}.",
            False,
        ),
        (
            "charge_category",
            "Spend by charge category",
            "Spend so far in the period per FOCUS charge_category (usage, purchase, tax...); "
            f"unattributed lines show as {UNATTRIBUTED}.",
            False,
        ),
        (
            "model",
            "LLM spend by model",
            "Spend so far in the period per LLM model, for the sources that report one.",
            True,
        ),
    ]
    for dimension, title, description, only in dims:
        layout.add(spend_by(dimension, title, description, only_attributed=only))
    layout.row("Top movers")
    layout.add(top_movers())
    layout.row("Exporter health")
    layout.add(sources_up())
    layout.add(last_success_age())
    layout.add(api_requests())
    layout.add(poll_duration())
    layout.add(config_reload())
    return board


# -- output ----------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "budget-overview.json": overview,
    "budget-breakdown.json": breakdown,
}


MIN_GRAFANA = "11.0"
SCHEMA_VERSION = 39
"""The dashboard schema of Grafana 11.0, the oldest version the dashboards claim.

The SDK writes its own latest schema version (42, Grafana 12), which an older
Grafana would take for a schema from the future.  Nothing in these dashboards
needs 40-42: those migrations only normalise ``refresh`` to a string, drop the
timepicker's ``time_options`` and copy ``hideFrom.viz`` to ``hideFrom.tooltip``,
none of which these dashboards use, so Grafana 12 loads them unchanged.
``grafana/compat.py`` checks the fields against the Grafana 11.0 schema.
"""


def render() -> dict[str, str]:
    encoder = JSONEncoder(sort_keys=True, indent=2)
    out = {}
    for name, build in DASHBOARDS.items():
        board = build().build()
        board.schema_version = SCHEMA_VERSION
        out[name] = encoder.encode(board) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON on disk is stale")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        stale = [
            name
            for name, text in rendered.items()
            if not (args.out / name).is_file() or (args.out / name).read_text() != text
        ]
        extra = (
            sorted(p.name for p in args.out.glob("*.json") if p.name not in rendered)
            if args.out.is_dir()
            else []
        )
        for name in stale:
            print(f"{args.out / name}: stale, run python grafana/generate.py", file=sys.stderr)
        for name in extra:
            print(f"{args.out / name}: not generated by grafana/generate.py", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
