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


def state_mappings() -> list[models.ValueMapping]:
    return [
        models.ValueMap(
            options={
                value: models.ValueMappingResult(text=text, color=color, index=int(value))
                for value, (text, color) in STATES.items()
            }
        )
    ]


def query_variable(
    name: str,
    label: str,
    definition: str,
    description: str,
    multi: bool = True,
) -> dashboard.QueryVariable:
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
        var = var.all_value(".*").current(
            models.VariableOption(selected=True, text="All", value="$__all")
        )
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


# -- Budget overview -------------------------------------------------------------

BUDGET_SELECTOR = 'team=~"$team", currency="$currency", budget=~"$budget"'


def per_row_threshold_bars(name_label: str, value: str, warning: str, stop: str) -> bargauge.Panel:
    """One bar per ``name_label`` value, coloured at that row's own thresholds.

    ``value``, ``warning`` and ``stop`` are PromQL aggregated ``by
    (name_label)``.  They run as table queries (with a zero base) and are merged
    into one row per name; "Rows to fields" turns each row into a bar whose
    thresholds come from the row: green from 0, amber from ``warning``, red
    from ``stop``.  The panel's static thresholds apply only where Grafana
    lacks the transformation.
    """
    mappings: list[dict[str, Any]] = [
        {"fieldName": name_label, "handlerKey": "field.name"},
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
        .with_target(instant(value, "A", table_format=True))
        .with_target(instant(f"0 * ({warning})", "B", table_format=True))
        .with_target(instant(warning, "C", table_format=True))
        .with_target(instant(stop, "D", table_format=True))
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
    sel = BUDGET_SELECTOR
    bars = per_row_threshold_bars(
        "budget",
        f"max by (budget) (budget_usage_ratio{{{sel}}})",
        f"max by (budget) (budget_warning_threshold_ratio{{{sel}}})",
        f"max by (budget) (budget_stop_threshold_ratio{{{sel}}})",
    )
    return (
        described(bars, title, description, width, height)
        .unit("percentunit")
        .decimals(1)
        .max(1)
        .thresholds(thresholds((None, "green"), (0.8, "orange"), (0.95, "red")))
    )


def budgets_table() -> table.Panel:
    sel = BUDGET_SELECTOR
    by = "max by (budget, period)"
    columns = [
        ("A", f"{by} (budget_spend_amount{{{sel}}})", "Spend"),
        ("B", f"{by} (budget_limit_amount{{{sel}}})", "Limit"),
        ("C", f"{by} (budget_usage_ratio{{{sel}}})", "Usage"),
        ("D", f"{by} (budget_forecast_amount{{{sel}}})", "Forecast"),
        (
            "E",
            f"{by} (budget:budget_period_remaining_seconds:end_minus_time{{{sel}}}) / 86400",
            "Days left",
        ),
        ("F", f"{by} (budget:budget_state:thresholds{{{sel}}})", "State"),
    ]
    panel = described(
        table.Panel(),
        "All budgets in $currency",
        "Every budget of the selected currency with its spend, limit, usage, forecast for the "
        "end of the period, days left in the period and state (from the recording rule "
        "budget:budget_state:thresholds), most used first.",
        14,
        9,
    )
    money(
        panel,
        "budget_limit_amount",
        sel,
        *(instant(expr, ref, table_format=True) for ref, expr, _ in columns),
    )
    rename = {f"Value #{ref}": name for ref, _, name in columns}
    rename.update({"budget": "Budget", "period": "Period"})
    order = ["budget", "period", *(f"Value #{ref}" for ref, _, _ in columns)]
    panel = (
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
        .with_transformation(transform("sortBy", {"sort": [{"field": "Usage", "desc": True}]}))
        .sort_by([common_builders.TableSortByFieldState().display_name("Usage").desc(True)])
        .override_by_name(
            "Usage",
            [
                prop("unit", "percentunit"),
                prop("decimals", 1),
                # Neutral colour: each budget has its own thresholds, shown by State.
                prop("custom.cellOptions", {"type": "gauge", "mode": "basic"}),
                prop("max", 1),
                fixed_color("blue"),
            ],
        )
        .override_by_name("Days left", [prop("unit", "none"), prop("decimals", 1)])
        .override_by_name(
            "State",
            [
                prop("unit", "none"),
                prop("decimals", 0),
                prop("mappings", state_mappings()),
                prop("custom.cellOptions", {"type": "color-background", "mode": "basic"}),
            ],
        )
    )
    return panel


def budget_series(
    make: Callable[[str, str, str], prometheus.Dataquery],
) -> list[prometheus.Dataquery]:
    """Each budget's spend, limit and forecast (refs A, B, C), made by ``query`` or ``instant``."""
    return [
        make(
            f"max by (budget) (budget_{metric}_amount{{{BUDGET_SELECTOR}}})",
            ref,
            f"{name} ({{{{budget}}}})",
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


def budget_timeseries() -> timeseries.Panel:
    dashed = prop("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})
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
            r"Limit \(.*\)", [fixed_color("red"), dashed, prop("custom.fillOpacity", 0)]
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


def overview() -> dashboard.Dashboard:
    board = (
        base_dashboard(
            "Budget overview",
            "budget-exporter-overview",
            "Spend against budgets across clouds, LLM APIs and SaaS APIs, from budget-exporter.",
            TIME_FROM,
        )
        .with_variable(
            query_variable(
                "team",
                "Team",
                "label_values(budget_limit_amount, team)",
                "The team label of the budgets (a static label from the exporter's config).",
            )
        )
        .with_variable(
            query_variable(
                "currency",
                "Currency",
                'label_values(budget_limit_amount{team=~"$team"}, currency)',
                "Budgets are shown one currency at a time: amounts are never added across "
                "currencies.",
                multi=False,
            )
        )
        .with_variable(
            query_variable(
                "budget",
                "Budget",
                'label_values(budget_limit_amount{team=~"$team", currency="$currency"}, budget)',
                "The budgets to show; one row of detail panels is repeated for each.",
            )
        )
    )
    layout = Layout(board)
    layout.row("Budgets in $currency")
    layout.add(
        usage_bargauge(
            "Budget usage",
            "Spend as a share of each budget's limit, most used first. Each bar turns amber at "
            "the budget's own warning ratio and red at its stop ratio.",
            10,
            9,
        )
    )
    layout.add(budgets_table())
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
    return board


# -- Breakdown -------------------------------------------------------------------

COST_SELECTOR = 'currency="$currency", provider=~"$provider", source=~"$source"'
SOURCE_SELECTOR = 'provider=~"$provider", source=~"$source"'


def spend_by(
    dimension: str, title: str, description: str, only_attributed: bool = False
) -> timeseries.Panel:
    """Month-to-date spend by one dimension, stacked, in the selected currency."""
    sel = COST_SELECTOR
    if only_attributed:
        sel = f'{sel}, {dimension}!=""'
    expr = f"sum by ({dimension}, currency) ({merged(f'budget_source_cost_amount{{{sel}}}')})"
    if not only_attributed and dimension not in ("source", "provider"):
        # Lines without the dimension are named, not dropped: the total stays whole.
        expr = f'label_replace({expr}, "{dimension}", "{UNATTRIBUTED}", "{dimension}", "")'
    panel = described(timeseries.Panel(), title, description, 12)
    return (
        money(
            panel,
            "budget_source_cost_amount",
            COST_SELECTOR,
            query(expr, "A", f"{{{{{dimension}}}}}"),
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


def top_movers() -> bargauge.Panel:
    sel = COST_SELECTOR
    labels = (
        "{{source}} {{service_name}} {{model}} {{charge_category}} {{sub_account_id}} {{region_id}}"
    )
    # budget_source_cost_amount is a gauge (credits, refunds and corrections lower it), so
    # its change is delta(), not increase(), which would read every drop as a counter reset.
    change = merged(f"delta(budget_source_cost_amount{{{sel}}}[$__range])")
    movers = instant(f"sort_desc(topk($topn, {change}))", "A", labels)
    panel = described(
        bargauge.Panel(),
        "Top $topn movers over the time range",
        "The cost lines whose month-to-date spend grew most over the selected time range: "
        "delta() of the gauge, its last value minus its first (extrapolated to the edges of "
        "the range). Credits, refunds and corrections lower a line, so they count against its "
        "growth. A range that spans the start of a month shows the reset: each line's figure "
        "then drops by the old month's total, so pick a range within one month.",
        24,
        9,
    )
    return (
        money(panel, "budget_source_cost_amount", sel, movers)
        .reduce_options(last_value())
        .display_mode(common_models.BarGaugeDisplayMode.BASIC)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .color_scheme(
            dashboard.FieldColor()
            .mode(models.FieldColorModeId.CONTINUOUS_BL_PU)
            .series_by(models.FieldColorSeriesByMode.LAST)
        )
        .thresholds(thresholds((None, "blue")))
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
                f"max by (source, provider) (budget_source_up{{{SOURCE_SELECTOR}}})",
                "A",
                "{{source}}",
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
    interval = f"max by (source) (budget_source_poll_interval_seconds{{{SOURCE_SELECTOR}}})"
    bars = per_row_threshold_bars(
        "source",
        "time() - max by (source) "
        f"(budget_source_last_success_timestamp_seconds{{{SOURCE_SELECTOR}}})",
        f"2 * {interval}",
        f"3 * {interval}",
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
        "API usage (some billing APIs charge per request). Replicas are added up, since "
        "each sends its own requests; a second scrape job is not.",
        12,
    )
    return (
        panel.with_target(
            query(
                "sum by (source, status) ("
                + merged(
                    "increase(budget_source_api_requests_total"
                    f"{{{SOURCE_SELECTOR}}}[$__rate_interval])",
                    SCRAPE_JOB_LABELS,
                )
                + ")",
                "A",
                "{{source}} {{status}}",
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
                f"max by (source) (budget_source_poll_duration_seconds{{{SOURCE_SELECTOR}}})",
                "A",
                "{{source}}",
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
        "Whether the exporter's last configuration (re)load succeeded.",
        12,
    )
    return (
        panel.with_target(
            instant("min(budget_exporter_config_last_reload_successful)", "A", "Last reload")
        )
        # Distinct exporters: two scrape jobs on one exporter share its instance.
        .with_target(
            instant("count(count by (instance) (budget_exporter_build_info))", "B", "Exporters")
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
    board = (
        base_dashboard(
            "Budget breakdown",
            "budget-exporter-breakdown",
            "Where the money goes: month-to-date spend by provider, source, service, "
            "sub-account, region and LLM model, the biggest movers, and the exporter's own health.",
            "now-7d",
        )
        .with_variable(
            query_variable(
                "currency",
                "Currency",
                "label_values(budget_source_cost_amount, currency)",
                "Spend is shown one currency at a time: amounts are never added across currencies.",
                multi=False,
            )
        )
        .with_variable(
            query_variable(
                "provider",
                "Provider",
                'label_values(budget_source_cost_amount{currency="$currency"}, provider)',
                "The provider (aws, gcp, openai, http_json...) of the sources to show.",
            )
        )
        .with_variable(
            query_variable(
                "source",
                "Source",
                'label_values(budget_source_cost_amount{currency="$currency", '
                'provider=~"$provider"}, source)',
                "The configured sources to show.",
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
    layout.row("Month-to-date spend in $currency")
    dims: list[tuple[str, str, str, bool]] = [
        ("provider", "Spend by provider", "Month-to-date spend per provider.", False),
        ("source", "Spend by source", "Month-to-date spend per configured source.", False),
        (
            "service_name",
            "Spend by service",
            "Month-to-date spend per FOCUS service_name; lines a source does not attribute to "
            f"a service show as {UNATTRIBUTED}.",
            False,
        ),
        (
            "sub_account_id",
            "Spend by sub-account",
            "Month-to-date spend per FOCUS sub_account_id (AWS account, GCP project, Azure "
            f"subscription...); unattributed lines show as {UNATTRIBUTED}.",
            False,
        ),
        (
            "region_id",
            "Spend by region",
            f"Month-to-date spend per FOCUS region_id; unattributed lines show as {UNATTRIBUTED}.",
            False,
        ),
        (
            "charge_category",
            "Spend by charge category",
            "Month-to-date spend per FOCUS charge_category (usage, purchase, tax...); "
            f"unattributed lines show as {UNATTRIBUTED}.",
            False,
        ),
        (
            "model",
            "LLM spend by model",
            "Month-to-date spend per LLM model, for the sources that report one.",
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


def render() -> dict[str, str]:
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {name: encoder.encode(build().build()) + "\n" for name, build in DASHBOARDS.items()}


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
