"""The budget overview dashboard: every budget's usage, figures, burn rate and sources.

The view a team opens first (docs/dashboards.md); clicking a budget opens the breakdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from panels import (
    DASHED,
    DATASOURCE,
    Layout,
    base_dashboard,
    color_background,
    described,
    exporter_variables,
    fixed_color,
    instant,
    last_value,
    legend,
    mapped,
    money,
    organize,
    per_row_threshold_bars,
    prop,
    query,
    query_variable,
    stacked,
    thresholds,
    tooltip,
    transform,
    value_mappings,
)
from promql import (
    BUDGET_SELECTOR,
    DAY,
    EXPORTER_SELECTOR,
    RATE_WINDOWS,
    SUSTAINABLE,
    data_age,
    per_budget,
    source_states,
    spend_rate,
)

TIME_FROM = "now-30d"

STATES = {
    "0": ("OK", "green"),
    "1": ("Warning", "orange"),
    "2": ("Stop", "red"),
    "3": ("Exceeded", "dark-red"),
}

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


SOURCE_STATES = {
    "0": ("Up", "green"),
    "1": ("Late", "orange"),
    "2": ("Stale", "red"),
    "3": ("Down", "red"),
}


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
        .with_transformation(organize(order, rename))
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
        color_background(),
    ]


def state_cell(states: dict[str, tuple[str, str]]) -> list[models.DynamicConfigValue]:
    """A numeric state shown as a coloured word (``states``: value -> (text, colour))."""
    return [
        prop("unit", "none"),
        prop("decimals", 0),
        prop("mappings", value_mappings(states)),
        color_background(),
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
        ("H", source_states(), "Sources"),
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
            state_cell(STATES),
        )
        .override_by_name(
            "Sources",
            state_cell(SOURCE_STATES),
        )
        .override_by_name("Data age", [prop("unit", "s"), prop("decimals", 0)])
    )


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
                mapped(
                    {
                        "firing": models.ValueMappingResult(color="red", index=0),
                        "pending": models.ValueMappingResult(color="orange", index=1),
                    }
                ),
                color_background(),
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
        .stacking(stacked())
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
        panel.with_target(instant(source_states(by), "A", table_format=True))
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
                color_background(),
            ],
        )
    )


def build() -> dashboard.Dashboard:
    """The budget overview (uid budget-exporter-overview)."""
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
