"""Rates sources (ecb_rates, json_rates, file_rates, static_rates) and budgets that count
spend in other currencies at their rates.

The ECB's answer is recorded in ``fixtures/eurofxref-daily.xml`` in the layout of its
daily reference rates file; a fake server on 127.0.0.1 serves it.  ``json_rates`` reads
endpoints users define, so its payloads are inline.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.core.model import Rate
from budget_exporter.providers import get_provider
from budget_exporter.providers._rates import parse_ecb
from budget_exporter.providers.base import ProviderContext
from budget_exporter.runtime.engine import Engine
from budget_exporter.web.api import budget_document, check
from budget_exporter.web.landing import render_landing
from tests.exposition.test_families import samples
from tests.support.clock import Clock
from tests.support.fake_upstream import FakeUpstream, Reply

FIXTURES = Path(__file__).parent / "fixtures"
ECB_XML = (FIXTURES / "eurofxref-daily.xml").read_bytes()
PUBLISHED = datetime(2026, 12, 4, tzinfo=UTC)  # the fixture's Cube time
NOW = datetime(2026, 12, 7, 10, tzinfo=UTC)  # the Monday after


def context(now: datetime = NOW) -> ProviderContext:
    return ProviderContext(
        source="rates",
        timeout=timedelta(seconds=5),
        retries=0,
        retry_backoff=timedelta(0),
        max_retry_after=timedelta(seconds=1),
        record_request=lambda status: None,
        now=lambda: now,
        logger=logging.getLogger("test.rates"),
    )


def provider(name: str, **settings: Any) -> Any:
    cls = get_provider(name)
    config = cls.config_model.model_validate({"name": "rates", "provider": name, **settings})
    return cls(config, context())


def by_pair(rates: tuple[Rate, ...]) -> dict[tuple[str, str], Decimal]:
    return {(r.base, r.quote): r.value for r in rates}


# -- the providers ------------------------------------------------------------------------


def test_ecb_daily_reference_rates(upstream: FakeUpstream) -> None:
    upstream.reply(Reply(body=ECB_XML, headers={"Content-Type": "text/xml"}))
    result = provider("ecb_rates", url=f"{upstream.url}/eurofxref-daily.xml").poll(())
    assert by_pair(result.rates) == {
        ("EUR", "USD"): Decimal("1.0850"),
        ("EUR", "JPY"): Decimal("162.37"),
        ("EUR", "GBP"): Decimal("0.84215"),
        ("EUR", "CHF"): Decimal("0.9402"),
    }
    assert {r.day for r in result.rates} == {PUBLISHED}
    assert result.lines == ()
    gauges = {dict(s.labels)["quote"]: (s.name, dict(s.labels), s.value) for s in result.samples}
    assert gauges["USD"] == (
        "budget_exchange_rate",
        {"base": "EUR", "quote": "USD", "date": "2026-12-04"},
        1.085,
    )
    assert upstream.seen[0].path == "/eurofxref-daily.xml"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"<html>maintenance</html", "not XML"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>', "DTD or entities"),
        (ECB_XML.replace(b"time='2026-12-04'", b""), "no rates"),
        (ECB_XML.replace(b"rate='1.0850'", b"rate='-1'"), "not positive"),
        (ECB_XML.replace(b"rate='1.0850'", b"rate='1,0850'"), "EUR/USD"),
    ],
)
def test_a_broken_ecb_answer_is_one_clear_error(body: bytes, words: str) -> None:
    with pytest.raises(SourceError, match=words):
        parse_ecb(body)


def test_json_endpoint_through_jmespath(upstream: FakeUpstream) -> None:
    upstream.reply(
        Reply(json={"meta": {"base": "USD", "day": "2026-12-04"}, "data": {"EUR": 0.9217}})
    )
    found = provider(
        "json_rates",
        url=upstream.url,
        base_path="meta.base",
        rates="data",
        date="meta.day",
        headers={"Authorization": "Bearer t0ken"},
    ).poll(())
    assert by_pair(found.rates) == {("USD", "EUR"): Decimal("0.9217")}
    assert upstream.seen[0].headers["Authorization"] == "Bearer t0ken"
    with pytest.raises(ValueError, match="exactly one of base or base_path"):
        get_provider("json_rates").config_model.model_validate(
            {"name": "r", "provider": "json_rates", "url": "https://x/", "rates": "a", "date": "b"}
        )


def test_rates_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "rates.yml"
    path.write_text("base: EUR\ndate: 2026-12-04\nrates: {USD: 1.0850}\n")
    source = provider("file_rates", path=str(path))
    assert by_pair(source.poll(()).rates) == {("EUR", "USD"): Decimal("1.0850")}
    path.write_text("base: EUR\ndate: 2026-12-07\nrates: {USD: 1.0912, GBP: 0.8433}\n")
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))  # a new modification time
    rates = source.poll(()).rates
    assert by_pair(rates) == {("EUR", "USD"): Decimal("1.0912"), ("EUR", "GBP"): Decimal("0.8433")}
    assert {r.day for r in rates} == {datetime(2026, 12, 7, tzinfo=UTC)}
    path.write_text(json.dumps({"base": "EUR", "rates": {"USD": "1.1"}}))
    os.utime(path, ns=(1, 3_000_000_000_000_000_000))
    with pytest.raises(SourceError, match="missing date"):
        source.poll(())
    path.unlink()
    with pytest.raises(SourceError, match="cannot read"):
        source.poll(())


def test_static_table_of_fixed_rates() -> None:
    found = provider("static_rates", rates={"EUR": {"USD": "1.08"}, "GBP": {"USD": 1.27}})
    rates = found.poll(()).rates
    assert by_pair(rates) == {("EUR", "USD"): Decimal("1.08"), ("GBP", "USD"): Decimal("1.27")}
    assert {r.day for r in rates} == {None}  # fixed: never stale
    assert {dict(s.labels)["date"] for s in found.poll(()).samples} == {""}


# -- budgets across currencies: the whole exporter ------------------------------------------

COMPANY = """
global: {{retries: 0}}
sources:
  - {{name: aws, provider: static, currency: USD, lines: [{{amount: "1000.00", dimensions: {{service_name: ec2}}}}]}}
  - {{name: azure, provider: static, currency: EUR, lines: [{{amount: "500.00", dimensions: {{service_name: vm}}}}, {{amount: "123.45", dimensions: {{service_name: storage}}}}]}}
  - {rates}
