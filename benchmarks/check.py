"""Throughput and latency of ``POST /api/v1/check``, beside a bare HTTP server.

Starts, on 127.0.0.1, two bare Python HTTP servers answering a fixed JSON body
to every POST (the baselines: ``bare_stdlib``, written the usual way with
``http.server`` -- headers and body in separate writes, so on a kept-alive
connection each answer waits out the client's delayed ACK; ``bare_tuned``, one
write and ``TCP_NODELAY``), the real exporter (``python -m budget_exporter``)
with 2,000 budgets over one source, and, when ``redis-server`` is installed, a
Redis with a second exporter keeping its holds there.  50 concurrent clients,
each on its own kept-alive connection, send checks of random budgets for a
fixed time per scenario:

* each bare server (measured first and last; the mean is its baseline);
* checks without holds, and with holds (``"hold": true``), holds in memory;
* the same with the holds in Redis (when ``redis-server`` is installed).

Prints checks per second, p50 and p99 per scenario and each one's ratios to
both baselines (throughput ratio; p99 ratio).  Targets (issue 18), in memory
with holds: throughput at least 0.8x the bare server's, p99 at most 2x.

    python3 benchmarks/check.py [--quick] [--seconds S] [--clients N] [--json PATH]
                                [--scenarios memory_holds,...]

``--scenarios`` runs only some of the exporter's scenarios (the bare servers always run:
the ratios need them); the targets are judged when ``memory_holds`` is among them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

ROOT = Path(__file__).resolve().parent.parent
BARE_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
BODY = (json.dumps({"allowed": True, "budget": "team-0", "state": "ok", "ratio_after": 0.1,
    "reason": "spend is below the stop threshold"}) + "\\n").encode()
ANSWER = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
    + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY)
class Stdlib(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
class Tuned(Stdlib):
    disable_nagle_algorithm = True
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.wfile.write(ANSWER)  # one write: no Nagle / delayed-ACK stall
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
handler = Tuned if sys.argv[2] == "tuned" else Stdlib
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


def config_text(budgets: int, redis_url: str | None) -> str:
    """One static source with a line per team, and ``budgets`` budgets over it."""
    teams = max(budgets // 4, 1)
    lines = "\n".join(
        f"      - {{amount: 10, dimensions: {{sub_account_id: team-{i}, model: m-{i % 7}}}}}"
        for i in range(teams)
    )
    entries = [
        f"  - {{name: team-{i}, limit: 1e9, currency: USD, sources: [llm],"
        f" match: {{sub_account_id: team-{i % teams}}}}}"
        for i in range(budgets)
    ]
    store = (
        f"      store: redis\n      redis: {{url: '{redis_url}', timeout: 2s}}\n"
        if redis_url
        else ""
    )
    return (
        "global:\n"
        "  check:\n"
        "    max_data_age: 1h\n"
        "    holds:\n"
        "      default_ttl: 2s\n"
        "      max_per_client: 1000000\n"
        "      max_total: 10000000\n"
        f"{store}"
        "sources:\n"
        "  - name: llm\n"
        "    provider: static\n"
        "    currency: USD\n"
        "    lines:\n"
        f"{lines}\n"
        "budgets:\n" + "\n".join(entries) + "\n"
    )


def wait_ready(url_host: str, port: int, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((url_host, port), timeout=1) as sock:
                sock.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                if sock.recv(64).startswith(b"HTTP/1.1 200") or path == "":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing ready on {url_host}:{port}{path} after {timeout:g}s")


def start_exporter(workdir: Path, name: str, text: str) -> tuple[subprocess.Popen[bytes], int]:
    config = workdir / f"{name}.yml"
    config.write_text(text)
    port = harness.free_port()
    argv = harness.exporter_argv(config, port, "--log.level=error")
    process = subprocess.Popen(argv, env=harness.exporter_env(), stderr=subprocess.DEVNULL)
    wait_ready("127.0.0.1", port, "/-/ready")
    return process, port


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = harness.free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(workdir)]
    process = subprocess.Popen(
        harness.dying_with_parent(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, port
        except OSError:
            time.sleep(0.05)
    harness.stop_process(process)
    raise RuntimeError("redis-server did not answer PING")


async def _client(
    port: int, bodies: list[bytes], start: float, end: float, times: list[float]
) -> int:
    """One kept-alive connection sending checks until ``end``; latencies after ``start``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = 0
    try:
        i = random.randrange(len(bodies))
        while True:
            now = time.perf_counter()
            if now >= end:
                return answered
            body = bodies[i % len(bodies)]
            i += 1
            writer.write(
                b"POST /api/v1/check HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"answer {head.split(b' ', 2)[1].decode()}: {head[:200]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if now >= start:
                times.append(time.perf_counter() - now)
                answered += 1
    finally:
        writer.close()


def load(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` connections for ``seconds`` (after a quarter second's warm-up)."""

    async def run() -> list[float]:
        times: list[float] = []
        start = time.perf_counter() + 0.25
        end = start + seconds
        await asyncio.gather(*(_client(port, bodies, start, end, times) for _ in range(clients)))
        return times

    times = asyncio.run(run())
    if len(times) < 10:
        raise RuntimeError(f"only {len(times)} answers in {seconds:g}s")
    return {
        "checks_per_second": len(times) / seconds,
        **harness.percentiles_ms(times),
        "answers": len(times),
    }


def bodies_for(budgets: int, hold: bool) -> list[bytes]:
    extra = ', "hold": true, "hold_seconds": 2, "client": "bench"' if hold else ""
    return [
        f'{{"budget": "team-{i}", "cost": 0.01{extra}}}'.encode()
        for i in random.sample(range(budgets), min(budgets, 500))
    ]


BASELINES = ("bare_tuned", "bare_stdlib")
SCENARIOS = ("memory_no_holds", "memory_holds", "redis_no_holds", "redis_holds")


def start_bare(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = harness.free_port()
    argv = [sys.executable, "-c", BARE_SERVER, str(port), kind.removeprefix("bare_")]
    process = subprocess.Popen(harness.dying_with_parent(argv))
    wait_ready("127.0.0.1", port, "")
    return process, port


def measure(args: argparse.Namespace) -> dict[str, Any]:
    budgets, clients, seconds = args.budgets, args.clients, args.seconds
    chosen = args.scenarios
    plain, holding = bodies_for(budgets, False), bodies_for(budgets, True)
    started: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {
        "budgets": budgets,
        "clients": clients,
        "seconds_per_scenario": seconds,
        "cpus": os.cpu_count(),
    }
    scenarios: dict[str, Any] = {}
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in BASELINES}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            bare: dict[str, int] = {}
            for kind in BASELINES:
                process, bare[kind] = start_bare(kind)
                started.append(process)
            memory_port = None
            if any(name.startswith("memory_") for name in chosen):
                memory, memory_port = start_exporter(workdir, "memory", config_text(budgets, None))
                started.append(memory)
            wants_redis = any(name.startswith("redis_") for name in chosen)
            redis = start_redis(workdir) if wants_redis else None
            redis_port = None
            if redis is not None:
                started.append(redis[0])
                url = f"redis://127.0.0.1:{redis[1]}/0"
                shared, redis_port = start_exporter(workdir, "redis", config_text(budgets, url))
                started.append(shared)
            for port in (*bare.values(), memory_port):  # warm every server up
                if port is not None:
                    load(port, plain, clients, 0.5)
            for kind in BASELINES:  # the baselines first and last, averaged
                rounds[kind].append(load(bare[kind], plain, clients, seconds))
            for name in ("memory_no_holds", "memory_holds"):
                if name in chosen:
                    assert memory_port is not None
                    bodies = holding if name == "memory_holds" else plain
                    scenarios[name] = load(memory_port, bodies, clients, seconds)
            if redis_port is not None:
                load(redis_port, plain, clients, 0.5)
                for name in ("redis_no_holds", "redis_holds"):
                    if name in chosen:
                        bodies = holding if name == "redis_holds" else plain
                        scenarios[name] = load(redis_port, bodies, clients, seconds)
            elif wants_redis:
                results["redis"] = "skipped: redis-server is not installed"
            for kind in BASELINES:
                rounds[kind].append(load(bare[kind], plain, clients, seconds))
        finally:
            for process in reversed(started):
                harness.stop_process(process)
    baselines = {
        kind: {
            key: statistics.fmean(r[key] for r in found)
            for key in ("checks_per_second", "p50_ms", "p99_ms")
        }
        | {"answers": sum(r["answers"] for r in found)}
        for kind, found in rounds.items()
    }
    results["scenarios"] = scenarios = baselines | scenarios
    for item in scenarios.values():
        for kind in BASELINES:
            base = baselines[kind]
            short = kind.removeprefix("bare_")
            item[f"throughput_vs_{short}"] = item["checks_per_second"] / base["checks_per_second"]
            item[f"p99_vs_{short}"] = item["p99_ms"] / base["p99_ms"]
    held = scenarios.get("memory_holds")
    if held is None:
        results["targets"] = {}
        return results
    results["targets"] = {
        kind.removeprefix("bare_"): {
            "throughput_at_least_0.8x": held[f"throughput_vs_{kind.removeprefix('bare_')}"] >= 0.8,
            "p99_at_most_2x": held[f"p99_vs_{kind.removeprefix('bare_')}"] <= 2.0,
        }
        for kind in BASELINES
    }
    return results


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['budgets']} budgets, {result['clients']} clients, "
        f"{result['seconds_per_scenario']:g} s per scenario, {result['cpus']} CPUs",
        f"{'scenario':<16} {'checks/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'x tuned':>8} {'p99 x':>6} {'x stdlib':>9} {'p99 x':>6}",
    ]
    for name, item in result["scenarios"].items():
        lines.append(
            f"{name:<16} {item['checks_per_second']:9.0f} {item['p50_ms']:8.2f} "
            f"{item['p99_ms']:8.2f} {item['throughput_vs_tuned']:8.2f} {item['p99_vs_tuned']:6.2f}"
            f" {item['throughput_vs_stdlib']:9.2f} {item['p99_vs_stdlib']:6.2f}"
        )
    if "redis" in result:
        lines.append(f"redis: {result['redis']}")
    for kind, met in result["targets"].items():
        lines.append(
            f"memory with holds vs bare_{kind}: throughput >= 0.8x "
            f"{'met' if met['throughput_at_least_0.8x'] else 'NOT met'}; p99 <= 2x "
            f"{'met' if met['p99_at_most_2x'] else 'NOT met'}"
        )
    return "\n".join(lines)


def main() -> int:
    harness.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument("--budgets", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"the exporter's scenarios to run, comma-separated (default: all of {SCENARIOS})",
    )
    args = parser.parse_args()
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: choose among {', '.join(SCENARIOS)} (not {unknown})")
    if args.quick:
        args.budgets, args.clients, args.seconds = 200, 10, 0.5
    return harness.finish(lambda: measure(args), report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
