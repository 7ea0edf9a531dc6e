"""``json_rates``: exchange rates for budgets (see :mod:`budget_exporter.providers._rates`)."""

from __future__ import annotations

from budget_exporter.providers import register
from budget_exporter.providers._rates import JsonRatesProvider

register(JsonRatesProvider)
