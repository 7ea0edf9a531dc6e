"""A meter joined to a bill that sees none of the bill's open spend (issue 19, items 2 and 6).

The bill reports $500 settled and $80 in today's open bucket for project ``proj_abc``; the
meter is the real ``prometheus`` provider reading recorded query API answers.  When the
meter adds nothing where the bill shows spend after its horizon — its dimension values
differ from the budget's ``match`` (LiteLLM's team names against OpenAI's project ids), or
its query matched no series — the budget counts the bill's open part instead of dropping it,
and says so: ``meter_blind`` in /api/v1/budgets, the ``budget_meter_blind`` gauge, one
warning per configuration, and the series count ``budget_source_metered_series``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import responses

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.model import Period, PollResult, SpendLine, Window
from budget_exporter.runtime.engine import Engine
from budget_exporter.web.api import budgets_document
from tests.conftest import Clock
from tests.support.fixtures import load_fixture
from tests.support.llm import parse_metrics, value

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)  # the fixtures' evaluation time
HORIZON = datetime(2026, 11, 25, tzinfo=UTC)
QUERY_URL = "http://127.0.0.1:9/api/v1/query"

CONFIG = """
global: {poll_interval: 1h}
sources:
  - {name: openai, provider: http_json, url: "http://127.0.0.1:9/costs", amount: total,
     currency: USD, data_through: through}
  - name: litellm
    provider: prometheus
    url: http://127.0.0.1:9
    currency: USD
    metered_after: openai
    query: sum by (model, team) (increase(litellm_spend_metric_total[{range}]))
    dimensions: {model: model, sub_account_id: team}
budgets:
  - {name: abc, limit: 10000, currency: USD, sources: [openai, litellm],
     match: {sub_account_id: proj_abc}}
  - {name: all, limit: 10000, currency: USD, sources: [openai, litellm]}
"""


def abc(amount: int) -> SpendLine:
    return SpendLine.of(Period.MONTHLY, Decimal(amount), "USD", {"sub_account_id": "proj_abc"})


def bill(windows: Sequence[Window]) -> PollResult:
    """$500 settled before midnight and $80 in today's open bucket, for proj_abc."""
    return PollResult(lines=(abc(500), abc(80)), unsettled=(abc(80),), data_through=HORIZON)


@pytest.fixture
def engine(make_engine) -> Engine:
    engine = make_engine(CONFIG, clock=Clock(NOW.timestamp()))
    engine.runners["openai"].provider.poll = bill  # type: ignore[method-assign]
    return engine


def polled(engine: Engine, answer: str) -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", answer))
    assert engine.runners["openai"].poll()
    assert engine.runners["litellm"].poll()


def part_of(engine: Engine, budget: str) -> dict:
    document = budgets_document(engine.snapshot, NOW.timestamp())
    found = next(b for b in document["budgets"] if b["name"] == budget)
    return {"spend": found["spend"], "metered": found["metered"], **found["spend_by_source"][0]}


@responses.activate
def test_a_match_the_meter_cannot_meet_keeps_the_open_bill_and_says_so(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="budget_exporter")
    polled(engine, "spend_by_model_and_team")  # teams "search" and "ads", $15.75 in all
    abc_part = part_of(engine, "abc")
    # Before: spend 500, metered 0, no word. Now the open $80 counts and the meter is flagged.
    assert (abc_part["spend"], abc_part["metered"]) == (580.0, 0.0)
    assert (abc_part["billed"], abc_part["meters"], abc_part["meter_blind"]) == (
        580.0,
        ["litellm"],
        "no_spend",
    )
    # Without a match the meter's series count: nothing to flag.
    all_part = part_of(engine, "all")
    assert (all_part["spend"], all_part["meter_blind"]) == (515.75, None)
    series = parse_metrics(engine.snapshot.rendered.text.decode())
    assert value(series, "budget_meter_blind", budget="abc", source="openai") == 1
    assert value(series, "budget_meter_blind", budget="all", source="openai") == 0
    assert value(series, "budget_source_metered_series", source="litellm", period="monthly") == 3
    # Logged once per configuration, not at every rebuild.
    engine.runners["litellm"].poll()
    engine.rebuild()
    warnings = [r.getMessage() for r in caplog.records if "add nothing" in r.getMessage()]
    assert len(warnings) == 1
    assert "budget abc" in warnings[0] and "dimension values" in warnings[0]


@responses.activate
def test_a_query_matching_nothing_is_flagged_not_counted_as_zero_spend(engine: Engine) -> None:
    polled(engine, "empty_vector")  # a renamed label: the query matches no series
    for budget in ("abc", "all"):
        part = part_of(engine, budget)
        assert (part["spend"], part["metered"], part["meter_blind"]) == (580.0, 0.0, "no_series")
    series = parse_metrics(engine.snapshot.rendered.text.decode())
    assert value(series, "budget_source_metered_series", source="litellm", period="monthly") == 0
    assert value(series, "budget_meter_blind", budget="all", source="openai") == 1


@responses.activate
def test_a_meter_that_sees_the_spend_replaces_the_open_part(make_engine) -> None:
    # The same budget once the meter's dimension holds the bill's values: not blind.
    config = CONFIG.replace("sub_account_id: team", "sub_account_id: project")
    engine = make_engine(config, clock=Clock(NOW.timestamp()))
    engine.runners["openai"].provider.poll = bill  # type: ignore[method-assign]
    document = load_fixture("prometheus", "spend_by_model_and_team")
    for series in document["data"]["result"]:
        series["metric"]["project"] = "proj_abc"
    responses.get(QUERY_URL, json=document)
    assert engine.runners["openai"].poll() and engine.runners["litellm"].poll()
    part = part_of(engine, "abc")
    assert (part["spend"], part["metered"], part["meter_blind"]) == (515.75, 15.75, None)


def test_a_match_on_a_dimension_the_meter_lacks_is_a_config_error(write_config) -> None:
    path = write_config(CONFIG.replace("match: {sub_account_id: proj_abc}", "match: {project: x}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "budgets[0].match.project" in text
    assert "metered source 'litellm' has no 'project' dimension" in text
    # A match a missing dimension passes (an empty value, or a regex matching "") is fine.
    for match in ('{project: ""}', "{project: '/.*/'}"):
        load_config(
            write_config(CONFIG.replace("{sub_account_id: proj_abc}", match), name="ok.yml")
        )
