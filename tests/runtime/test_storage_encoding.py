"""The state file's encoding: what is written reads back the same, sources not polled since
the last save keep their JSON, and every malformed value is refused with its kind named."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from budget_exporter.accounting.holds import Entry
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.loader import load_config
from budget_exporter.core.model import (
    FailedWindow,
    Forecast,
    Period,
    PollResult,
    ProviderBudget,
    Rate,
    Sample,
    SpendLine,
    Window,
)
from budget_exporter.runtime import storage
from budget_exporter.runtime.storage import StorageError, decode_states, encode_states

MONTH = Window(Period.MONTHLY, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
DAY = Window(Period.DAILY, datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC))
THROUGH = datetime(2026, 11, 10, 6, 30, tzinfo=UTC)


def rich_state(name: str = "bill", amount: str = "1234.567890123456789") -> SourceState:
    result = PollResult(
        lines=(
            SpendLine.of(Period.MONTHLY, Decimal(amount), "usd", {"service_name": "EC2"}),
            SpendLine.of(Period.DAILY, Decimal("0.000001"), "EUR", {"region_id": 'eu "w" \\ 1'}),
        ),
        forecasts=(Forecast(Period.MONTHLY, Decimal("2000.5"), "USD"),),
        samples=(Sample("aws_x", "Doc.", (("k", "v"),), 1.5),),
        budgets=(ProviderBudget("b", Period.MONTHLY, Decimal(10), "USD", None, Decimal(3), 0.5),),
        polled_at=THROUGH,
        data_through=THROUGH,
        unsettled=(SpendLine.of(Period.MONTHLY, Decimal("-1.5"), "USD"),),
        metered_from=THROUGH,
        metered=True,
        rates=(Rate("EUR", "USD", Decimal("1.0842"), THROUGH), Rate("GBP", "USD", Decimal(1))),
        failed_windows=(FailedWindow(Period.DAILY, "HTTP 500", 1.0),),
    )
    earlier = PollResult(lines=(SpendLine.of(Period.MONTHLY, Decimal(7), "USD"),))
    return SourceState(
        name=name,
        provider="http_json",
        poll_interval_seconds=3600.0,
        result=result,
        windows=(MONTH, DAY),
        up=False,
        attempted=True,
        last_attempt=1_700_000_100.5,
        last_success=1_700_000_000.25,
        recorded_at=1_700_000_001.0,
        earlier=((earlier, (MONTH,)),),
    )


HOLD = Entry("h1", "worker-7", "job-1", ("team",), Decimal("4.20"), "USD", 1.0, 601.0, None, ())


def old_encoding(states: list[SourceState], prints: dict[str, str], at: float) -> bytes:
    """The file as written before sources' JSON was reused: one json.dumps of it all."""
    sources: dict[str, Any] = {}
    for state in states:
        entry = storage._saved_entry(state, prints[state.name])
        if entry is not None:
            sources[state.name] = entry
    document = {"format": storage.FORMAT, "version": storage.VERSION, "written_at": at,
                "sources": sources, "holds": [storage._encode(HOLD)]}  # fmt: skip
    return json.dumps(document, separators=(",", ":")).encode()


def test_what_is_written_reads_back_the_same() -> None:
    state = rich_state()
    saved = decode_states(encode_states([state], {"bill": "f"}, 5.0, [HOLD])).sources["bill"]
    assert (saved.result, saved.windows, saved.earlier) == (state.result, state.windows,
                                                           state.earlier)  # fmt: skip
    assert (saved.last_success, saved.recorded_at, saved.up, saved.last_attempt) == (
        1_700_000_000.25,
        1_700_000_001.0,
        False,
        1_700_000_100.5,
    )
    assert saved.result.lines[0].amount == Decimal("1234.567890123456789")  # every digit
    assert decode_states(encode_states([state], {"bill": "f"}, 5.0, [HOLD])).holds == (HOLD,)


def test_reused_json_is_byte_for_byte_what_one_dump_writes() -> None:
    states = [rich_state("bill"), rich_state('ünïcode "quoted"', "3"), rich_state("x", "4")]
    prints = {s.name: f"print-{i}" for i, s in enumerate(states)}
    states.append(SourceState(name="never-polled", provider="static", poll_interval_seconds=60))
    prints["never-polled"] = "p"
    encoded: dict[str, Any] = {}
    expected = old_encoding(states, prints, 5.0)
    assert encode_states(states, prints, 5.0, [HOLD]) == expected
    assert encode_states(states, prints, 5.0, [HOLD], encoded) == expected
    assert set(encoded) == {"bill", 'ünïcode "quoted"', "x"}
    first = dict(encoded)
    assert encode_states(states, prints, 5.0, [HOLD], encoded) == expected  # reused
    assert all(encoded[name][2] is first[name][2] for name in encoded)

    polled = [rich_state("bill", "99"), *states[1:]]  # a new state: encoded afresh
    assert encode_states(polled, prints, 6.0, [HOLD], encoded) == old_encoding(polled, prints, 6.0)
    changed = {**prints, "x": "another print"}  # other settings: not the old JSON
    assert encode_states(polled, changed, 6.0, [HOLD], encoded) == old_encoding(
        polled, changed, 6.0
    )
    fewer = polled[:1]  # removed sources leave the file, and the reuse
    assert encode_states(fewer, prints, 7.0, [HOLD], encoded) == old_encoding(fewer, prints, 7.0)
    assert set(encoded) == {"bill"}