budgets:
  - {{name: company, limit: 2500, currency: USD}}
  - {{name: eu, limit: 1000, currency: EUR, sources: [azure]}}
"""


def engine_for(write_config: Any, rates: str, now: datetime) -> tuple[Engine, Clock]:
    clock = Clock(now.timestamp())
    engine = Engine(load_config(write_config(COMPANY.format(rates=rates))), clock=clock)
    return engine, clock


def gauges(engine: Engine, name: str) -> list[tuple[dict[str, str], float]]:
    return samples(engine.snapshot.rendered.text).get(name, [])


def company(engine: Engine) -> Any:
    view = engine.snapshot.budget("company")
    assert view is not None
    return view


# 623.45 EUR at 1.0850 USD per EUR: 676.44325 USD; with 1000.00 USD: 1676.44325 USD.
HAND_SPEND = Decimal("1000.00") + Decimal("623.45") * Decimal("1.0850")


def test_a_usd_budget_counts_eur_spend_at_the_ecb_rate(
    write_config: Any, upstream: FakeUpstream
) -> None:
    upstream.default = Reply(body=ECB_XML, headers={"Content-Type": "text/xml"})
    engine, clock = engine_for(
        write_config, f"{{name: ecb, provider: ecb_rates, url: '{upstream.url}/d.xml'}}", NOW
    )
    try:
        assert engine.poll_all_once()
        view = company(engine)
        assert view.spend == HAND_SPEND
        assert round(view.spend, 2) == Decimal("1676.44")
        assert view.forecast == view.spend  # static amounts are their own forecast
        (eur,) = view.conversions
        assert (eur.source, eur.currency, eur.native) == ("azure", "EUR", Decimal("623.45"))
        assert (eur.quote.value, eur.quote.source, str(eur.quote.day)) == (
            Decimal("1.0850"), "ecb", "2026-12-04"
        )  # fmt: skip
        assert view.left_out == ()
        # the EUR budget counts its own currency as before, nothing converted
        eu = engine.snapshot.budget("eu")
        assert eu is not None and (eu.spend, eu.conversions) == (Decimal("623.45"), ())

        # the rate gauge carries its source and date; the converted part has its own gauge
        rate = [
            (labels, value)
            for labels, value in gauges(engine, "budget_exchange_rate")
            if labels["quote"] == "USD"
        ]
        assert rate == [
            ({"source": "ecb", "provider": "ecb_rates", "base": "EUR", "quote": "USD",
              "date": "2026-12-04"}, 1.085)
        ]  # fmt: skip
        converted = gauges(engine, "budget_converted_spend_amount")
        assert [(labels["source"], labels["native_currency"], value) for labels, value in converted] == [
            ("azure", "EUR", pytest.approx(676.44325))
        ]  # fmt: skip
        native = gauges(engine, "budget_converted_spend_native_amount")
        assert [(labels["source"], labels["native_currency"], value) for labels, value in native] == [
            ("azure", "EUR", 623.45)
        ]  # fmt: skip
        spend = dict(
            (labels["budget"], value) for labels, value in gauges(engine, "budget_spend_amount")
        )
        assert spend["company"] == pytest.approx(1676.44325)

        # the check API and /api/v1/budgets say the same, to the cent
        now = clock.now
        # stop at 95 % of 2500: 2375 - 1676.44325 = 698.55675 left
        status, answer = check(engine.snapshot, now, {"budget": "company", "cost": 698.55})
        assert status == 200 and answer["allowed"] is True, answer
        assert answer["spend"] == pytest.approx(1676.44325)
        status, answer = check(engine.snapshot, now, {"budget": "company", "cost": 698.56})
        assert status == 200 and answer["allowed"] is False, answer
        budget = next(b for b in engine.snapshot.config.budgets if b.name == "company")
        document = budget_document(engine.snapshot, budget, now)
        assert document["spend"] == pytest.approx(1676.44325)
        assert document["converted"] == [
            {"source": "azure", "native_currency": "EUR", "native": 623.45, "rate": "1.0850",
             "rate_source": "ecb", "rate_date": "2026-12-04", "rate_kind": "direct",
             "amount": pytest.approx(676.44325)}
        ]  # fmt: skip
        assert document["left_out"] == []
        # no line is counted as a currency mismatch: the rates decide
        assert not gauges(engine, "budget_currency_mismatch_lines_total")
    finally:
        engine.stop(timeout=1)


def test_a_failing_rate_source_keeps_its_rate_until_the_allowance_passes(
    write_config: Any, upstream: FakeUpstream
) -> None:
    upstream.reply(Reply(body=ECB_XML, headers={"Content-Type": "text/xml"}))
    upstream.default = Reply(status=503, json={"error": "down"})
    rates = f"{{name: ecb, provider: ecb_rates, url: '{upstream.url}/d.xml', max_age: 4d}}"
    engine, clock = engine_for(write_config, rates, NOW)
    try:
        assert engine.poll_all_once()  # the ECB answers once, then fails
        clock.now = datetime(2026, 12, 8, 10, tzinfo=UTC).timestamp()
        engine.poll_all_once()
        assert not engine.live_states()["ecb"].up
        assert company(engine).spend == HAND_SPEND  # the last good rate, 4 days old
        clock.now = datetime(2026, 12, 9, 0, 1, tzinfo=UTC).timestamp()  # 5 days old
        engine.poll_all_once()
        view = company(engine)
        assert view.spend == Decimal("1000.00")  # the EUR spend is left out ...
        assert view.conversions == ()
        (gone,) = view.left_out
        assert (gone.source, gone.currency, gone.native, gone.reason) == (
            "azure", "EUR", Decimal("623.45"), "stale_rate"
        )  # fmt: skip
        # ... and said so: a gauge, the API and the landing page
        left = gauges(engine, "budget_unconverted_spend_amount")
        assert [(labels["source"], labels["reason"], value) for labels, value in left] == [
            ("azure", "stale_rate", 623.45)
        ]
        budget = next(b for b in engine.snapshot.config.budgets if b.name == "company")
        document = budget_document(engine.snapshot, budget, clock.now)
        assert document["left_out"] == [
            {"source": "azure", "native_currency": "EUR", "native": 623.45,
             "reason": "stale_rate", "stale_rate_date": "2026-12-04"}
        ]  # fmt: skip
        page = render_landing(engine.snapshot, now=clock.now).decode()
        assert "Budget company leaves out 623.45 EUR of source azure" in page
        assert "(ecb, 2026-12-04) is older than its max_age" in page
        # the rate gauge still shows the stale rate with its date
        assert [labels["date"] for labels, _ in gauges(engine, "budget_exchange_rate")][:1] == [
            "2026-12-04"
        ]
    finally:
        engine.stop(timeout=1)


def test_a_static_table_and_a_cross_rate(write_config: Any) -> None:
    table = "{name: fx, provider: static_rates, rates: {EUR: {USD: '1.08', GBP: '0.85'}}}"
    engine, _ = engine_for(write_config, table, NOW)
    try:
        assert engine.poll_all_once()
        view = company(engine)
        assert view.spend == Decimal("1000.00") + Decimal("623.45") * Decimal("1.08")
        assert round(view.spend, 2) == Decimal("1673.33")
        (eur,) = view.conversions
        assert (eur.quote.how, eur.quote.day) == ("direct", None)  # fixed: never stale
    finally:
        engine.stop(timeout=1)
    # a GBP budget converts the USD spend through EUR (USD -> EUR -> GBP), the EUR directly
    book_config = COMPANY.format(rates=table).replace(
        "name: eu, limit: 1000, currency: EUR, sources: [azure]",
        "name: eu, limit: 1000, currency: GBP",
    )
    engine = Engine(load_config(write_config(book_config)), clock=Clock(NOW.timestamp()))
    try:
        assert engine.poll_all_once()
        eu = engine.snapshot.budget("eu")
        assert eu is not None
        how = {c.currency: (c.quote.how, c.quote.value) for c in eu.conversions}
        assert how["EUR"] == ("direct", Decimal("0.85"))
        assert how["USD"] == ("cross", Decimal("0.85") / Decimal("1.08"))
        expected = Decimal("623.45") * Decimal("0.85") + Decimal("1000.00") * (
            Decimal("0.85") / Decimal("1.08")
        )
        # 529.9325 GBP + 787.037037... GBP
        assert round(eu.spend, 2) == round(expected, 2) == Decimal("1316.97")
    finally:
        engine.stop(timeout=1)


def test_without_a_rate_the_spend_is_left_out_and_said_so(write_config: Any) -> None:
    table = "{name: fx, provider: static_rates, rates: {GBP: {USD: '1.27'}}}"
    engine, _ = engine_for(write_config, table, NOW)
    try:
        assert engine.poll_all_once()
        view = company(engine)
        assert view.spend == Decimal("1000.00")
        assert [(g.currency, g.reason) for g in view.left_out] == [("EUR", "no_rate")]
        page = render_landing(engine.snapshot, now=NOW.timestamp()).decode()
        assert "no rates source publishes a EUR to USD rate" in page
    finally:
        engine.stop(timeout=1)


def test_a_rates_source_is_not_held_to_the_spend_sources_data_age(write_config: Any) -> None:
    text = COMPANY.format(rates="{name: fx, provider: ecb_rates, poll_interval: 6h}")
    text = text.replace("global: {retries: 0}", "global: {retries: 0, check: {max_data_age: 3h}}")
    config = load_config(write_config(text))  # the ECB polled every 6h: its max_age counts
    assert [s.name for s in config.rate_sources] == ["fx"]


def test_a_budget_cannot_name_a_rates_source(write_config: Any) -> None:
    text = COMPANY.format(rates="{name: fx, provider: static_rates, rates: {EUR: {USD: 1}}}")
    text = text.replace("sources: [azure]", "sources: [azure, fx]")
    with pytest.raises(ConfigError, match="source 'fx' reports exchange rates, not spend"):
        load_config(write_config(text))


def test_without_rates_sources_lines_are_left_out_and_counted_as_before(
    write_config: Any,
) -> None:
    text = COMPANY.format(rates="{name: x, provider: static, amount: 0, currency: USD}")
    engine = Engine(load_config(write_config(text)), clock=Clock(NOW.timestamp()))
    try:
        assert engine.poll_all_once()
        view = company(engine)
        assert view.spend == Decimal("1000.00")
        assert [(g.currency, g.reason) for g in view.left_out] == [("EUR", "no_rate")]
        counted = Counter(
            labels["currency"]
            for labels, _ in gauges(engine, "budget_currency_mismatch_lines_total")
        )
        assert counted == Counter({"EUR": 1})
    finally:
        engine.stop(timeout=1)
