"""Which budgets count a spend described by its source and dimensions (see
docs/check-api.md#checking-a-spend-by-its-description).  Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from budget_exporter.accounting.budgets import line_matches
from budget_exporter.config.schema import BudgetConfig, Config
from budget_exporter.core.model import DIMENSION_NAME, Period, SpendLine
from budget_exporter.providers.base import SourceConfig

FOCUS_DIMENSIONS = frozenset(
    {
        "billing_account_id",
        "charge_category",
        "model",
        "region_id",
        "service_name",
        "sub_account_id",
        "token_type",
    }
)
"""The FOCUS dimension names the providers use; a description may name these and any
dimension a budget's ``match`` or a source's ``dimensions`` setting names."""
MAX_DIMENSIONS = 32
MAX_VALUE_LENGTH = 256


class DescriptionError(ValueError):
    """A spend description the exporter cannot place (``status`` 400 or 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def related_sources(config: Config, source: SourceConfig) -> frozenset[str]:
    """``source`` and the sources showing the same spend: the bill a meter continues,
    or the meters joined to a bill."""
    names = {source.name}
    billed = source.billed_source()
    if billed is not None:
        names.add(billed)
    names.update(s.name for s in config.sources if s.billed_source() == source.name)
    return frozenset(names)


def known_dimensions(config: Config) -> frozenset[str]:
    """Dimension names a description may use."""
    found = set(FOCUS_DIMENSIONS)
    for budget in config.budgets:
        found.update(budget.match)
    for source in config.sources:
        dimensions = getattr(source, "dimensions", None)
        if isinstance(dimensions, Mapping):
            found.update(k for k in dimensions if isinstance(k, str))
    return frozenset(found)


def read_dimensions(value: object, known: frozenset[str]) -> dict[str, str]:
    """A description's ``dimensions``: an object of known names to strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DescriptionError(400, 'dimensions must be an object such as {"model": "gpt-4o"}')
    if len(value) > MAX_DIMENSIONS:
        raise DescriptionError(400, f"at most {MAX_DIMENSIONS} dimensions")
    for key, item in value.items():
        if not DIMENSION_NAME.match(key) or key not in known:
            names = ", ".join(sorted(known))
            raise DescriptionError(400, f"unknown dimension {key[:64]!r} (known: {names})")
        if not isinstance(item, str) or len(item) > MAX_VALUE_LENGTH:
            raise DescriptionError(
                400, f"dimension {key} must be a string of at most {MAX_VALUE_LENGTH} characters"
            )
    return dict(value)


def budgets_counting(
    config: Config, source: str, dimensions: Mapping[str, str]
) -> tuple[list[BudgetConfig], tuple[str, ...]]:
    """The budgets (in configuration order) that count a spend of ``source`` with
    ``dimensions``, and the metered sources whose polls will show it."""
    found = config.source_named(source)
    if found is None:
        raise DescriptionError(404, f"unknown source {source[:100]!r}")
    related = related_sources(config, found)
    line = SpendLine.of(Period.MONTHLY, Decimal(0), "USD", dimensions)
    candidates = {b.name for name in related for b in config.source_budgets(name)}
    budgets = [b for b in config.budgets if b.name in candidates and line_matches(line, b.match)]
    counted = {s.name for b in budgets for s in config.budget_sources(b)}
    meters = tuple(sorted(name for name in related & counted if _metered(config, name)))
    return budgets, meters


def metered_sources(config: Config, budgets: list[BudgetConfig]) -> tuple[str, ...]:
    """The metered sources among the budgets' sources (their polls show a recorded cost)."""
    names = {s.name for b in budgets for s in config.budget_sources(b)}
    return tuple(sorted(n for n in names if _metered(config, n)))


def _metered(config: Config, name: str) -> bool:
    source = config.source_named(name)
    return source is not None and config.provider_class(source).metered
