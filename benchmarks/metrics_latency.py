"""Benchmark: /metrics latency at ~30k series, and upstream requests caused by scrapes.

Runs everything on 127.0.0.1 and cleans up after itself:

1. The real exporter (``python -m budget_exporter``) on a generated config of
   ``static`` sources (many dimensioned lines) and many budgets, so it serves
   about ``--series`` series.  N sequential GETs of ``/metrics``, plain and with
   ``Accept-Encoding: gzip``; median and p95.
2. A baseline measured in the same run: a naive ``prometheus_client`` server
   whose custom collector builds the same series on every scrape, as an
   exporter that renders per scrape would.  The same client times it the same
   way, and the ratio exporter/baseline is printed against the target (<= 0.05).
3. An ``http_json`` source in the same exporter, polling a loopback server that
   counts the requests it gets.  After the first poll has completed, 100
   scrapes; the upstream requests they caused (target 0) are read both from
   the counting server and from ``budget_source_api_requests_total``.

``python benchmarks/metrics_latency.py`` prints a small table; ``--quick`` does
a smaller run; ``--json PATH`` also writes the results as JSON.  This is not a
timed test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import harness

TARGET_RATIO = 0.05
TARGET_UPSTREAM = 0
UPSTREAM_SOURCE = "usage-api"
UPSTREAM_PAGES = 2
UPSTREAM_LINES_PER_PAGE = 10
LINES_PER_STATIC_SOURCE = 4000
BUDGET_SOURCES = 4
REQUEST_STATUSES = ("ok", "client_error", "server_error", "throttled", "timeout", "network")
PER_SOURCE_SERIES = 5 + len(REQUEST_STATUSES)  # up, success, attempt, duration, interval, requests
PER_BUDGET_SERIES = 17  # 16 figures, and budget_source_info for its one source
EXPORTER_SERIES = 3  # build_info, last_reload_successful, last_reload_success_timestamp

SERVICES = (
    "Amazon Elastic Compute Cloud",
    "Amazon Simple Storage Service",
    "Amazon Relational Database Service",
    "AWS Lambda",
    "Amazon CloudFront",
    "Amazon DynamoDB",
    "Amazon Elastic Kubernetes Service",
    "Amazon Virtual Private Cloud",
    "Amazon CloudWatch",
    "AWS Key Management Service",
    "Amazon Simple Queue Service",
    "Amazon Route 53",
    "Amazon ElastiCache",
    "Amazon OpenSearch Service",
    "AWS Glue",
    "Amazon Athena",
    "Amazon Kinesis",
    "Amazon Elastic File System",
    "AWS Secrets Manager",
    "Amazon SageMaker",
)
REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "eu-north-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "ap-south-1",
    "sa-east-1",
)
CATEGORIES = ("Usage", "Tax")
MODELS = ("gpt-4o", "gpt-4o-mini", "o3", "o4-mini", "text-embedding-3-large")


# -- the workload ---------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The sources and budgets both servers expose, and how many series that makes."""

    static_sources: list[dict[str, Any]]
    budget_sources: list[dict[str, Any]]
    budgets: list[dict[str, Any]]
    upstream_pages: list[list[dict[str, Any]]]

    @property
    def cost_lines(self) -> int:
        return (
            sum(len(s["lines"]) for s in self.static_sources)
            + len(self.budget_sources)
            + sum(len(page) for page in self.upstream_pages)
        )

    @property
    def source_count(self) -> int:
        return len(self.static_sources) + len(self.budget_sources) + 1

    @property
    def expected_series(self) -> int:
        return (
            self.cost_lines
            + PER_BUDGET_SERIES * (len(self.budgets) + 1)  # + the upstream source's budget
            + PER_SOURCE_SERIES * self.source_count
            + EXPORTER_SERIES
        )


