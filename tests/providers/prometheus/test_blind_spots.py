"""The ``prometheus`` provider where a meter goes wrong without failing (issue 19): what it
answered (series counts), and a token meter with a model the price table lacks.

Answers are the recorded query API answers of ``fixtures/`` (see test_prometheus.py).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import PollResult
from tests.support.fixtures import load_fixture
from tests.support.llm import MONTH, make_provider

URL = "https://prometheus.test"
QUERY_URL = f"{URL}/api/v1/query"
OTEL = (
    "sum by (gen_ai_request_model, gen_ai_token_type) "
    "(increase(gen_ai_client_token_usage_sum[{range}]))"
)
TOKENS = {"model_label": "gen_ai_request_model", "token_type_label": "gen_ai_token_type"}


def provider(**fields: Any) -> Any:
    settings = {"url": URL, "query": "sum(increase(x_total[{range}]))", "currency": "USD"}
    return make_provider("prometheus", **(settings | fields))


def token_meter(**fields: Any) -> Any:
    return provider(query=OTEL, currency=None, mode="tokens", tokens=TOKENS, **fields)


def samples(result: PollResult, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in result.samples if s.name == name}


@responses.activate
@pytest.mark.parametrize(("answer", "count"), [("spend_by_model_and_team", 3), ("empty_vector", 0)])
def test_the_series_count_of_each_answer_is_exported(answer: str, count: int) -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", answer))
    result = provider().poll([MONTH])
    assert samples(result, "budget_source_metered_series") == {(("period", "monthly"),): count}


@responses.activate
def test_an_unknown_model_is_left_out_and_counted_the_rest_priced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # gpt-4o is in the price table; house-model (1,000,000 input tokens) is not.
    responses.get(QUERY_URL, json=load_fixture("prometheus", "gen_ai_tokens"))
    responses.get(QUERY_URL, json=load_fixture("prometheus", "gen_ai_tokens"))
    p = token_meter()
    with caplog.at_level(logging.WARNING):
        result = p.poll([MONTH])
        again = p.poll([MONTH])
    table = p.config.price_table()
    lines = {(ln.dims["model"], ln.dims["token_type"]): ln.amount for ln in result.lines}
    assert lines == {
        ("gpt-4o", "input"): table.lookup("gpt-4o").input * 2,
        ("gpt-4o", "output"): table.lookup("gpt-4o").output,
    }
    assert samples(result, "budget_source_unpriced_tokens") == {
        (("model", "house-model"), ("period", "monthly"), ("token_type", "input")): 1_000_000
    }
    assert samples(again, "budget_source_unpriced_tokens") == samples(
        result, "budget_source_unpriced_tokens"
    )
    warned = [r.getMessage() for r in caplog.records if "no price for model" in r.getMessage()]
    assert len(warned) == 1 and "house-model" in warned[0]  # once, not at every poll


@responses.activate
def test_a_priced_default_leaves_nothing_unpriced() -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", "gen_ai_tokens"))
    result = token_meter(pricing={"default": {"input": 1, "output": 2}}).poll([MONTH])
    assert samples(result, "budget_source_unpriced_tokens") == {}
    assert {ln.dims["model"] for ln in result.lines} == {"gpt-4o", "house-model"}


@responses.activate
def test_nothing_priceable_fails_the_poll_rather_than_a_silent_zero() -> None:
    document = load_fixture("prometheus", "gen_ai_tokens")
    document["data"]["result"] = [
        s for s in document["data"]["result"] if s["metric"]["gen_ai_request_model"] != "gpt-4o"
    ]
    responses.get(QUERY_URL, json=document)
    with pytest.raises(SourceError, match="no price for model 'house-model'"):
        token_meter().poll([MONTH])


@responses.activate
def test_an_unknown_model_with_no_tokens_fails_nothing() -> None:
    document = load_fixture("prometheus", "gen_ai_tokens")
    document["data"]["result"] = document["data"]["result"][2:]  # house-model only ...
    document["data"]["result"][0]["value"][1] = "0"  # ... and no tokens since the horizon
    responses.get(QUERY_URL, json=document)
    result = token_meter().poll([MONTH])
    assert result.lines == ()
    assert list(samples(result, "budget_source_unpriced_tokens").values()) == [Decimal(0)]


CACHED_TYPES = {"input": "input", "output": "output", "cache_read": "cached_input"}


@responses.activate
@pytest.mark.parametrize("includes", [True, False], ids=["input-includes-cached", "uncached"])
def test_cached_tokens_are_priced_once(includes: bool) -> None:
    # 1,000,000 input tokens of which 800,000 were cache reads (a tenth of the input price).
    responses.get(QUERY_URL, json=load_fixture("prometheus", "gen_ai_tokens_cached"))
    tokens = TOKENS | {"token_types": CACHED_TYPES, "input_includes_cached": includes}
    p = provider(query=OTEL, currency=None, mode="tokens", tokens=tokens)
    lines = {ln.dims["token_type"]: ln.amount for ln in p.poll([MONTH]).lines}
    price = p.config.price_table().lookup("claude-sonnet-4-20250514")
    uncached = 200_000 if includes else 1_000_000
    assert lines == {
        "input": price.input * uncached / 1_000_000,
        "cached_input": price.cached_input * Decimal("0.8"),
        "output": price.output * Decimal("0.1"),
    }
    assert price.cached_input < price.input  # the split matters


DUPLICATES = "count without (replica) (litellm_spend_metric_total) > 1"


@responses.activate
def test_duplicated_counters_fail_the_poll_with_the_series() -> None:
    # Thanos without deduplication: each counter comes from both Prometheus replicas.
    responses.get(QUERY_URL, json=load_fixture("prometheus", "spend_by_model_and_team"))
    responses.get(QUERY_URL, json=load_fixture("prometheus", "duplicated_series"))
    p = provider(duplicates_query=DUPLICATES)
    with pytest.raises(SourceError) as caught:
        p.poll([MONTH])
    assert 'duplicated counters ({model="gpt-4o",team="search"} 2)' in str(caught.value)
    queries = [c for c in responses.calls if "/api/v1/query" in c.request.url]
    sent = [parse_qs(urlsplit(c.request.url).query)["query"][0] for c in queries]
    assert sent[1] == DUPLICATES


@responses.activate
def test_no_duplicates_no_complaint() -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", "spend_by_model_and_team"))
    responses.get(QUERY_URL, json=load_fixture("prometheus", "empty_vector"))
    result = provider(duplicates_query=DUPLICATES).poll([MONTH])
    assert sum(ln.amount for ln in result.lines) == Decimal("15.75")
