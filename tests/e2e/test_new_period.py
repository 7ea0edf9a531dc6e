"""End to end: the first minutes of a new month for a budget over a bill and its meter, with a
real Prometheus (issue 19, item 9).

A real Prometheus only answers for times it has seen, and a month starts at 00:00 UTC on the
1st: the application's counter around the latest such midnight M (at least 15 minutes ago) is
backfilled into the Prometheus' data directory with ``promtool`` before it starts
(tests/support/backfill.py), and the exporter runs in-process on a clock set to instants
around M.  Prometheus evaluates every query at the exporter's ``now`` (the ``time``
parameter), so it answers what it would have answered then.  The polls are run one by one at
chosen instants (what the scheduler would do at them; its delays are asserted), against the
shipped example ``examples/realtime-app-counters.yml`` (an OpenAI bill with ``settle_lag``
6h, its meter, ``fail_closed``), the bill an OpenAI Costs API fake, and beside it a budget of
a custom period spanning M over an ``http_json`` bill and a meter joined to it.

The counter ``budget_app_spend_amount_total{budget="agent"}``, sampled every 15 s:

* ``model="gpt-4o"``: 1000 and flat until M-30m, then $1/min until M, $10/min until M+3m,
  $40/min after;
* ``model="o3"``: born at M+1m, declared at 0 (the metering helper's way), then $5/min.

The OpenAI bill: $60 settled in the old month before its last day, whose open bucket has $7.50
(the meter counts that day instead); in the new month an open bucket of $0.75 (a partial day:
the meter counts it instead).  The ``http_json`` bill: $250 through M-20m.  Every expected
figure below is worked out by hand from these, as docs/realtime.md describes the seam: the bill
before its horizon, the meter after it, and at 00:00 on the 1st nothing of the old month.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.config.loader import load_config
from budget_exporter.runtime.engine import FIRST_RETRY_SECONDS, Engine
from budget_exporter.web.endpoints import ExporterServer
from tests.support import PROMETHEUS, ServiceSet
from tests.support.backfill import (
    Rate,
    Series,
    backfill,
    counter_points,
    last_month_start,
    openmetrics,
)
from tests.support.clock import Clock
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.paths import ROOT
from tests.support.tools import APT_PROMETHEUS, needs_tool

pytestmark = [pytest.mark.e2e, needs_tool(PROMETHEUS, install=APT_PROMETHEUS)]

EXAMPLE = ROOT / "examples" / "realtime-app-counters.yml"
STEP = timedelta(seconds=15)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def counter_text(m: datetime) -> str:
    """The application's counter around ``m`` (see the module's docstring)."""
    gpt = counter_points(
        m - DAY - 15 * MINUTE,
        m + 10 * MINUTE,
        1000.0,
        [Rate(m - 30 * MINUTE, 0.25), Rate(m, 2.5), Rate(m + 3 * MINUTE, 10.0)],
        STEP,
    )
    o3 = counter_points(m + MINUTE, m + 10 * MINUTE, 0.0, [Rate(m + MINUTE, 1.25)], STEP)
    labels = {"budget": "agent", "currency": "USD"}
    return openmetrics(
        "budget_app_spend_amount",
        "Spend recorded by the application.",
        [
            Series({**labels, "model": "gpt-4o"}, gpt),
            Series({**labels, "model": "o3"}, o3),
        ],
    )


def costs_page(month_start: datetime, days: int, amounts: dict[int, float]) -> dict[str, Any]:
    """An OpenAI Costs API page (``/v1/organization/costs``, ``bucket_width=1d``): one bucket
    a day from ``month_start`` for ``days`` days, the last one still open; ``amounts`` by
    day index (0 = the first day), days without one have no results."""
    buckets = []
    for index in range(days):
        start = month_start + index * DAY
        amount = amounts.get(index)
        results = [
            {
                "object": "organization.costs.result",
                "amount": {"value": amount, "currency": "usd"},
                "line_item": "Chat models",
                "project_id": "proj_agents",
            }
        ]
        buckets.append(
            {
                "object": "bucket",
                "start_time": int(start.timestamp()),
                "end_time": int((start + DAY).timestamp()),
                "results": results if amount else [],
            }
        )
    return {"object": "page", "data": buckets, "has_more": False, "next_page": None}


class Exporter:
    """The engine on a settable clock, served by the real web front on 127.0.0.1."""

    def __init__(self, config_file: Path, clock: Clock) -> None:
        self.clock = clock
        self.engine = Engine(load_config(config_file), clock=clock)
        self.server = ExporterServer(self.engine, "127.0.0.1:0")
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def at(self, moment: datetime, *sources: str) -> None:
        """Set the clock to ``moment`` and poll ``sources`` there, each having to succeed."""
        self.clock.now = moment.timestamp()
        for name in sources:
            assert self.engine.runners[name].poll(), self.source(name)["last_error"]

    def budget(self, name: str) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/api/v1/budgets", timeout=5)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = next(b for b in answer.json()["budgets"] if b["name"] == name)
        return found

    def source(self, name: str) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/api/v1/budgets", timeout=5).json()
        found: dict[str, Any] = next(s for s in answer["sources"] if s["name"] == name)
        return found

    def check(self, name: str, cost: float = 0.5) -> dict[str, Any]:
        answer = requests.post(
            f"{self.url}/api/v1/check", json={"budget": name, "cost": cost}, timeout=5
        )
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def meter_lines(self, source: str) -> dict[str, float]:
        """``budget_source_cost_amount`` of a meter by model, as ``/metrics`` serves it."""
        body = requests.get(f"{self.url}/metrics", timeout=5).text
        return {
            sample.labels["model"]: sample.value
            for family in text_string_to_metric_families(body)
            if family.name == "budget_source_cost_amount"
            for sample in family.samples
            if sample.labels["source"] == source
        }

    def close(self) -> None:
        self.server.shutdown()
        self.engine.stop(timeout=1)


@pytest.fixture
def bills() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    openai, invoice = FakeUpstream().start(), FakeUpstream().start()
    yield openai, invoice
    openai.stop()
    invoice.stop()


def configuration(
    path: Path, m: datetime, prometheus_url: str, openai_url: str, invoice_url: str
) -> Path:
    """The shipped example (its bill and meter pointed at the fakes, the budget's limit
    made $100) and a custom-period budget spanning ``m`` over an ``http_json`` bill and a
    meter joined to it."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["global"] |= {"retries": 0, "timeout": "2s"}  # one answer fails a poll
    openai, meter = doc["sources"]
    openai |= {"admin_key": "sk-admin-new-period", "base_url": f"{openai_url}/v1"}
    meter["url"] = prometheus_url
    first, last = (m - 3 * DAY).date(), (m + 9 * DAY).date()
    doc["sources"] += [
        {
            "name": "invoice",
            "provider": "http_json",
            "url": f"{invoice_url}/spend",
            "amount": "total",
            "currency": "USD",
            "period": f"{first}/{last}",
            "data_through": "through",
        },
        {**meter, "name": "invoice-meter", "metered_after": "invoice"},
    ]
    (agent,) = doc["budgets"]
    agent["limit"] = 100  # stop at $90 (the example's stop_ratio 0.9), warning at $80
    doc["budgets"].append(
        {
            "name": "sprint",
            "period": "custom",
            "start": str(first),
            "end": str(last),
            "limit": 10000,
            "currency": "USD",
            "sources": ["invoice", "invoice-meter"],
        }
    )
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_first_minutes_of_a_month_with_a_real_prometheus(
    tmp_path: Path, services: ServiceSet, bills: tuple[FakeUpstream, FakeUpstream]
) -> None:
    m = last_month_start(datetime.now(UTC), margin=timedelta(minutes=15))
    old_month = (m - DAY).replace(day=1)
    backfill(counter_text(m), tmp_path / "prometheus-data", tmp_path)
    prometheus = services.prometheus({})  # loads the blocks; scrapes nothing
    openai, invoice = bills
    invoice.default = Reply(json={"total": 250, "through": iso(m - 20 * MINUTE)})
    # The old month: $25 on its 10th, $35 on its next-to-last day, $7.50 so far on its last.
    old_days = (m - old_month).days
    amounts = {9: 25, old_days - 2: 35, old_days - 1: 7.5}
    openai.default = Reply(json=costs_page(old_month, old_days, amounts))
    config_file = configuration(
        tmp_path / "exporter.yml", m, prometheus.url, openai.url, invoice.url
    )
    exporter = Exporter(config_file, Clock((m - 5 * MINUTE).timestamp()))
    try:
        run(exporter, openai, m, old_month)
    finally:
        exporter.close()


