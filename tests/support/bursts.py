"""Many guards entering ``spending()`` at the same moment, in threads or processes."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from budget_exporter.guard import BudgetCheckError, BudgetExceeded, BudgetGuard
from budget_exporter.metering import Meter


def spend_once(url: str, barrier: Any, results: Any, budget: str = "team", cost: float = 5) -> None:
    """One worker with its own guard: wait for the others, then enter ``spending()``; put
    ``ran``, ``denied`` (a reachable exporter said no) or what else happened on ``results``."""
    guard = BudgetGuard(url, timeout=20, fail_open=False, meter=Meter(CollectorRegistry()))
    barrier.wait()
    try:
        with guard.spending(budget, cost=cost):
            outcome = "ran"
    except BudgetExceeded as exc:
        outcome = "denied" if exc.decision.reachable else f"unreachable: {exc.decision.reason}"
    except BudgetCheckError as exc:
        outcome = f"error: {exc}"
    results.put(outcome)


def outcomes(results: Any, n: int) -> list[str]:
    """The ``n`` workers' outcomes, sorted."""
    return sorted(results.get(timeout=60) for _ in range(n))
