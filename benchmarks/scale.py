"""Benchmark: many sources and budgets -- start-up time, rebuild cost, scrapes under load.

Runs everything on 127.0.0.1 and cleans up after itself:

1. **Scaling.** For N static sources with one budget each (``--sizes``, default
   100, 500, 1,000, 2,000, 5,000), the real exporter (``python -m
   budget_exporter``) is started and the time from starting the process until
   ``/metrics`` shows ``budget_usage_ratio`` for all N budgets is measured
   (the best of two runs), with the exporter's RSS and thread count at that
   moment.  The baseline is
   the smallest size of the same run: the table shows each row's time as a
   multiple of it (target: the 5,000 row within 10 s and at most ~60x the 100
   row; RSS at 5,000 <= 300 MB; threads <= poll_workers + a small constant).
2. **One big source.** One source with 20,000 lines and 2,000 budgets that
   each ``match`` one team tag, the tags shuffled through the lines (a fixed
   seed) as in real exports: the time of one snapshot rebuild (target
   <= 1 s), next to the old way measured in the same run -- every budget
   scanning every line -- timed on a slice of the budgets and scaled up.
3. **Scrapes while polls finish.** 20 concurrent scrapers (gzip, a new
   connection each) against an exporter whose 1,000 sources poll every 10 s,
   so polls finish and rebuilds run all the time, and against the same
   exporter with hourly polls (no rebuilds after start-up), in interleaved
   rounds: the p99 of ``/metrics`` in both, and their ratio (target <= 2).
4. **A restart with saved state.** The largest size with ``--storage.path``: run until
   every budget is served, stop (SIGTERM saves the state), start again (``--runs`` times,
   the best counts): the time from
   starting the process until every budget is served from the saved figures (target
   <= 2 s), the RSS then, and how many sources were polled again (none: all are
   younger than their interval).

``python benchmarks/scale.py`` prints the tables; ``--quick`` does a small run
(the smoke test uses it); ``--json PATH`` also writes the results; ``--only PART``
runs only that part (repeatable) and ``--runs N`` restarts N times (the best counts).  Nothing
here asserts on timings: it is a benchmark, not a timed test.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import harness

SIZES = (100, 500, 1000, 2000, 5000)
QUICK_SIZES = (20, 100)
POLL_WORKERS = 8
RUNS_PER_SIZE = 2
TARGET_5000_SECONDS = 10.0
TARGET_GROWTH = 60.0
TARGET_RSS_MB = 300.0
TARGET_THREADS_OVER_POOL = 6
TARGET_REBUILD_SECONDS = 1.0
TARGET_P99_RATIO = 2.0
TARGET_RESTART_SECONDS = 2.0
PARTS = ("scaling", "restart", "big_source", "scrapes")


def sources_config(n: int, interval: str) -> dict[str, Any]:
    """N static sources, one budget each (JSON is YAML, and quicker to write)."""
    return {
        "global": {"poll_interval": interval, "poll_workers": POLL_WORKERS},
        "sources": [
            {"name": f"src-{i}", "provider": "static", "amount": i % 97 + 1, "currency": "USD"}
            for i in range(n)
        ],
        "budgets": [
            {"name": f"budget-{i}", "limit": 1000, "currency": "USD", "sources": [f"src-{i}"]}
            for i in range(n)
        ],
    }


def get(port: int, path: str, gzip: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip" if gzip else "identity"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Exporter:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float

    @classmethod
    def start(cls, config: dict[str, Any], workdir: Path, *flags: str) -> Exporter:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "config.yml"
        path.write_text(json.dumps(config), encoding="utf-8")
        port = harness.free_port()
        log = workdir / "exporter.log"
        argv = harness.exporter_argv(path, port, "--log.level=warn", *flags)
        started = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return cls(process, port, log, started)

    def stop(self) -> None:
        harness.stop_process(self.process)

    def status(self, field: str) -> int:
        """A number from /proc/<pid>/status (``VmRSS`` in kB, ``Threads``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc status")

    def wait_for_budgets(self, count: int, timeout: float) -> float:
        """Seconds from process start until /metrics shows ``count`` budgets."""
        deadline = self.started + timeout
        ready = False
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the exporter exited: {tail}")
            try:
                if not ready:
                    ready = get(self.port, "/-/ready")[0] == 200
                if ready:
                    body = get(self.port, "/metrics")[1]
                    if body.count(b"\nbudget_usage_ratio{") >= count:
                        return time.monotonic() - self.started
            except OSError:
                pass  # not listening yet
            time.sleep(0.05 if not ready else 0.1)
        raise RuntimeError(f"{count} budgets not exported within {timeout:.0f}s")


def scaling(sizes: tuple[int, ...], workdir: Path, timeout: float) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        runs = []
        for _ in range(RUNS_PER_SIZE):  # the best of a few: other load on the machine only adds
            exporter = Exporter.start(sources_config(n, "1h"), workdir)
            try:
                seconds = exporter.wait_for_budgets(n, timeout)
                runs.append(
                    {
                        "sources": n,
                        "budgets": n,
                        "seconds": round(seconds, 3),
                        "rss_mb": round(exporter.status("VmRSS") / 1024, 1),
                        "threads": exporter.status("Threads"),
                    }
                )
            finally:
                exporter.stop()
        rows.append(min(runs, key=lambda row: row["seconds"]))
    base = rows[0]["seconds"]
    for row in rows:
        row["ratio"] = round(row["seconds"] / base, 2)
    return rows


def last_successes(port: int) -> dict[str, str]:
    """Each source's ``budget_source_last_success_timestamp_seconds``, as served."""
    found = {}
    for line in get(port, "/metrics")[1].decode().splitlines():
        if line.startswith("budget_source_last_success_timestamp_seconds{"):
            labels, _, value = line.rpartition(" ")
            found[labels] = value
    return found


def restart(n: int, workdir: Path, timeout: float, runs: int = 1) -> dict[str, Any]:
    """Seconds from restarting until every budget is served from the saved state (the best
    of ``runs`` restarts), the RSS then, and how many sources were polled again meanwhile."""
    storage = f"--storage.path={workdir / 'storage'}"
    config = sources_config(n, "1h")
    first = Exporter.start(config, workdir, storage)
    try:
        first.wait_for_budgets(n, timeout)
        before = last_successes(first.port)
        if len(before) != n:
            raise RuntimeError(f"{len(before)} last-success series served, not {n}")
    finally:
        first.stop()  # SIGTERM: the state is saved on the way out
    size = (workdir / "storage" / "state.json").stat().st_size
    timings, rss, polled_again = [], 0.0, 0
    for _ in range(runs):
        second = Exporter.start(config, workdir, storage)
        try:
            timings.append(second.wait_for_budgets(n, timeout))
            rss = max(rss, second.status("VmRSS") / 1024)
            after = last_successes(second.port)
        finally:
            second.stop()
        polled_again = max(polled_again, sum(after.get(k) != v for k, v in before.items()))
    return {
        "sources": n,
        "seconds": round(min(timings), 3),
        "runs_seconds": [round(t, 3) for t in timings],
        "rss_mb": round(rss, 1),
        "state_mb": round(size / 1e6, 2),
        "polled_again": polled_again,
    }


def big_source(lines: int, budgets: int, scan_slice: int) -> dict[str, Any]:
    """One rebuild with ``budgets`` match budgets over one source of ``lines`` lines."""
    from budget_exporter.accounting.budgets import line_matches
    from budget_exporter.config.loader import load_config
    from budget_exporter.core.model import Period
    from budget_exporter.runtime.engine import Engine

    regions = ("eu-west-1", "us-east-1", "ap-south-1")
    # Every team's lines spread through the export, not one at the start of it:
    # a lookup that scans until its first match must not get off cheaply.
    teams = [f"team-{i % budgets}" for i in range(lines)]
    random.Random(9).shuffle(teams)
    config = {
        "global": {"max_series_per_source": 200},
        "sources": [
            {
                "name": "cur",
                "provider": "static",
                "currency": "USD",
                "lines": [
                    {
                        "amount": f"{(i % 1000) / 100 + 0.01:.2f}",
                        "dimensions": {
                            "tag_team": teams[i],
                            "region_id": regions[i % 3],
                            "line": str(i),
                        },
                    }
                    for i in range(lines)
                ],
            }
        ],
        "budgets": [
            {
                "name": f"team-{t}",
                "limit": 1000,
                "currency": "USD",
                "match": {"tag_team": f"team-{t}"},
            }
            for t in range(budgets)
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yml"
        path.write_text(json.dumps(config), encoding="utf-8")
        engine = Engine(load_config(path))
    if not engine.poll_all_once():
        raise RuntimeError("the big static source failed to poll")
    times, warm = [], []
    for _ in range(5):
        # after a new poll, as in the exporter: a new result, so a new line index
        engine.runners["cur"].poll(rebuild=False)
        started = time.perf_counter()
        engine.rebuild()
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        engine.rebuild()  # nothing polled since: the index and its sums are reused
        warm.append(time.perf_counter() - started)
    exported = engine.snapshot.rendered.text.count(b"\nbudget_usage_ratio{")
    if exported != budgets:
        raise RuntimeError(f"{exported} of {budgets} budgets exported")

    # The old way, measured now: every budget scans every line.
    state = engine.live_states()["cur"]
    assert state.result is not None
    all_lines = state.result.lines
    chosen = engine.config.budgets[:scan_slice]
    started = time.perf_counter()
    for budget in chosen:
        total = Decimal(0)
        for line in all_lines:
            if line.period == Period.MONTHLY and line_matches(line, budget.match):
                total += line.amount
    scan = (time.perf_counter() - started) * budgets / len(chosen)
    engine.stop(timeout=1)
    return {
        "lines": lines,
        "budgets": budgets,
        "rebuild_median_s": round(statistics.median(times), 4),
        "rebuild_max_s": round(max(times), 4),
        "rebuild_unchanged_median_s": round(statistics.median(warm), 4),
        "full_scan_s": round(scan, 3),
        "scan_slice": len(chosen),
        "speedup": round(scan / statistics.median(times), 1),
    }


def scrape_latency(port: int, scrapers: int, seconds: float) -> list[float]:
    timings: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def scraper() -> None:
        mine = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            status, _ = get(port, "/metrics", gzip=True)
            if status != 200:
                raise RuntimeError(f"/metrics answered {status}")
            mine.append(time.perf_counter() - started)
        with lock:
            timings.extend(mine)

    threads = [threading.Thread(target=scraper) for _ in range(scrapers)]
    gc.disable()  # the client's own collections would show up as slow scrapes
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gc.enable()
    return timings


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def scrapes_under_load(
    sources: int, scrapers: int, seconds: float, workdir: Path, timeout: float, rounds: int = 5
) -> dict[str, Any]:
    """p99 of /metrics against an exporter whose polls finish all the time, and against
    one that polls hourly, in interleaved rounds so other load on the machine hits both.

    During an idle round the polling exporter is paused (SIGSTOP), so it takes no CPU;
    when it resumes, the polls that fell due meanwhile all finish at once, which if
    anything makes its rounds harder.
    """
    result: dict[str, Any] = {"sources": sources, "scrapers": scrapers, "seconds": seconds}
    exporters: dict[str, Exporter] = {}
    timings: dict[str, list[float]] = {"idle": [], "polling": []}
    try:
        for phase, interval in (("idle", "1h"), ("polling", "10s")):
            exporters[phase] = Exporter.start(sources_config(sources, interval), workdir / phase)
            exporters[phase].wait_for_budgets(sources, timeout)
        time.sleep(1.5)  # past the start-up rebuilds
        busy = exporters["polling"].process
        for _ in range(rounds):
            for phase in ("idle", "polling"):
                if phase == "idle":
                    busy.send_signal(signal.SIGSTOP)
                try:
                    timings[phase] += scrape_latency(
                        exporters[phase].port, scrapers, seconds / rounds
                    )
                finally:
                    busy.send_signal(signal.SIGCONT)
        for phase, exporter in exporters.items():
            result[phase] = {
                "scrapes": len(timings[phase]),
                "median_ms": round(statistics.median(timings[phase]) * 1000, 2),
                "p99_ms": round(p99(timings[phase]) * 1000, 2),
                "threads": exporter.status("Threads"),
            }
    finally:
        for exporter in exporters.values():
            exporter.process.send_signal(signal.SIGCONT)
            exporter.stop()
    result["p99_ratio"] = round(result["polling"]["p99_ms"] / result["idle"]["p99_ms"], 2)
    return result


def report(result: dict[str, Any]) -> str:
    out: list[str] = []
    if "scaling" in result:
        out += report_scaling(result["scaling"])
    if "restart" in result:
        out += report_restart(result["restart"])
    if "big_source" in result:
        out += ["", *report_big_source(result["big_source"])]
    if "scrapes" in result:
        out += ["", *report_scrapes(result["scrapes"])]
    return "\n".join(out).strip("\n")


def report_scaling(rows: list[dict[str, Any]]) -> list[str]:
    out = ["Time from start until /metrics shows every budget (N static sources, 1 budget each)"]
    out.append(f"{'sources':>8} {'seconds':>8} {'x smallest':>10} {'RSS MB':>7} {'threads':>8}")
    for row in rows:
        out.append(
            f"{row['sources']:>8,} {row['seconds']:>8.2f} {row['ratio']:>10.2f} "
            f"{row['rss_mb']:>7.1f} {row['threads']:>8}"
        )
    last, first = rows[-1], rows[0]
    threads_ok = last["threads"] <= POLL_WORKERS + TARGET_THREADS_OVER_POOL
    if last["sources"] == 5000 and first["sources"] == 100:
        met = (
            last["seconds"] <= TARGET_5000_SECONDS
            and last["ratio"] <= TARGET_GROWTH
            and last["rss_mb"] <= TARGET_RSS_MB
            and threads_ok
        )
        out.append(
            f"targets: 5,000 within {TARGET_5000_SECONDS:g}s, <= {TARGET_GROWTH:g}x the 100 row, "
            f"RSS <= {TARGET_RSS_MB:g} MB, threads <= {POLL_WORKERS} workers + "
            f"{TARGET_THREADS_OVER_POOL}: {'met' if met else 'NOT met'}"
        )
    else:
        out.append(f"threads <= {POLL_WORKERS} workers + {TARGET_THREADS_OVER_POOL}: {threads_ok}")
    return out


def report_restart(again: dict[str, Any]) -> list[str]:
    runs = again.get("runs_seconds", [again["seconds"]])
    each = f" (best of {len(runs)}: {', '.join(f'{t:.2f}' for t in runs)})" if len(runs) > 1 else ""
    return [
        f"Restart with --storage.path, {again['sources']:,} saved sources "
        f"({again['state_mb']:.1f} MB): every budget served after {again['seconds']:.2f}s{each} "
        f"(target <= {TARGET_RESTART_SECONDS:g}s: "
        f"{'met' if again['seconds'] <= TARGET_RESTART_SECONDS else 'NOT met'}), "
        f"RSS {again['rss_mb']:.1f} MB, {again['polled_again']} polled again"
    ]


def report_big_source(big: dict[str, Any]) -> list[str]:
    return [
        f"One source, {big['lines']:,} lines, {big['budgets']:,} match budgets: one rebuild after "
        "a poll "
        f"median {big['rebuild_median_s']:.3f}s, max {big['rebuild_max_s']:.3f}s "
        f"(target <= {TARGET_REBUILD_SECONDS:g}s: "
        f"{'met' if big['rebuild_max_s'] <= TARGET_REBUILD_SECONDS else 'NOT met'}), "
        f"{big['rebuild_unchanged_median_s']:.3f}s when nothing was polled since; "
        f"every budget scanning every line (the old way, timed on {big['scan_slice']} budgets "
        f"and scaled): {big['full_scan_s']:.1f}s, {big['speedup']:g}x slower"
    ]


def report_scrapes(load: dict[str, Any]) -> list[str]:
    out = [
        f"/metrics with {load['scrapers']} concurrent scrapers (gzip), {load['sources']:,} sources, "
        f"{load['seconds']:g}s each"
    ]
    out.append(f"{'polls':>20} {'scrapes':>8} {'median ms':>10} {'p99 ms':>8} {'threads':>8}")
    for phase, label in (("idle", "hourly (no rebuilds)"), ("polling", "every 10s")):
        row = load[phase]
        out.append(
            f"{label:>20} {row['scrapes']:>8} {row['median_ms']:>10.2f} {row['p99_ms']:>8.2f} "
            f"{row['threads']:>8}"
        )
    met = load["p99_ratio"] <= TARGET_P99_RATIO
    out.append(
        f"p99 while polling / p99 idle: {load['p99_ratio']:.2f} "
        f"(target <= {TARGET_P99_RATIO:g}: {'met' if met else 'NOT met'})"
    )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (a few seconds)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--sizes", help="comma-separated source counts (default 100,...,5000)")
    parser.add_argument("--scrape-seconds", type=float, help="length of each scrape phase")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only this part (repeatable; default: all); restart uses the largest size",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat each restart this many times (default 1)"
    )
    return parser.parse_args(argv)


def measure(
    sizes: tuple[int, ...],
    quick: bool,
    scrape_seconds: float,
    parts: tuple[str, ...] = PARTS,
    runs: int = 1,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    timeout = 120 if quick else 600
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        workdir = Path(tmp)
        if "scaling" in parts:
            result["scaling"] = scaling(sizes, workdir, timeout=timeout)
        if "restart" in parts:
            result["restart"] = restart(max(sizes), workdir / "restart", timeout, runs)
        if "big_source" in parts:
            result["big_source"] = big_source(
                lines=2000 if quick else 20000,
                budgets=200 if quick else 2000,
                scan_slice=20 if quick else 50,
            )
        if "scrapes" in parts:
            result["scrapes"] = scrapes_under_load(
                sources=100 if quick else 1000,
                scrapers=4 if quick else 20,
                seconds=scrape_seconds,
                workdir=workdir,
                timeout=120 if quick else 300,
            )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    scrape_seconds = args.scrape_seconds or (1.5 if quick else 10.0)
    harness.stop_on_sigterm()  # unwinds, so the exporter is always stopped
    parts = tuple(args.only) if args.only else PARTS
    return harness.finish(
        lambda: measure(sizes, quick, scrape_seconds, parts, max(1, args.runs)), report, args.json
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