def run(exporter: Exporter, openai: FakeUpstream, m: datetime, old_month: datetime) -> None:
    # 23:55 on the old month's last day: its settled $60, and the meter from that day's
    # 00:00 (the bill's horizon; its open $7.50 left out) to now: 25 minutes at $1/min.
    exporter.at(m - 5 * MINUTE, "openai", "invoice", "meter", "invoice-meter")
    agent = exporter.budget("agent")
    assert agent["window"]["start"] == iso(old_month)
    assert (agent["billed"], agent["metered"], agent["spend"]) == (60.0, 25.0, 85.0)
    assert agent["spend_by_source"][0]["data_through"] == iso(m - DAY)
    assert agent["state"] == "warning" and exporter.check("agent")["allowed"] is True
    # The custom period: $250 billed through 23:40, then the meter: 15 minutes at $1/min.
    assert exporter.budget("sprint")["spend"] == 265.0
    # The bill polls again at the boundary plus five seconds, not an interval (10m) later.
    assert exporter.engine.runners["openai"].next_delay() == pytest.approx(305)

    # 00:00:06: the meter polls, the bill answers 503. The old month's figures are not the
    # new month's: the budget has none, and fail_closed denies.
    openai.default = Reply(json=costs_page(m, 1, {0: 0.75}))
    openai.reply(Reply(status=503, json={"error": {"message": "try again"}}))
    exporter.at(m + timedelta(seconds=6), "meter")
    asked = len(openai.seen)
    assert exporter.engine.runners["openai"].poll() is False
    assert openai.seen[asked].query["start_time"] == str(int(m.timestamp()))  # the new month
    agent = exporter.budget("agent")
    assert agent["state"] == "unknown" and "spend" not in agent
    answer = exporter.check("agent")
    assert answer["allowed"] is False and answer["stale"] is True, answer
    assert answer["state"] == "unknown" and answer["policy"] == "fail_closed", answer
    # Retried with backoff: about a minute later, well within two (not an interval later).
    retry = exporter.engine.runners["openai"].next_delay()
    assert FIRST_RETRY_SECONDS * 0.9 <= retry <= FIRST_RETRY_SECONDS * 1.1
    # The retry, at the first sample after it is due (the meter's figures then hit a sample).
    due = 6 + retry
    seconds = math.ceil(due / STEP.total_seconds()) * STEP.total_seconds()
    assert seconds < 120
    exporter.at(m + timedelta(seconds=seconds), "openai")
    agent = exporter.budget("agent")
    # The bill answers for the new month (horizon 00:00): it alone counts, its open bucket
    # too, until the meter is polled against that horizon.
    assert agent["window"]["start"] == iso(m)
    assert agent["spend_by_source"][0]["data_through"] == iso(m)
    assert (agent["billed"], agent["metered"]) == (0.75, 0.0)
    assert agent["spend_by_source"][0]["meters_left_out"] == ["meter"]
    exporter.at(m + timedelta(seconds=seconds), "meter")
    # Then the meter from 00:00: gpt-4o at $10/min, o3 at $5/min from 00:01.
    minutes = seconds / 60
    expected = 10 * minutes + 5 * (minutes - 1)
    agent = exporter.budget("agent")
    assert (agent["billed"], agent["metered"]) == (0.0, expected)
    assert agent["spend_by_source"][0]["meters"] == ["meter"]
    assert exporter.check("agent")["allowed"] is True

    # 00:02, 00:04, 00:04:15: the meters only (the bill's next poll is minutes away).
    for at, gpt, o3, state, sprint in [
        (2 * MINUTE, 20.0, 5.0, "ok", 250 + 20 + 20 + 5),
        (4 * MINUTE, 70.0, 15.0, "warning", 250 + 20 + 70 + 15),
        (4 * MINUTE + STEP, 80.0, 16.25, "stop", 250 + 20 + 80 + 16.25),
    ]:
        exporter.at(m + at, "meter", "invoice-meter")
        agent = exporter.budget("agent")
        where = f"at 00:{at.seconds // 60:02d}:{at.seconds % 60:02d}: {json.dumps(agent)}"
        assert agent["state"] == state, where
        assert (agent["billed"], agent["metered"], agent["spend"]) == (0.0, gpt + o3, gpt + o3)
        assert agent["stale"] is False and agent["spend_by_source"][0]["meter_blind"] is None
        # The series born at 00:01, declared at zero, counts whole.
        assert exporter.meter_lines("meter") == {"gpt-4o": gpt, "o3": o3}, where
        answer = exporter.check("agent")
        assert answer["allowed"] is (gpt + o3 + 0.5 <= 90), (where, answer)
        assert (answer["spend"], answer["state"], answer["stale"]) == (gpt + o3, state, False)
        # Across the midnight: the invoice through 23:40, the meter from there to now.
        assert exporter.budget("sprint")["spend"] == sprint, where
