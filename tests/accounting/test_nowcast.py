"""The nowcast: a bill up to its data horizon joined to a meter after it (engine and budgets)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from budget_exporter.accounting.nowcast import joined_part
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.model import Period, PollResult, SpendLine, Window
from budget_exporter.runtime.engine import Engine
from budget_exporter.web.api import budgets_document
from budget_exporter.web.landing import render_landing
from tests.conftest import Clock
from tests.support.llm import parse_metrics

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
H0 = datetime(2026, 11, 20, tzinfo=UTC)  # the bill covers spend before midnight ...
H1 = datetime(2026, 11, 20, 6, tzinfo=UTC)  # ... and later, up to six o'clock
RATE = Decimal(2)  # the meter counts $2 a second

CONFIG = """
global: {poll_interval: 1h}
sources:
  - {name: bill, provider: http_json, url: "http://127.0.0.1:9/costs", amount: total,
     currency: USD, data_through: through}
  - {name: meter, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
     metered_after: bill, query: "sum(increase(spend_total[{range}]))"}
  - {name: other, provider: static, amount: 5, currency: USD}
budgets:
  - {name: llm, limit: 500000, currency: USD, sources: [bill, meter]}
  - {name: bill-only, limit: 500000, currency: USD, sources: [bill]}
  - {name: everything, limit: 500000, currency: USD}
"""


def usd(amount: Decimal | int) -> SpendLine:
    return SpendLine.of(Period.MONTHLY, Decimal(amount), "USD")


class Bill:
    """A billed source's answers: settled spend through a horizon, plus an open part."""

    def __init__(self, settled: int, horizon: datetime, unsettled: int = 0) -> None:
        self.settled, self.horizon, self.unsettled = settled, horizon, unsettled

    def poll(self, windows: Sequence[Window]) -> PollResult:
        open_part = (usd(self.unsettled),) if self.unsettled else ()
        return PollResult(
            lines=(usd(self.settled), *open_part),
            unsettled=open_part,
            data_through=self.horizon,
        )


