"""Both exposition formats, their negotiation and the per-scrape process metrics."""

from __future__ import annotations

import gzip
import zlib

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from budget_exporter.exposition.families import ExporterStatus, build_families
from budget_exporter.exposition.rendering import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    Rendered,
    gzip_accepted,
    wants_openmetrics,
    write_families,
)
from budget_exporter.web.endpoints import ExporterServer

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
CONFIG = """
sources:
  - name: llm
    provider: static
    currency: USD
    lines:
      - {amount: 5, dimensions: {model: 'gpt "4o"', sub_account_id: 'a\\b'}}
      - {amount: 2.5, dimensions: {model: "line\\nbreak", sub_account_id: ü}}
  - {name: eu, provider: static, amount: 3, currency: EUR}
budgets:
  - {name: total, limit: 40, currency: USD, labels: {team: finops}}
"""


def families_of(engine) -> list:
    """The engine's families plus odd values, labels and help texts."""
    snapshot = engine.snapshot
    status = ExporterStatus(True, 1.0, {("total", "eu", "EUR"): 1})
    registry_families = build_families(
        snapshot.budgets, snapshot.states, status, {"llm": 200, "eu": 200}
    )
    edge = GaugeMetricFamily("edge_values", 'help with \\ and \n and "quotes"', labels=["k"])
    for i, value in enumerate(
        [0.0, -0.0, 1.0, 1e21, 123456789.0, 1e-7, float("inf"), float("-inf"), float("nan")]
    ):
        edge.add_metric([f"v{i}"], value)
    counter = CounterMetricFamily("edge_events", "A counter.", labels=["z", "a"])
    counter.add_metric(["1", "2"], 3)
    unlabelled = GaugeMetricFamily("edge_plain", "No labels.", value=7)
    return [*registry_families, edge, counter, unlabelled]


class _Collector:
    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def test_the_writer_produces_exactly_what_prometheus_client_produces(make_engine) -> None:
    engine = make_engine(CONFIG)
    assert engine.poll_all_once()
    families = families_of(engine)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))
    assert write_families(families, openmetrics=False) == generate_latest(registry)
    assert write_families(families, openmetrics=True) + b"# EOF\n" == generate_openmetrics(registry)


def test_values_and_label_sets_formatted_once_are_reused_only_where_they_are_the_same() -> None:
    # The writer formats each distinct value and label set once per rendering: the same
    # label values under names in another order, 0.0 after -0.0, 1 after 1.0 and True,
    # escaped values and NaN must still come out as prometheus_client writes each.
    families = []
    for name, labels in (("first", ["a", "z"]), ("second", ["z", "a"]), ("third", ["a", "z"])):
        family = GaugeMetricFamily(f"reuse_{name}", "Reuse.", labels=labels)
        for value, pair in (
            (-0.0, ["x", "y"]),
            (0.0, ["x", "y"]),
            (1.0, ["y", "x"]),
            (1, ["q\\", 'w"']),
            (True, ["x", "y"]),
            (float("nan"), ["n\nl", "x"]),
            (float("nan"), ["x", "x"]),
            (2.5e21, ["x", "y"]),
            (0, ["y", "x"]),
        ):
            family.add_metric(pair, value)
        families.append(family)
    families.append(GaugeMetricFamily("reuse_plain", "No labels.", value=-0.0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families))
    text = write_families(families, openmetrics=False)
    assert text == generate_latest(registry)
    assert write_families(families, openmetrics=True) + b"# EOF\n" == generate_openmetrics(registry)
    assert b'reuse_second{a="y",z="x"} -0.0\n' in text
    assert b'reuse_second{a="y",z="x"} 0.0\n' in text
    assert b"reuse_plain -0.0\n" in text