def valid_document() -> dict[str, Any]:
    return json.loads(encode_states([rich_state()], {"bill": "f"}, 5.0, [HOLD]))


def set_at(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


RESULT = ("sources", "bill", "result")


@pytest.mark.parametrize(
    ("path", "value", "kind"),
    [
        ((*RESULT, "lines", 0, "amount"), 12.5, "TypeError"),
        ((*RESULT, "lines", 0, "amount"), "NaN", "ValueError"),
        ((*RESULT, "lines", 0, "amount"), "twelve", "InvalidOperation"),
        ((*RESULT, "lines", 0, "period"), "fortnightly", "ValueError"),
        ((*RESULT, "lines", 0, "currency"), 5, "TypeError"),
        ((*RESULT, "lines", 0, "dimensions"), [["a", "b", "c"]], "ValueError"),
        ((*RESULT, "lines", 0, "dimensions"), {"a": "b"}, "TypeError"),
        ((*RESULT, "lines", 0), "a line", "TypeError"),
        ((*RESULT, "lines"), {"0": {}}, "TypeError"),
        ((*RESULT, "data_through"), "2026-11-10T06:30:00", "ValueError"),
        ((*RESULT, "data_through"), 1700000000, "TypeError"),
        ((*RESULT, "metered"), "yes", "TypeError"),
        ((*RESULT, "samples", 0, "value"), True, "TypeError"),
        (("sources", "bill", "windows", 0, "start"), "yesterday", "ValueError"),
        (("sources", "bill", "last_success"), "soon", "TypeError"),
        (("sources", "bill", "earlier", 0), [{}], "ValueError"),
        (("sources", "bill", "result"), None, "TypeError"),
    ],
)
def test_a_malformed_value_is_refused_with_its_kind(path, value, kind) -> None:
    document = valid_document()
    set_at(document, path, value)
    with pytest.raises(StorageError) as raised:
        decode_states(json.dumps(document).encode())
    assert str(raised.value) == f"source 'bill' is malformed ({kind})"


def test_a_missing_field_and_a_malformed_hold_are_refused() -> None:
    document = valid_document()
    del document["sources"]["bill"]["result"]["lines"][0]["currency"]
    with pytest.raises(StorageError, match=r"^source 'bill' is malformed \(TypeError\)$"):
        decode_states(json.dumps(document).encode())
    document = valid_document()
    document["holds"][0]["amount"] = "Infinity"
    with pytest.raises(StorageError, match=r"^the holds are malformed \(ValueError\)$"):
        decode_states(json.dumps(document).encode())


def test_fields_a_newer_version_adds_are_left_out() -> None:
    document = valid_document()
    document["sources"]["bill"]["result"]["lines"][0]["colour"] = "blue"
    saved = decode_states(json.dumps(document).encode()).sources["bill"]
    assert saved.result.lines == rich_state().result.lines


def test_a_fingerprint_is_worked_out_once_per_source_and_forgotten_with_it(write_config) -> None:
    text = (
        "sources:\n"
        "  - {name: a, provider: http_json, url: 'https://x.example/u', amount: total,"
        " currency: USD, headers: {Authorization: Bearer s3cr3t}}\n"
        "  - {name: b, provider: static, amount: 5, currency: USD}\n"
    )
    config = load_config(write_config(text))
    prints = [storage.fingerprint(s) for s in config.sources]
    assert prints == [storage._fingerprint(s) for s in config.sources]  # the same hash
    assert [storage.fingerprint(s) for s in config.sources] == prints  # from the cache
    assert all(id(s) in storage._PRINTS for s in config.sources)
    changed = config.sources[1].model_copy(update={"amount": Decimal(6)})
    assert storage.fingerprint(changed) != prints[1]  # another object, its own hash
    again = load_config(write_config(text, "again.yml"))
    assert [storage.fingerprint(s) for s in again.sources] == prints  # equal settings
    ids = [id(s) for s in config.sources]
    del config, changed
    gc.collect()
    assert not any(key in storage._PRINTS for key in ids)  # gone with its sources
