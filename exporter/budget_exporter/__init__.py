"""budget-exporter: spend against budgets as Prometheus metrics."""

__version__ = "0.1.0"
