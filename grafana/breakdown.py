"""The budget breakdown dashboard: where the money goes, the top movers, the exporter's health.

Opened from a budget in the overview, it shows that budget's sources (docs/dashboards.md).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, dashboard, stat, table, timeseries
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from panels import (
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
    unit_from_data,
    unit_query,
    value_mappings,
)
from promql import (
    CONVERTED,
    CONVERTED_NATIVE,
    COST_SELECTOR,
    EXPORTER_SELECTOR,
    LEFT_OUT_REASONS,
    SCRAPE_JOB_LABELS,
    SOURCE_SELECTOR,
    UNCONVERTED,
    applied_rate,
    by_exporter,
    change_over_range,
    conversion,
    cost_lines,
    left_out_reason,
    merged,
    native_spend,
    rates_into_currency,
    with_exporter,
)

TIME_FROM = "now-7d"
UNATTRIBUTED = "(unattributed)"
"""How spend a source does not attribute to a dimension is named."""
OTHER_CURRENCIES = "Spend in other currencies"
"""The table of the budgets' spend in other currencies: native, converted, left out."""
ONLY_THIS_CURRENCY = (
    "Only lines in $currency: a source's lines in another currency, which a budget in "
    f"$currency counts converted at a rates source's rate, are in {OTHER_CURRENCIES} below, "
    "in their own currency and converted."
)
"""Said by every spend panel: converted spend is not in them, and where it is."""
LEFT_OUT_STATES = {"0": ("Converted", "green")} | {
    str(number): (reason.replace("_", " ").capitalize(), "red" if reason == "no_rate" else "orange")
    for reason, number in LEFT_OUT_REASONS.items()
}
"""How left_out_reason()'s numbers read: Converted, No rate, Stale rate."""


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
    panel = described(timeseries.Panel(), title, f"{description} {ONLY_THIS_CURRENCY}", 12)
    return (
        money(
            panel,
            "budget_source_cost_amount",
            COST_SELECTOR,
            query(expr, "A", f"{{{{{dimension}}}}} {{{{exporter}}}}"),
        )
        .fill_opacity(40)
        .line_width(1)
        .stacking(stacked())
        .span_nulls(True)
        .legend(
            legend(common_models.LegendDisplayMode.TABLE, ["lastNotNull"])
            .placement(common_models.LegendPlacement.RIGHT)
            .sort_by("Last *")
            .sort_desc(True)
        )
        .tooltip(tooltip())
    )


def other_currencies_table() -> table.Panel:
    """Per budget, source and other currency: the native spend, the converted part, what is
    left out and why.  Never a sum across currencies: each row is one native currency."""
    panel = described(
        table.Panel(),
        f"{OTHER_CURRENCIES}, counted in $currency",
        "What the chosen budgets in $currency count of their sources' spend in other "
        "currencies, per budget, source and native currency: the native amount, in that "
        f"currency (what the budget counts before conversion, its match applied: "
        f"{CONVERTED_NATIVE}; or what it leaves out), the part the budget counts converted at "
        f"a rates source's rate, in $currency ({CONVERTED}), the rate applied (one unit of "
        f"the native currency in $currency), and what it leaves out for want of a fresh rate, "
        f"in the native currency ({UNCONVERTED}), with the reason: no rate for the pair, or "
        "only a stale one. The published rates are in the table beside.",
        16,
        8,
    )
    columns = [
        ("A", native_spend(), "Native spend"),
        ("B", conversion(CONVERTED), "Converted"),
        ("E", applied_rate(), "Rate applied"),
        ("C", conversion(UNCONVERTED), "Left out"),
        ("D", left_out_reason(), "Status"),
    ]
    money(
        panel,
        "budget_source_info",
        f'{EXPORTER_SELECTOR}, currency="$currency", period="$period"',
        *(instant(expr, ref, table_format=True) for ref, expr, _ in columns),
    )
    rename = {f"Value #{ref}": name for ref, _, name in columns}
    rename.update(
        {
            "budget": "Budget",
            "period": "Period",
            "source": "Source",
            "native_currency": "Native currency",
            "currency": "Currency",
            "exporter": "Exporter",
        }
    )
    values = [f"Value #{ref}" for ref, _, _ in columns]
    order = ["budget", "period", "source", "native_currency", *values, "currency", "exporter"]
    native_amount = [prop("unit", "none"), prop("decimals", 2)]
    return (
        panel.with_transformation(transform("merge", {}))
        .with_transformation(organize(order, rename))
        .with_transformation(transform("sortBy", {"sort": [{"field": "Converted", "desc": True}]}))
        # The unit of $currency is for the converted column only: the native amounts are
        # each in their row's native currency.
        .override_by_name("Native spend", native_amount)
        .override_by_name("Left out", native_amount)
        .override_by_name("Rate applied", [prop("unit", "none"), prop("decimals", 4)])
        .override_by_name(
            "Status",
            [
                prop("unit", "none"),
                prop("decimals", 0),
                prop("mappings", value_mappings(LEFT_OUT_STATES)),
                color_background(),
            ],
        )
    )