class Meter:
    """What the prometheus provider answers: RATE x the seconds from the horizon to now."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.up = True

    def poll(self, windows: Sequence[Window]) -> PollResult:
        if not self.up:
            raise ConnectionError("prometheus is down")
        horizon = self.engine.runners["meter"]._context.horizon()
        now = self.engine.now()
        lines = []
        for window in windows:
            start = window.start if horizon is None else max(window.start, horizon)
            seconds = Decimal(int((now - start).total_seconds()))
            lines.append(SpendLine.of(window.period, RATE * seconds, "USD"))
        return PollResult(lines=tuple(lines), metered_from=horizon, metered=True)


@pytest.fixture
def setup(make_engine):
    clock = Clock(NOW.timestamp())
    engine = make_engine(CONFIG, clock=clock)
    bill, meter = Bill(400, H0, unsettled=7), Meter(engine)
    engine.runners["bill"].provider.poll = bill.poll  # type: ignore[method-assign]
    engine.runners["meter"].provider.poll = meter.poll  # type: ignore[method-assign]
    return engine, clock, bill, meter


def spend(engine: Engine, name: str) -> Decimal:
    view = engine.snapshot.budget(name)
    assert view is not None, f"budget {name} has no figures"
    return view.spend


def seconds(a: datetime, b: datetime) -> int:
    return int((b - a).total_seconds())


def test_the_bill_counts_up_to_its_horizon_and_the_meter_after_it(setup) -> None:
    engine, _, _, _ = setup
    for name in ("bill", "meter", "other"):
        assert engine.runners[name].poll()
    metered = RATE * seconds(H0, NOW)
    # The open bucket's $7 is time the meter covers: counted once, from the meter.
    assert spend(engine, "llm") == 400 + metered
    assert spend(engine, "bill-only") == 407  # no meter: the whole bill, open part included
    assert spend(engine, "everything") == 400 + metered + 5
    view = engine.snapshot.budget("llm")
    assert (view.billed, view.metered) == (400, metered)
    [part] = view.parts
    assert (part.source, part.data_through, part.meters) == ("bill", H0, ("meter",))
    assert engine.snapshot.budget("everything").billed == 405  # static counts as billed


def test_a_moving_horizon_neither_double_counts_nor_leaves_a_gap(setup) -> None:
    engine, clock, bill, _ = setup
    engine.runners["bill"].poll()
    engine.runners["meter"].poll()
    before = spend(engine, "llm")
    # The bill catches up to six o'clock and says those six hours cost $30,000, while
    # the meter counted 2 x 21,600 = $43,200 for them (it overcounts, say).
    bill.settled, bill.horizon = 400 + 30_000, H1
    meter_runner = engine.runners["meter"]
    scheduled: list[str] = []
    engine._schedule_new = lambda runner: scheduled.append(runner.source.name)
    engine.runners["bill"].poll()
    assert scheduled == ["meter"]  # the meter is polled again at once ...
    assert spend(engine, "llm") == before  # ... and until it is, the old pair still counts
    meter_runner.poll()
    moved = RATE * seconds(H0, H1)
    assert spend(engine, "llm") - before == 30_000 - moved  # the meter/bill difference only
    assert engine.snapshot.budget("llm").parts[0].data_through == H1
    # And the other way round: the bill says more than the meter for the next hours.
    h2 = H1 + timedelta(hours=2)
    before = spend(engine, "llm")
    bill.settled, bill.horizon = bill.settled + 20_000, h2
    engine.runners["bill"].poll()
    assert spend(engine, "llm") == before
    meter_runner.poll()
    assert spend(engine, "llm") - before == 20_000 - RATE * seconds(H1, h2)
    # Time passes: only the meter moves.
    clock.now += 10
    meter_runner.poll()
    assert spend(engine, "llm") - before == 20_000 - RATE * seconds(H1, h2) + 20


def test_a_meter_that_is_down_leaves_the_whole_bill(setup) -> None:
    engine, _, _, meter = setup
    meter.up = False
    engine.runners["bill"].poll()
    assert not engine.runners["meter"].poll()
    assert spend(engine, "llm") == 407  # billed spend still counts, nothing metered
    [part] = engine.snapshot.budget("llm").parts
    assert part.meters == () and part.meters_left_out == ("meter",)
    document = budgets_document(engine.snapshot, NOW.timestamp())
    llm = next(b for b in document["budgets"] if b["name"] == "llm")
    assert llm["stale"]  # the meter never answered: the check follows on_stale
    assert llm["spend_by_source"] == [
        {
            "source": "bill",
            "billed": 407.0,
            "metered": 0.0,
            "data_through": "2026-11-20T00:00:00Z",
            "meters": [],
            "meters_left_out": ["meter"],
            "meter_blind": None,
        }
    ]


def test_a_meter_down_across_horizon_moves_falls_back_to_the_bill(setup) -> None:
    engine, _, bill, meter = setup
    engine.runners["bill"].poll()
    engine.runners["meter"].poll()
    meter.up = False
    for hours in range(1, 6):  # more moves than earlier bills are kept
        bill.settled, bill.horizon, bill.unsettled = 400 + hours, H0 + timedelta(hours=hours), 3
        engine.runners["bill"].poll()
        engine.runners["meter"].poll()
    assert spend(engine, "llm") == 405 + 3  # never the stale meter on top of a newer bill


def test_once_polls_bills_before_their_meters(setup) -> None:
    engine, _, _, _ = setup
    assert engine.poll_all_once()
    assert spend(engine, "llm") == 400 + RATE * seconds(H0, NOW)


def test_the_landing_page_shows_the_split(setup) -> None:
    engine, _, _, _ = setup
    engine.poll_all_once()
    page = render_landing(engine.snapshot).decode()
    metered = RATE * seconds(H0, NOW)
    assert f"billed 400.00 USD + metered {metered:,.2f} USD after 2026-11-20 00:00:00 UTC" in page


def test_api_shows_billed_metered_and_the_horizon(setup) -> None:
    engine, _, _, _ = setup
    engine.poll_all_once()
    document = budgets_document(engine.snapshot, NOW.timestamp())
    llm = next(b for b in document["budgets"] if b["name"] == "llm")
    metered = float(RATE * seconds(H0, NOW))
    assert (llm["spend"], llm["billed"], llm["metered"]) == (400 + metered, 400.0, metered)
    assert llm["spend_by_source"][0]["data_through"] == "2026-11-20T00:00:00Z"
    series = parse_metrics(engine.snapshot.rendered.text.decode())
    through = "budget_source_data_through_timestamp_seconds"
    assert series[(through, frozenset({"source": "bill", "provider": "http_json"}.items()))] == (
        H0.timestamp()
    )
    assert not any(name == through and ("source", "meter") in labels for name, labels in series)


def test_gauges_split_every_budget_into_billed_and_metered(setup) -> None:
    engine, _, _, _ = setup
    engine.poll_all_once()
    series = parse_metrics(engine.snapshot.rendered.text.decode())
    metered = float(RATE * seconds(H0, NOW))

    def gauge(name: str, budget: str) -> float:
        labels = frozenset({"budget": budget, "currency": "USD", "period": "monthly"}.items())
        return series[(name, labels)]

    expected = {"llm": (400, metered), "bill-only": (407, 0), "everything": (405, metered)}
    for budget, (billed, by_meter) in expected.items():
        assert gauge("budget_billed_spend_amount", budget) == billed
        assert gauge("budget_metered_spend_amount", budget) == by_meter  # 0 without a meter
        assert billed + by_meter == gauge("budget_spend_amount", budget)


@pytest.mark.parametrize(
    ("sources", "budgets", "where", "why"),
    [
        (
            "- {name: m, provider: prometheus, url: 'http://p:9090', currency: USD,\n"
            "   query: 'x[{range}]', metered_after: nothing}",
            "[]",
            "sources[0].metered_after",
            "unknown source 'nothing'",
        ),
        (
            "- {name: s, provider: static, amount: 1, currency: USD}\n"
            "- {name: m, provider: prometheus, url: 'http://p:9090', currency: USD,\n"
            "   query: 'x[{range}]', metered_after: s}",
            "[]",
            "sources[1].metered_after",
            "does not report a data horizon",
        ),
        (
            "- {name: j, provider: http_json, url: 'http://127.0.0.1:9', amount: a,\n"
            "   currency: USD, data_through: t}\n"
            "- {name: m, provider: prometheus, url: 'http://p:9090', currency: USD,\n"
            "   query: 'x[{range}]', metered_after: j}",
            "[{name: b, limit: 1, currency: USD, sources: [m]}]",
            "budgets[0].sources",
            "counts the metered source 'm' but not 'j'",
        ),
    ],
)
def test_join_mistakes_are_config_errors(write_config, sources, budgets, where, why) -> None:
    path = write_config("sources:\n" + _indent(sources) + f"\nbudgets: {budgets}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert where in str(caught.value) and why in str(caught.value)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def test_a_meter_down_when_the_horizon_moves_leaves_the_whole_new_bill(setup) -> None:
    engine, clock, bill, meter = setup
    engine.runners["bill"].poll()
    engine.runners["meter"].poll()
    clock.now += 60
    bill.settled, bill.horizon, bill.unsettled = 30_000, H1, 9
    engine.runners["bill"].poll()
    before_repoll = spend(engine, "llm")
    assert before_repoll == 400 + RATE * seconds(H0, NOW)  # the meter has not caught up yet
    meter.up = False
    clock.now += 1
    assert not engine.runners["meter"].poll()  # ... and now it cannot: the new bill counts
    assert spend(engine, "llm") == 30_009
    [part] = engine.snapshot.budget("llm").parts
    assert (part.data_through, part.meters_left_out) == (H1, ("meter",))


# The join itself, as a pure function: one bill, two meters each metering part of the traffic.

WINDOW = Window(
    Period.MONTHLY, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
)
EARLY_BILL = PollResult(lines=(usd(100), usd(30)), unsettled=(usd(30),), data_through=H0)
LATE_BILL = PollResult(lines=(usd(140), usd(10)), unsettled=(usd(10),), data_through=H1)


def _total(lines: Iterable[SpendLine]) -> Decimal:
    return sum((line.amount for line in lines), Decimal(0))


def _bill_state(last_success: float = 100.0) -> SourceState:
    return SourceState(
        "bill", "openai", 60, result=LATE_BILL, windows=(WINDOW,), up=True,
        last_success=last_success, earlier=((EARLY_BILL, (WINDOW,)),),
    )  # fmt: skip


def _meter_state(name: str, amount: int, horizon: datetime, *, up: bool = True) -> SourceState:
    result = PollResult(lines=(usd(amount),), metered_from=horizon, metered=True)
    return SourceState(
        name, "prometheus", 30, result=result, windows=(WINDOW,), up=up, last_attempt=90.0
    )


def test_two_meters_on_the_new_horizon_replace_the_open_part() -> None:
    meters = [("a", _meter_state("a", 6, H1)), ("b", _meter_state("b", 5, H1))]
    part = joined_part(_bill_state(), meters, WINDOW, _total)
    assert (part.billed, part.metered, part.meters) == (140, 11, ("a", "b"))


@pytest.mark.parametrize("lagging", [True, False], ids=["lagging", "down"])
def test_one_meter_behind_the_other_leaves_the_whole_bill(lagging: bool) -> None:
    # Meter a re-polled against the new horizon; b still has the old one (not polled
    # yet, or down). Counting a alone after the horizon would drop b's share below
    # the bill (146 < 150): the whole current bill counts instead.
    b = _meter_state("b", 26, H0, up=lagging)
    part = joined_part(_bill_state(), [("a", _meter_state("a", 6, H1)), ("b", b)], WINDOW, _total)
    assert part.amount == 150
    assert (part.meters, part.meters_left_out) == ((), ("a", "b"))


def test_one_meter_without_data_leaves_the_whole_bill() -> None:
    meters = [("a", _meter_state("a", 6, H1)), ("b", None)]
    assert joined_part(_bill_state(), meters, WINDOW, _total).amount == 150


def test_an_earlier_bill_counts_only_until_its_meters_poll_again() -> None:
    meters = [("a", _meter_state("a", 20, H0)), ("b", _meter_state("b", 26, H0))]
    waiting = joined_part(_bill_state(last_success=100.0), meters, WINDOW, _total)
    assert (waiting.billed, waiting.metered, waiting.data_through) == (100, 46, H0)
    # One meter is down (its last poll failed): the old pair no longer counts.
    down = [("a", meters[0][1]), ("b", _meter_state("b", 26, H0, up=False))]
    assert joined_part(_bill_state(last_success=100.0), down, WINDOW, _total).amount == 150
    # The meters were polled after the bill's last good poll: no reason to wait.
    assert joined_part(_bill_state(last_success=80.0), meters, WINDOW, _total).amount == 150


def test_a_meter_polled_while_the_bill_polls_waits_for_its_next_poll() -> None:
    # The bill's poll started at 100 and its result (horizon H1) was recorded at 105; the
    # meter's poll started at 102, in between, and so read the old horizon H0.  It is about to
    # catch up (polled again at once): the old pair still counts, not the whole bill.
    bill = dataclasses.replace(_bill_state(last_success=100.0), recorded_at=105.0)
    meters = [("a", dataclasses.replace(_meter_state("a", 46, H0), last_attempt=102.0))]
    waiting = joined_part(bill, meters, WINDOW, _total)
    assert (waiting.billed, waiting.metered, waiting.data_through) == (100, 46, H0)
    # A meter poll that started after the result was recorded had no such excuse.
    late = [("a", dataclasses.replace(_meter_state("a", 46, H0), last_attempt=106.0))]
    assert joined_part(bill, late, WINDOW, _total).amount == 150


def test_the_engine_records_when_a_result_arrived(setup) -> None:
    engine, clock, bill, _ = setup
    started = clock.now

    def slow_poll(windows: Sequence[Window]) -> PollResult:
        clock.now += 5  # the bill's API takes five seconds to answer
        return bill.poll(windows)

    engine.runners["bill"].provider.poll = slow_poll  # type: ignore[method-assign]
    assert engine.runners["bill"].poll()
    state = engine.live_states()["bill"]
    assert (state.last_success, state.recorded_at) == (started, started + 5)
