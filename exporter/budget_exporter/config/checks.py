"""Cross-checks of a built :class:`Config`: what no single model can see on its own
(ratios against ``global``, budgets against the sources they name, meters against
the bills they continue).  Each problem is one :class:`ConfigError`."""

from __future__ import annotations

import logging
import re

from budget_exporter.config.schema import Config
from budget_exporter.config.tuning import BudgetTuning, horizon_problem, resolve
from budget_exporter.core.durations import format_duration
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.model import Period
from budget_exporter.core.periods import supports
from budget_exporter.providers.base import SourceConfig

log = logging.getLogger(__name__)


def check_config(config: Config) -> None:
    """Run every cross-check; raise the first problem found."""
    check_ratios(config)
    check_horizons(config)
    check_budget_sources(config)
    check_joins(config)
    check_data_ages(config)


def check_ratios(config: Config) -> None:
    """Each warning ratio, global and per budget, is below its stop ratio."""
    global_ = config.global_
    if global_.warning_ratio >= global_.stop_ratio:
        raise ConfigError(
            config.file,
            "global.warning_ratio",
            f"{global_.warning_ratio} must be below stop_ratio {global_.stop_ratio}",
        )
    for index, budget in enumerate(config.budgets):
        warning, stop = config.warning_ratio(budget), config.stop_ratio(budget)
        if warning >= stop:
            field_name = "warning_ratio" if budget.warning_ratio else "stop_ratio"
            raise ConfigError(
                config.file,
                f"budgets[{index}].{field_name}",
                f"warning ratio {warning} must be below stop ratio {stop}",
            )


def check_horizons(config: Config) -> None:
    """The burn-rate horizons, global and per budget, are in order."""
    problem = horizon_problem(resolve(config.global_, BudgetTuning()), BudgetTuning())
    if problem is not None:
        raise ConfigError(config.file, f"global.{problem[0]}", problem[1])
    for index, budget in enumerate(config.budgets):
        problem = horizon_problem(config.alert_tuning(budget), budget)
        if problem is not None:
            raise ConfigError(config.file, f"budgets[{index}].{problem[0]}", problem[1])


def check_data_ages(config: Config) -> None:
    """A source's ``max_data_age``, its own or ``global.check``'s, leaves room for a poll."""
    for index, source in enumerate(config.sources):
        if source.max_data_age is not None and source.max_data_age <= config.poll_interval(source):
            raise ConfigError(
                config.file,
                f"sources[{index}].max_data_age",
                "must be longer than the source's poll interval (else its data is stale "
                "between two polls)",
            )
    everywhere = config.global_.check.max_data_age
    if everywhere is None:
        return
    for source in config.sources:
        interval = config.poll_interval(source)
        if source.max_data_age is None and everywhere <= interval:
            log.warning(
                "%s: global.check.max_data_age (%s) is not longer than the poll interval of "
                "source %r (%s): its budgets are stale between two polls; lengthen it, or give "
                "that source a max_data_age of its own",
                config.file,
                format_duration(everywhere),
                source.name,
                format_duration(interval),
            )


def check_joins(config: Config) -> None:
    """A metered source's ``metered_after`` names a billed source with a data horizon,
    and every budget that counts the meter counts that bill too."""
    by_name = {s.name: s for s in config.sources}
    for index, source in enumerate(config.sources):
        billed = source.billed_source()
        if billed is None:
            continue
        where = f"sources[{index}].metered_after"
        target = by_name.get(billed)
        if target is None:
            raise ConfigError(config.file, where, f"unknown source {billed!r}")
        if target.billed_source() is not None:
            raise ConfigError(
                config.file, where, f"source {billed!r} is itself metered after another"
            )
        if not config.provider_class(target).has_horizon(target):
            raise ConfigError(
                config.file,
                where,
                f"source {billed!r} ({target.provider}) does not report a data horizon, so "
                "there is no point after which to count the meter (see docs/realtime.md)",
            )
        for pos, budget in enumerate(config.budgets):
            names = {s.name for s in config.budget_sources(budget)}
            if source.name in names and billed not in names:
                raise ConfigError(
                    config.file,
                    f"budgets[{pos}].sources",
                    f"counts the metered source {source.name!r} but not {billed!r}, the bill "
                    "it continues: add it (the meter alone covers only the time after the "
                    "bill's horizon)",
                )
            if source.name in names:
                _check_meter_match(config, pos, budget.match, source)


def _check_meter_match(
    config: Config, pos: int, match: dict[str, str], source: SourceConfig
) -> None:
    """A budget's ``match`` on a dimension the meter's lines never have: the meter could
    never count the spend the bill's open part holds (docs/realtime.md)."""
    known = source.dimension_names()
    if known is None:
        return
    for key, wanted in sorted(match.items()):
        if key in known or _matches_empty(wanted):
            continue
        have = ", ".join(sorted(known)) or "none"
        raise ConfigError(
            config.file,
            f"budgets[{pos}].match.{key}",
            f"the metered source {source.name!r} has no {key!r} dimension (it has: {have}), "
            f"so it would never count this budget's spend after the bill's horizon: add "
            f"{key} to its dimensions, mapped to the label that holds the same values as "
            "the bill's",
        )


def _matches_empty(wanted: str) -> bool:
    """A match value a missing dimension (``""``) passes."""
    if len(wanted) >= 2 and wanted.startswith("/") and wanted.endswith("/"):
        try:
            return re.fullmatch(wanted[1:-1], "") is not None
        except re.error:
            return False
    return wanted == ""


def check_budget_sources(config: Config) -> None:
    """Every source a budget names exists and reports spend for the budget's period."""
    names = {s.name for s in config.sources}
    rates = {s.name for s in config.rate_sources}
    for index, budget in enumerate(config.budgets):
        for pos, name in enumerate(budget.sources or ()):
            if name != "*" and name not in names:
                raise ConfigError(
                    config.file, f"budgets[{index}].sources[{pos}]", f"unknown source {name!r}"
                )
            if name in rates:
                raise ConfigError(
                    config.file,
                    f"budgets[{index}].sources[{pos}]",
                    f"source {name!r} reports exchange rates, not spend: every budget uses "
                    "them to convert other currencies (docs/currencies.md)",
                )
        if budget.limit_from is not None and budget.limit_from.source not in names:
            raise ConfigError(
                config.file,
                f"budgets[{index}].limit_from.source",
                f"unknown source {budget.limit_from.source!r}",
            )
        for source in config.polled_sources(budget):
            supported = config.provider_class(source).periods_for(source)
            if not supports(supported, budget.period):
                kinds = ", ".join(
                    sorted(str(p) for p in supported if p != Period.ANY)
                    + (["other ranges of whole days"] if Period.ANY in supported else [])
                )
                raise ConfigError(
                    config.file,
                    f"budgets[{index}].period",
                    f"source {source.name!r} ({source.provider}) reports only {kinds} spend, "
                    f"not {budget.period}: budget {budget.name!r} cannot count it",
                )
