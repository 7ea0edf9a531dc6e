"""End to end: a hold's recorded cost keeps counting until a real meter poll covers it.

An application (this test, through the guard and a metering helper served on
127.0.0.1) records what a held operation cost; Prometheus scrapes it every
second; the exporter polls a ``prometheus`` meter every second with
``visible_after: 3s``.  From the release on, the budget's spend plus its held
amount never dips below what was spent, and the cost counts twice (held and
metered) for no longer than ``visible_after`` plus one meter poll and the
snapshot's rebuild, as docs/check-api.md says.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from budget_exporter.guard import BudgetGuard
from budget_exporter.metering import Meter
from tests.support import PROMETHEUS, ServiceSet, free_port, prom_query, wait_until
from tests.support.tools import APT_PROMETHEUS, needs_tool

pytestmark = [pytest.mark.e2e, needs_tool(PROMETHEUS, install=APT_PROMETHEUS)]

BILLED = 20.0
VISIBLE_AFTER = 3.0
POLL = 1.0
REBUILD = 1.0  # the longest a finished poll waits for the snapshot that serves it
SLACK = 1.5  # sampling every 0.2 s, and a loaded machine


def budget(url: str) -> dict[str, Any]:
    doc = requests.get(f"{url}/api/v1/budgets", timeout=5).json()
    found: dict[str, Any] = next(b for b in doc["budgets"] if b["name"] == "agent")
    return found


def test_a_recorded_cost_counts_until_the_meter_shows_it(
    tmp_path: Path, services: ServiceSet
) -> None:
    registry = CollectorRegistry()
    meter = Meter(registry)
    meter.counter.labels("agent", "", "USD")  # the series exists (at 0) before any spend
    app_port, exporter_port = free_port(), free_port()
    server, thread = start_http_server(app_port, addr="127.0.0.1", registry=registry)
    try:
        prometheus = services.prometheus({"app": [f"127.0.0.1:{app_port}"]})
        config = {
            "global": {
                "timeout": "1s",
                "retries": 0,
                "check": {
                    "max_data_age": "1h",
                    "holds": {"visible_after": f"{VISIBLE_AFTER:g}s", "record_ttl": "10m"},
                },
            },
            "sources": [
                {"name": "bill", "provider": "static", "amount": BILLED, "currency": "USD"},
                {
                    "name": "meter",
                    "provider": "prometheus",
                    "url": prometheus.url,
                    "poll_interval": f"{POLL:g}s",
                    "currency": "USD",
                    "query": 'sum(increase(budget_app_spend_amount_total{budget="agent"}[{range}]))',
                },
            ],
            "budgets": [
                {"name": "agent", "limit": 100, "currency": "USD", "sources": ["bill", "meter"]}
            ],
        }
        config_file = tmp_path / "exporter.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        exporter = services.exporter(config_file, port=exporter_port, lifecycle=False)
        wait_until(
            lambda: prom_query(
                prometheus, "count_over_time(budget_app_spend_amount_total[1m]) >= 2"
            ),
            20,
            "Prometheus to scrape the application",
        )
        wait_until(lambda: budget(exporter.url).get("spend") == BILLED, 20, "the meter at zero")

        guard = BudgetGuard(exporter.url, timeout=5, fail_open=False, meter=meter)
        with guard.spending("agent", cost=10) as spend:
            assert budget(exporter.url)["held"] == 10.0  # in flight: held, not yet spent
            spend.record(8)
        released = time.monotonic()

        lowest = float("inf")
        twice: list[float] = []
        deadline = released + 30
        while time.monotonic() < deadline:
            figures = budget(exporter.url)
            now = time.monotonic()
            lowest = min(lowest, figures["spend"] + figures["held"])
            if figures["held"] >= 8 and figures["spend"] >= BILLED + 8 - 0.01:
                twice.append(now - released)
            if figures["held"] == 0 and figures["spend"] >= BILLED + 8 - 0.01:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the meter never covered the recorded cost: {figures}")
        # The spend never dipped between the release and the meter ...
        assert lowest >= BILLED + 8 - 0.01, lowest
        # ... and it counted twice for no longer than documented.
        if twice:
            assert twice[-1] - twice[0] <= VISIBLE_AFTER + POLL + REBUILD + SLACK, twice
        assert twice == [] or twice[-1] <= VISIBLE_AFTER + 2 * POLL + REBUILD + SLACK + 2
    finally:
        server.shutdown()
        thread.join(5)
