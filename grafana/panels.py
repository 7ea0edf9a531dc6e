"""Grafana building blocks both dashboards share: queries, panel options, variables, layout."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models.common import DataSourceRef
from promql import APART, MERGED, shown_as, unit_of_currency

TAGS = ["budget-exporter", "finops", "cost"]
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
REFRESH = "5m"

PanelT = TypeVar("PanelT", bargauge.Panel, stat.Panel, table.Panel, timeseries.Panel)


# -- queries -------------------------------------------------------------------------


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
    return instant(unit_of_currency(metric, selector), "UNIT", table_format=True)


# -- options ---------------------------------------------------------------------------


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


def organize(order: list[str], rename: dict[str, str]) -> models.DataTransformerConfig:
    """A table's columns in ``order`` (the others after them), renamed, the time left out."""
    return transform(
        "organize",
        {
            "excludeByName": {"Time": True},
            "indexByName": {name: i for i, name in enumerate(order)},
            "renameByName": rename,
        },
    )


def prop(id_val: str, value: Any) -> models.DynamicConfigValue:
    return models.DynamicConfigValue(id_val=id_val, value=value)


def fixed_color(color: str) -> models.DynamicConfigValue:
    return prop("color", {"mode": "fixed", "fixedColor": color})


DASHED = prop("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})


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


def stacked() -> common_builders.StackingConfig:
    """Series stacked on one another (group A)."""
    return common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL).group("A")


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


def mapped(options: dict[str, models.ValueMappingResult]) -> models.DynamicConfigValue:
    """An override's value mappings: each raw value (``options`` key) shown as its result."""
    return prop("mappings", [models.ValueMap(options=options)])


def color_background() -> models.DynamicConfigValue:
    """A table cell painted in its value's colour."""
    return prop("custom.cellOptions", {"type": "color-background", "mode": "basic"})


# -- panels ------------------------------------------------------------------------------


def described(panel: PanelT, title: str, description: str, width: int, height: int = 8) -> PanelT:
    """A panel's title, description and size on the 24-column grid."""
    return panel.title(title).description(description).span(width).height(height)


def money(panel: PanelT, metric: str, selector: str, *targets: prometheus.Dataquery) -> PanelT:
    """A money panel: the UNIT query on ``metric`` (first target), then ``targets``.

    The unit comes from the data: the UNIT query's ``unit`` label, the Grafana unit of
    ``$currency``, applied by "Config from query results".  Money has two decimals and
    never goes below zero.
    """
    panel.with_target(unit_query(metric, selector))
    for target in targets:
        panel.with_target(target)
    return panel.with_transformation(unit_from_data()).min(0).decimals(2)


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


# -- variables ----------------------------------------------------------------------------


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


# -- dashboards ----------------------------------------------------------------------------


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