def build_workload(series: int) -> Workload:
    """About ``series`` series: 40% spend lines with FOCUS dimensions, the rest budgets."""
    cost_lines = max(series * 2 // 5, 10)
    static_sources = []
    for index in range(math.ceil(cost_lines / LINES_PER_STATIC_SOURCE)):
        count = min(LINES_PER_STATIC_SOURCE, cost_lines - index * LINES_PER_STATIC_SOURCE)
        lines = []
        for i in range(count):
            # (i % 20, i // 20 % 10, i // 200 % 2, i // 400) is unique per i: no duplicate series.
            lines.append(
                {
                    "amount": f"{(i * 7919 + index * 104729) % 250000 / 100:.2f}",
                    "dimensions": {
                        "service_name": SERVICES[i % len(SERVICES)],
                        "region_id": REGIONS[i // len(SERVICES) % len(REGIONS)],
                        "charge_category": CATEGORIES[i // 200 % 2],
                        "sub_account_id": f"{100000000000 + index * 1000 + i // 400}",
                    },
                }
            )
        static_sources.append(
            {
                "name": f"cur-{index:02d}",
                "provider": "static",
                "currency": "USD",
                "max_series": count,
                "lines": lines,
            }
        )
    budget_sources = [
        {"name": f"team-{t:02d}", "provider": "static", "currency": "USD", "amount": 1000 + 250 * t}
        for t in range(BUDGET_SOURCES)
    ]
    upstream_pages = [
        [
            {
                "model": MODELS[(p * UPSTREAM_LINES_PER_PAGE + i) % len(MODELS)],
                "project": f"proj-{p * UPSTREAM_LINES_PER_PAGE + i:03d}",
                "cost": round(1.5 + p + i * 0.25, 2),
            }
            for i in range(UPSTREAM_LINES_PER_PAGE)
        ]
        for p in range(UPSTREAM_PAGES)
    ]
    partial = Workload(static_sources, budget_sources, [], upstream_pages)
    room = max(series - partial.expected_series, PER_BUDGET_SERIES)
    budgets = [
        {
            "name": f"team-{b % BUDGET_SOURCES:02d}-project-{b:05d}",
            "limit": 5000 + b,
            "currency": "USD",
            "period": "monthly",
            "sources": [f"team-{b % BUDGET_SOURCES:02d}"],
        }
        for b in range(room // PER_BUDGET_SERIES)
    ]
    return Workload(static_sources, budget_sources, budgets, upstream_pages)


def exporter_config(workload: Workload, upstream_port: int) -> dict[str, Any]:
    upstream = {
        "name": UPSTREAM_SOURCE,
        "provider": "http_json",
        # One poll an hour: any request during the scrape window comes from a scrape.
        "poll_interval": "1h",
        "url": f"http://127.0.0.1:{upstream_port}/v1/usage?start={{start}}",
        "lines": "data",
        "amount": "cost",
        "dimensions": {"model": "model", "sub_account_id": "project"},
        "currency": "USD",
        "next_page": "next",
        "page_param": "page",
    }
    return {
        "global": {"poll_interval": "1h", "timeout": "10s", "retries": 0},
        "sources": [*workload.static_sources, *workload.budget_sources, upstream],
        "budgets": [
            *workload.budgets,
            {"name": "llm", "limit": 500, "currency": "USD", "sources": [UPSTREAM_SOURCE]},
        ],
    }


# -- the baseline: a naive prometheus-client server ------------------------------


def serve_baseline(spec_path: str, port: int) -> int:
    """Run the naive server until SIGTERM (this is the baseline subprocess)."""
    from prometheus_client import CollectorRegistry, start_http_server

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NaiveCollector(spec))  # type: ignore[arg-type]
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = os.getppid()
    while not stop.wait(0.5):
        if os.getppid() != parent:  # the benchmark died without stopping us
            break
    server.shutdown()
    server.server_close()
    thread.join(5)
    return 0


class NaiveCollector:
    """Builds every family from the raw data on each scrape, as a per-scrape exporter does.

    It holds the data as floats (cheaper than the exporter's Decimals) and
    computes nothing it does not export, so the baseline errs on the fast side.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.sources: list[dict[str, Any]] = spec["sources"]
        self.budgets: list[dict[str, Any]] = spec["budgets"]
        self.version: str = spec["version"]
        self.started = time.time()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = datetime.now(UTC)
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        elapsed = max((now - start) / (end - start), 1 / 30)
        totals: dict[str, float] = {}
        for source in self.sources:
            totals[source["name"]] = sum(float(line["amount"]) for line in source["lines"])

        names = ["budget", "currency", "period"]
        budget_families = [
            GaugeMetricFamily(name, "Budget figure.", labels=names)
            for name in (
                "budget_limit_amount",
                "budget_spend_amount",
                "budget_billed_spend_amount",
                "budget_metered_spend_amount",
                "budget_forecast_amount",
                "budget_usage_ratio",
                "budget_forecast_ratio",
                "budget_warning_threshold_ratio",
                "budget_stop_threshold_ratio",
                "budget_anomaly_threshold_ratio",
                "budget_anomaly_min_daily_amount",
                "budget_anomaly_min_history_seconds",
                "budget_burn_rate_critical_horizon_seconds",
                "budget_burn_rate_warning_horizon_seconds",
                "budget_period_start_timestamp_seconds",
                "budget_period_end_timestamp_seconds",
            )
        ]
        for budget in self.budgets:
            limit = float(budget["limit"])
            spend = sum(totals[name] for name in budget["sources"])
            forecast = spend / elapsed
            values = [
                limit,
                spend,
                spend,  # all billed: the workload has no meter
                0.0,
                forecast,
                spend / limit,
                forecast / limit,
                0.8,
                0.95,
                3.0,
                10.0,
                7 * 86400.0,
                3 * 86400.0,
                7 * 86400.0,
                start.timestamp(),
                end.timestamp(),
            ]
            labels = [budget["name"], budget["currency"], budget.get("period", "monthly")]
            for family, value in zip(budget_families, values, strict=True):
                family.add_metric(labels, value)
        yield from budget_families

        held = GaugeMetricFamily("budget_held_amount", "Held.", labels=["budget", "currency"])
        for budget in self.budgets:
            held.add_metric([budget["name"], budget["currency"]], 0.0)  # nothing held
        yield held
        store = GaugeMetricFamily("budget_exporter_holds_store_up", "Store.", labels=["store"])
        store.add_metric(["memory"], 1)
        yield store

        feeds = GaugeMetricFamily(
            "budget_source_info", "Sources of budgets.", labels=[*names, "source", "provider"]
        )
        providers = {source["name"]: source["provider"] for source in self.sources}
        for budget in self.budgets:
            labels = [budget["name"], budget["currency"], budget.get("period", "monthly")]
            for name in budget["sources"]:
                feeds.add_metric([*labels, name, providers[name]], 1)
        yield feeds

        labels = ["source", "provider"]
        source_families = [
            GaugeMetricFamily(name, "Source health.", labels=labels)
            for name in (
                "budget_source_up",
                "budget_source_last_success_timestamp_seconds",
                "budget_source_last_attempt_timestamp_seconds",
                "budget_source_poll_duration_seconds",
                "budget_source_poll_interval_seconds",
            )
        ]
        requests = CounterMetricFamily(
            "budget_source_api_requests", "Upstream requests.", labels=[*labels, "status"]
        )
        windows = GaugeMetricFamily(
            "budget_source_window_up", "Window health.", labels=[*labels, "period"]
        )
        for source in self.sources:
            values = [source["name"], source["provider"]]
            for family, value in zip(
                source_families, [1, self.started, self.started, 0.01, 3600], strict=True
            ):
                family.add_metric(values, value)
            windows.add_metric([*values, "monthly"], 1)
            for status in REQUEST_STATUSES:
                requests.add_metric([*values, status], 0)
        yield from source_families
        yield windows
        yield requests

        keys = sorted({k for s in self.sources for line in s["lines"] for k in line["dimensions"]})
        cost = GaugeMetricFamily(
            "budget_source_cost_amount",
            "Month-to-date spend by dimensions.",
            labels=["source", "provider", "currency", "period", *keys],
        )
        for source in self.sources:
            fixed = [source["name"], source["provider"], source["currency"], "monthly"]
            for line in source["lines"]:
                dims = line["dimensions"]
                cost.add_metric([*fixed, *(dims.get(k, "") for k in keys)], float(line["amount"]))
        yield cost

        info = GaugeMetricFamily(
            "budget_exporter_build_info", "Build information.", labels=["version"]
        )
        info.add_metric([self.version], 1)
        yield info
        yield GaugeMetricFamily(
            "budget_exporter_config_last_reload_successful", "Reload status.", value=1
        )
        yield GaugeMetricFamily(
            "budget_exporter_config_last_reload_success_timestamp_seconds",
            "Reload time.",
            value=self.started,
        )
        yield CounterMetricFamily(
            "budget_currency_mismatch_lines",
            "Mismatched lines.",
            labels=["budget", "source", "currency"],
        )


def baseline_spec(workload: Workload, version: str) -> dict[str, Any]:
    """The same data as the exporter's config, in the shape the naive collector reads."""
    sources = [
        {"name": s["name"], "provider": "static", "currency": "USD", "lines": s["lines"]}
        for s in workload.static_sources
    ]
    sources += [
        {
            "name": s["name"],
            "provider": "static",
            "currency": "USD",
            "lines": [{"amount": s["amount"], "dimensions": {}}],
        }
        for s in workload.budget_sources
    ]
    sources.append(
        {
            "name": UPSTREAM_SOURCE,
            "provider": "http_json",
            "currency": "USD",
            "lines": [
                {
                    "amount": item["cost"],
                    "dimensions": {"model": item["model"], "sub_account_id": item["project"]},
                }
                for page in workload.upstream_pages
                for item in page
            ],
        }
    )
    budgets = [
        *workload.budgets,
        {"name": "llm", "limit": 500, "currency": "USD", "sources": [UPSTREAM_SOURCE]},
    ]
    return {"version": version, "sources": sources, "budgets": budgets}


# -- the counting upstream ---------------------------------------------------------


class CountingUpstream:
    """A loopback JSON usage API (two pages) that counts every request it answers."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self._count = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with upstream._lock:
                    upstream._count += 1
                query = parse_qs(urlsplit(self.path).query)
                page = int(query.get("page", ["1"])[0])
                if not 1 <= page <= len(upstream.pages):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                following = str(page + 1) if page < len(upstream.pages) else None
                body = json.dumps({"data": upstream.pages[page - 1], "next": following}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


# -- processes and HTTP --------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, accept_gzip: bool = False) -> tuple[int, bytes, float]:
    """One GET on a fresh connection: status, body as sent, seconds until fully read."""
    headers = {"Accept-Encoding": "gzip" if accept_gzip else "identity"}
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.getheader("Content-Encoding") == "gzip" and not accept_gzip:
            raise RuntimeError("server sent gzip to a client that did not ask for it")
        return response.status, body, elapsed
    finally:
        conn.close()


def metrics_text(port: int) -> str:
    status, body, _ = get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered HTTP {status}")
    return body.decode()


@dataclass
class Managed:
    """A server subprocess that is always stopped."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int
    exit_code: int | None = None

    def stop(self) -> None:
        harness.stop_process(self.process)
        self.exit_code = self.process.returncode

    def log_tail(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return ""


def spawn(name: str, argv: list[str], workdir: Path, port: int) -> Managed:
    argv = harness.dying_with_parent(argv)  # the servers end with this script
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return Managed(name, process, log, port)


def wait_until(managed: Managed, check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise RuntimeError(
                f"{managed.name} exited with {managed.process.returncode} while waiting for "
                f"{what}:\n{managed.log_tail()}"
            )
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}:\n{managed.log_tail()}")


def start_exporter(config: Path, workdir: Path, timeout: float) -> Managed:
    """Start ``python -m budget_exporter`` and wait until it serves the whole workload."""
    for _ in range(3):  # the free port can be taken between probing and binding
        port = free_port()
        exporter = spawn(
            "exporter",
            [
                sys.executable,
                "-m",
                "budget_exporter",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            workdir,
            port,
        )
        try:
            wait_until(
                exporter,
                lambda p=port: get(p, "/-/ready")[0] == 200,  # type: ignore[misc]
                timeout,
                "the exporter's /-/ready",
            )
            return exporter
        except RuntimeError:
            exporter.stop()
            if "cannot listen" not in exporter.log_tail():
                raise
    raise RuntimeError("could not find a free port for the exporter")


def start_baseline(spec: Path, workdir: Path, timeout: float) -> Managed:
    port = free_port()
    baseline = spawn(
        "baseline",
        [sys.executable, __file__, "--serve-baseline", str(spec), "--port", str(port)],
        workdir,
        port,
    )

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    try:
        wait_until(baseline, listening, timeout, "the baseline server")
    except RuntimeError:
        baseline.stop()
        raise
    return baseline


# -- measurements ----------------------------------------------------------------------


def series_of(text: str) -> list[str]:
    """The series identities (name and labels) of an exposition, in order.

    The exporter's ``process_*`` metrics (rendered per scrape) are left out: the
    baseline has no process collector, which if anything makes it faster.
    """
    return [
        line.rsplit(" ", 1)[0]
        for line in text.splitlines()
        if line and line[0] != "#" and not line.startswith("process_")
    ]


def sample_values(text: str, name: str, source: str) -> list[float]:
    prefix, label = name + "{", f'source="{source}"'
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and label in line
    ]


def wait_for_workload(exporter: Managed, workload: Workload, timeout: float) -> str:
    """After /-/ready, wait until the last rebuild has landed every series."""
    found: dict[str, str] = {}

    def complete() -> bool:
        text = metrics_text(exporter.port)
        found["text"] = text
        return (
            len(series_of(text)) >= workload.expected_series
            and text.count("\nbudget_source_cost_amount{") == workload.cost_lines
            and sample_values(text, "budget_source_up", UPSTREAM_SOURCE) == [1.0]
            and text.count("\nbudget_limit_amount{") == len(workload.budgets) + 1
        )

    wait_until(exporter, complete, timeout, "every source's first poll in /metrics")
    return found["text"]


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)
    body_bytes: int = 0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.samples)
        return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)] * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "scrapes": len(self.samples),
            "median_ms": round(self.median_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "body_bytes": self.body_bytes,
        }