def test_both_formats_parse_and_carry_the_process_metrics(make_engine) -> None:
    engine = make_engine(CONFIG)
    assert engine.poll_all_once()
    rendered = engine.snapshot.rendered

    body, ctype, encoding = rendered.select("text/plain", None)
    assert (ctype, encoding) == (CONTENT_TYPE_TEXT, None)
    text = {f.name: f for f in parse_text(body.decode())}
    assert body.startswith(rendered.text)
    assert text["budget_source_api_requests"].type == "counter"
    assert {s.name for s in text["budget_source_api_requests"].samples} == {
        "budget_source_api_requests_total"
    }
    assert text["process_resident_memory_bytes"].samples[0].value > 0

    body, ctype, encoding = rendered.select("application/openmetrics-text", None)
    assert (ctype, encoding) == (CONTENT_TYPE_OPENMETRICS, None)
    assert body.endswith(b"\n# EOF\n") and body.count(b"# EOF") == 1
    om = {f.name: f for f in parse_openmetrics(body.decode())}  # raises on any clash
    assert om["budget_source_api_requests"].type == "counter"
    assert om["budget_currency_mismatch_lines"].samples[0].value == 1
    assert om["process_resident_memory_bytes"].samples[0].value > 0
    assert om["process_cpu_seconds"].type == "counter"
    spend = om["budget_spend_amount"].samples[0]
    assert spend.labels["team"] == "finops" and spend.value == 7.5
    costs = {s.labels["model"]: s.value for s in om["budget_source_cost_amount"].samples}
    assert costs['gpt "4o"'] == 5 and costs["line\nbreak"] == 2.5


@pytest.mark.parametrize("accept", [None, "text/plain", "application/openmetrics-text"])
def test_gzip_is_one_stream_with_the_same_content(make_engine, accept) -> None:
    engine = make_engine(CONFIG)
    assert engine.poll_all_once()
    rendered = engine.snapshot.rendered
    body, ctype, encoding = rendered.select(accept, "br, gzip;q=0.8")
    assert encoding == "gzip"
    inflate = zlib.decompressobj(31)
    plain = inflate.decompress(body)
    assert inflate.eof and inflate.unused_data == b""  # a single, complete gzip member
    uncompressed, ctype_plain, _ = rendered.select(accept, None)
    assert ctype == ctype_plain
    cached = rendered.openmetrics if "openmetrics" in (accept or "") else rendered.text
    assert plain.startswith(cached) and uncompressed.startswith(cached)
    assert b"\nprocess_open_fds" in plain
    assert gzip.decompress(rendered.gzipped) == rendered.text


def test_without_process_metrics_the_cached_bytes_are_served_as_they_are(make_engine) -> None:
    engine = make_engine(CONFIG)
    rendered: Rendered = engine.snapshot.rendered
    assert rendered.select(None, None, process=False)[0] == rendered.text
    assert rendered.select("application/openmetrics-text", None, process=False)[0] == (
        rendered.openmetrics + b"# EOF\n"
    )


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text;version=0.0.1", False),  # only the 1.x format is served
        ("text/plain;q=0.9, application/openmetrics-text;q=0.5", False),
        ("text/plain;q=0.2, application/openmetrics-text;q=0.5", True),
        ("application/openmetrics-text;q=0", False),
        ("application/json", False),
    ],
)
def test_negotiation(accept: str | None, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


@pytest.mark.parametrize(
    ("header", "ok"),
    [(None, False), ("identity", False), ("gzip", True), ("GZIP", True), ("deflate, gzip;q=0.5", True),
     ("gzip;q=0", False), ("x-gzip", False)],
)  # fmt: skip
def test_gzip_acceptance(header: str | None, ok: bool) -> None:
    assert gzip_accepted(header) is ok


def test_the_server_negotiates(make_engine) -> None:
    engine = make_engine(CONFIG)
    engine.poll_all_once()
    server = ExporterServer(engine, "127.0.0.1:0")
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        answer = requests.get(url, headers={"Accept": PROMETHEUS_ACCEPT}, timeout=5)
        assert answer.headers["Content-Type"] == CONTENT_TYPE_OPENMETRICS
        assert answer.headers["Content-Encoding"] == "gzip"  # requests asks for it
        assert "Accept" in answer.headers["Vary"]
        names = {f.name for f in parse_openmetrics(answer.text)}
        assert {"budget_spend_amount", "process_virtual_memory_bytes"} <= names
        plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=5)
        assert plain.headers["Content-Type"] == CONTENT_TYPE_TEXT
        assert "Content-Encoding" not in plain.headers
        assert "budget_spend_amount" in {f.name for f in parse_text(plain.text)}
    finally:
        server.shutdown()
