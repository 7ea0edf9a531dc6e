"""budget-exporter: spend against budgets as Prometheus metrics."""

__version__ = "0.2.0"