def exchange_rates_table() -> table.Panel:
    """The published rates that convert the other currencies into $currency."""
    panel = described(
        table.Panel(),
        "Exchange rates into $currency",
        "The rates the rates sources published (budget_exchange_rate) that convert the "
        "currencies of the table beside into $currency: one unit of the native currency in "
        "$currency, directly, as the inverse of a $currency rate, or across through a third "
        "currency (Via) both are published from by one source for one day, with the day "
        "(empty for a fixed rate). Of the rates that are not stale the exporter uses the "
        "newest; at a tie direct, then inverse, then cross; then the rates source listed "
        "first.",
        8,
        8,
    )
    order = ["native_currency", "Value", "kind", "base", "source", "date", "exporter"]
    return (
        panel.with_target(instant(rates_into_currency(), "A", table_format=True))
        .with_transformation(
            organize(
                order,
                {
                    "native_currency": "Native currency",
                    "Value": "1 unit in $currency",
                    "kind": "Kind",
                    "base": "Via",
                    "source": "Rates source",
                    "date": "Date",
                    "exporter": "Exporter",
                },
            )
        )
        .with_transformation(
            transform("sortBy", {"sort": [{"field": "Native currency", "desc": False}]})
        )
        .unit("none")
        .min(0)
    )


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
        .mappings(value_mappings({"0": ("Down", "red"), "1": ("Up", "green")}))
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
        .stacking(stacked())
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
                mapped(
                    {
                        "0": models.ValueMappingResult(text="Failed", color="red"),
                        "1": models.ValueMappingResult(text="OK", color="green"),
                    }
                )
            ],
        )
        .override_by_name("Exporters", [fixed_color("blue")])
    )


def build() -> dashboard.Dashboard:
    """The budget breakdown (uid budget-exporter-breakdown)."""
    board = base_dashboard(
        "Budget breakdown",
        "budget-exporter-breakdown",
        "Where the money goes: spend so far in the period by provider, source, service, "
        "sub-account, region and LLM model, spend in other currencies (native and converted), "
        "the biggest movers, and the exporter's own health. "
        "Opened from a budget in the overview, it shows that budget's sources.",
        TIME_FROM,
    )
    for variable in exporter_variables():
        board = board.with_variable(variable)
    board = (
        board.with_variable(
            query_variable(
                "period",
                "Period",
                f"label_values(budget_source_cost_amount{{{EXPORTER_SELECTOR}}}, period)",
                "Spend so far in the current period: the calendar month (always there), or any "
                "other period a budget uses: daily, weekly, quarterly, yearly, fiscal ones "
                "(yearly-april...) and custom ranges (2026-04-01/2026-09-30).",
                multi=False,
            ).current(models.VariableOption(selected=True, text="monthly", value="monthly"))
        )
        .with_variable(
            query_variable(
                "currency",
                "Currency",
                'label_values({__name__=~"budget_source_cost_amount|budget_source_info", '
                f'{EXPORTER_SELECTOR}, period="$period"}}, currency)',
                "Spend is shown one currency at a time: amounts are never added across "
                "currencies. The currencies of the sources' lines and of the budgets: a budget's "
                "spend in other currencies is under Spend in other currencies.",
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
    layout.row(f"{OTHER_CURRENCIES}, counted in $currency")
    layout.add(other_currencies_table())
    layout.add(exchange_rates_table())
    layout.row("Top movers")
    layout.add(top_movers())
    layout.row("Exporter health")
    layout.add(sources_up())
    layout.add(last_success_age())
    layout.add(api_requests())
    layout.add(poll_duration())
    layout.add(config_reload())
    return board