def scrape_into(timing: Timing, port: int, accept_gzip: bool) -> None:
    status, body, elapsed = get(port, "/metrics", accept_gzip)
    if status != 200:
        raise RuntimeError(f"/metrics answered HTTP {status}")
    timing.samples.append(elapsed)
    timing.body_bytes = len(body)


def time_interleaved(
    exporter_port: int,
    baseline_port: int,
    accept_gzip: bool,
    exporter_count: int,
    baseline_count: int,
    budget_s: float,
) -> tuple[Timing, Timing]:
    """Sequential GETs of both servers' /metrics, interleaved in rounds.

    Each round is a block of exporter GETs followed by one baseline GET, so
    both are sampled over the same stretch of time and a burst of load from
    elsewhere on the machine hits both alike.  Stops early (after at least 3
    rounds) once ``budget_s`` has passed.
    """
    exporter, baseline = Timing(), Timing()
    deadline = time.monotonic() + budget_s
    per_round = max(exporter_count // max(baseline_count, 1), 1)
    for done in range(max(baseline_count, 1)):
        for _ in range(per_round):
            scrape_into(exporter, exporter_port, accept_gzip)
        scrape_into(baseline, baseline_port, accept_gzip)
        if done >= 2 and time.monotonic() > deadline:
            break
    return exporter, baseline


def upstream_per_scrapes(
    exporter: Managed, upstream: CountingUpstream, scrapes: int
) -> dict[str, Any]:
    """Upstream requests caused by ``scrapes`` scrapes, seen by the upstream and the exporter."""
    for _ in range(3):
        before = metrics_text(exporter.port)
        upstream_before = upstream.count
        for _ in range(scrapes):
            status, _, _ = get(exporter.port, "/metrics")
            if status != 200:
                raise RuntimeError(f"/metrics answered HTTP {status}")
        upstream_after = upstream.count
        after = metrics_text(exporter.port)
        attempt = "budget_source_last_attempt_timestamp_seconds"
        if sample_values(before, attempt, UPSTREAM_SOURCE) != sample_values(
            after, attempt, UPSTREAM_SOURCE
        ):
            continue  # a scheduled poll (e.g. a month boundary) ran: measure again
        counter = "budget_source_api_requests_total"
        counted_before = sum(sample_values(before, counter, UPSTREAM_SOURCE))
        counted_after = sum(sample_values(after, counter, UPSTREAM_SOURCE))
        return {
            "scrapes": scrapes,
            "requests_before": upstream_before,
            "upstream_requests": upstream_after - upstream_before,
            "counter_before": int(counted_before),
            "counter_delta": int(counted_after - counted_before),
            "counter_matches_upstream": int(counted_after) == upstream_after,
        }
    raise RuntimeError("scheduled polls kept running during the scrape window")


# -- the run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    series: int
    scrapes: int
    baseline_scrapes: int
    upstream_scrapes: int
    phase_seconds: float
    startup_seconds: float


def run(settings: Settings) -> dict[str, Any]:
    from budget_exporter import __version__

    started = time.monotonic()
    workload = build_workload(settings.series)
    processes: list[Managed] = []
    upstream = CountingUpstream(workload.upstream_pages)
    upstream.start()
    with tempfile.TemporaryDirectory(prefix="budget-bench-") as tmp:
        workdir = Path(tmp)
        try:
            config = workdir / "bench.yml"  # JSON is YAML, and much faster to write
            config.write_text(json.dumps(exporter_config(workload, upstream.port)))
            spec = workdir / "baseline.json"
            spec.write_text(json.dumps(baseline_spec(workload, __version__)))

            baseline = start_baseline(spec, workdir, settings.startup_seconds)
            processes.append(baseline)
            exporter = start_exporter(config, workdir, settings.startup_seconds)
            processes.append(exporter)
            first = wait_for_workload(exporter, workload, settings.startup_seconds)
            startup = time.monotonic() - started

            upstream_result = upstream_per_scrapes(exporter, upstream, settings.upstream_scrapes)

            exporter_text = gzip.decompress(get(exporter.port, "/metrics", True)[1]).decode()
            baseline_text = gzip.decompress(get(baseline.port, "/metrics", True)[1]).decode()
            exporter_series, baseline_series = series_of(exporter_text), series_of(baseline_text)
            if series_of(first) != exporter_series:
                raise RuntimeError("the exporter's series changed during the run")

            timings = {}
            for encoding in ("plain", "gzip"):
                accept_gzip = encoding == "gzip"
                for server in (exporter, baseline):
                    get(server.port, "/metrics", accept_gzip)  # warm-up
                timings[("exporter", encoding)], timings[("baseline", encoding)] = time_interleaved(
                    exporter.port,
                    baseline.port,
                    accept_gzip,
                    settings.scrapes,
                    settings.baseline_scrapes,
                    settings.phase_seconds,
                )
        finally:
            for process in reversed(processes):
                process.stop()
            upstream.stop()

    ratios = {
        encoding: timings[("exporter", encoding)].median_ms
        / timings[("baseline", encoding)].median_ms
        for encoding in ("plain", "gzip")
    }
    p95_ratios = {
        encoding: timings[("exporter", encoding)].p95_ms / timings[("baseline", encoding)].p95_ms
        for encoding in ("plain", "gzip")
    }
    return {
        "workload": {
            "series": len(exporter_series),
            "cost_lines": exporter_text.count("\nbudget_source_cost_amount{"),
            "budgets": exporter_text.count("\nbudget_limit_amount{"),
            "sources": workload.source_count,
            "baseline_series": len(baseline_series),
            "same_series": sorted(exporter_series) == sorted(baseline_series),
        },
        "latency": {
            f"{name}_{encoding}": timing.as_dict() for (name, encoding), timing in timings.items()
        },
        "ratio_median": {k: round(v, 5) for k, v in ratios.items()},
        "ratio_p95": {k: round(v, 5) for k, v in p95_ratios.items()},
        "ratio_target": TARGET_RATIO,
        "ratio_target_met": all(v <= TARGET_RATIO for v in ratios.values()),
        "upstream": {
            **upstream_result,
            "target": TARGET_UPSTREAM,
            "target_met": upstream_result["upstream_requests"] == TARGET_UPSTREAM
            and upstream_result["counter_delta"] == TARGET_UPSTREAM,
        },
        "exporter_exit_code": exporter.exit_code,
        "startup_seconds": round(startup, 2),
        "total_seconds": round(time.monotonic() - started, 2),
    }


def report(result: dict[str, Any]) -> str:
    w, lat, up = result["workload"], result["latency"], result["upstream"]
    out = [
        f"/metrics with {w['series']:,} series ({w['cost_lines']:,} spend lines, "
        f"{w['budgets']:,} budgets, {w['sources']} sources); baseline serves "
        f"{w['baseline_series']:,} series, same set: {'yes' if w['same_series'] else 'NO'}",
        "",
        f"{'server':<10} {'encoding':<9} {'scrapes':>7} {'median ms':>10} {'p95 ms':>9} "
        f"{'body KiB':>9}",
    ]
    for key in ("exporter_plain", "baseline_plain", "exporter_gzip", "baseline_gzip"):
        name, encoding = key.split("_")
        t = lat[key]
        out.append(
            f"{name:<10} {encoding:<9} {t['scrapes']:>7} {t['median_ms']:>10.2f} "
            f"{t['p95_ms']:>9.2f} {t['body_bytes'] / 1024:>9.0f}"
        )
    verdict = "met" if result["ratio_target_met"] else "NOT met"
    rm, rp = result["ratio_median"], result["ratio_p95"]
    out += [
        "",
        f"ratio exporter/baseline (median): plain {rm['plain']:.4f}, gzip {rm['gzip']:.4f}"
        f"  (p95: plain {rp['plain']:.4f}, gzip {rp['gzip']:.4f})"
        f"  target <= {result['ratio_target']}: {verdict}",
        f"upstream requests per {up['scrapes']} scrapes: {up['upstream_requests']} "
        f"(budget_source_api_requests_total delta: {up['counter_delta']}; first poll sent "
        f"{up['requests_before']}, counter agrees with upstream: "
        f"{'yes' if up['counter_matches_upstream'] else 'NO'})  target {up['target']}: "
        f"{'met' if up['target_met'] else 'NOT met'}",
        f"startup {result['startup_seconds']:.1f}s, total {result['total_seconds']:.1f}s, "
        f"exporter exit code after SIGTERM: {result['exporter_exit_code']}",
    ]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast run (~3k series)")
    parser.add_argument("--series", type=int, help="series to serve (default 30000; quick 3000)")
    parser.add_argument("--scrapes", type=int, help="timed exporter GETs per encoding")
    parser.add_argument("--baseline-scrapes", type=int, help="timed baseline GETs per encoding")
    parser.add_argument("--upstream-scrapes", type=int, default=100)
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=30.0,
        help="stop a timed phase early after this long (default %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--serve-baseline", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline:
        return serve_baseline(args.serve_baseline, args.port)
    quick = args.quick
    settings = Settings(
        series=args.series or (3000 if quick else 30000),
        scrapes=args.scrapes or (30 if quick else 200),
        baseline_scrapes=args.baseline_scrapes or (5 if quick else 25),
        upstream_scrapes=args.upstream_scrapes,
        phase_seconds=args.phase_seconds,
        startup_seconds=60.0,
    )
    harness.stop_on_sigterm()
    return harness.finish(lambda: run(settings), report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
