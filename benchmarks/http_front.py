"""How a legitimate scraper fares while the HTTP front is under attack.

Starts the real exporter (``python -m budget_exporter``, basic auth with a
bcrypt hash of cost 10) on 127.0.0.1 and measures the latency of an
authenticated ``GET /metrics`` on a kept-alive connection:

* quiet (the baseline, measured in the same run);
* during a wrong-password flood (12 clients guessing as fast as they are answered);
* right after a burst of 500 connections;
* while 200 slowloris clients trickle headers.

Prints p50/p99 for each and the ratio of each p99 to the quiet one.  The targets
(issue 10): under the flood within 2x of quiet; after the burst under 100 ms.

    python3 benchmarks/http_front.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bcrypt
import requests

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
sources: [{name: a, provider: static, amount: 1, currency: USD}]
budgets: [{name: b, limit: 10, currency: USD}]
"""
AUTH = ("prom", "scrape-pass")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_exporter(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    (workdir / "config.yml").write_text(CONFIG)
    hashed = bcrypt.hashpw(AUTH[1].encode(), bcrypt.gensalt(rounds=10)).decode()
    (workdir / "web.yml").write_text(f"basic_auth_users:\n  {AUTH[0]}: '{hashed}'\n")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'exporter'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "budget_exporter",
            f"--config.file={workdir / 'config.yml'}",
            f"--web.config.file={workdir / 'web.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.read-timeout=5s",
            "--log.level=error",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/-/ready", auth=AUTH, timeout=1).status_code == 200:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the exporter did not become ready")


def scrape_latencies(url: str, count: int) -> list[float]:
    times = []
    with requests.Session() as session:
        for _ in range(count):
            started = time.perf_counter()
            session.get(f"{url}/metrics", auth=AUTH, timeout=30).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(times, n=100)
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "samples": len(times)}


FLOOD = """
import sys, threading, time, requests
url, seconds = sys.argv[1], float(sys.argv[2])
def guess(worker):
    i, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        i += 1
        requests.get(url + "/metrics", auth=("prom", f"guess-{worker}-{i}"), timeout=120)
threads = [threading.Thread(target=guess, args=(w,)) for w in range(12)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def under_flood(url: str, count: int) -> list[float]:
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, url, "3"])
    try:
        time.sleep(0.3)
        return scrape_latencies(url, count)
    finally:
        flood.wait(180)


def after_burst(url: str, count: int) -> list[float]:
    port = int(url.rsplit(":", 1)[1])
    burst = []
    for _ in range(500):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        burst.append(sock)
    try:
        times = []
        for _ in range(count):  # a new connection each time, as after the burst
            started = time.perf_counter()
            requests.get(f"{url}/metrics", auth=AUTH, timeout=30).raise_for_status()
            times.append(time.perf_counter() - started)
        return times
    finally:
        for sock in burst:
            sock.close()


def during_slowloris(url: str, count: int) -> list[float]:
    port = int(url.rsplit(":", 1)[1])
    stop = threading.Event()
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]

    def trickle() -> None:
        while not stop.wait(0.5):
            for sock in clients:
                with contextlib.suppress(OSError):
                    sock.send(b"X")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        return scrape_latencies(url, count)
    finally:
        stop.set()
        thread.join()
        for sock in clients:
            sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    count = 30 if args.quick else 300
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_exporter(Path(tmp))
        try:
            scrape_latencies(url, 5)  # warm: the password is now cached
            results = {
                "quiet": summary(scrape_latencies(url, count)),
                "wrong_password_flood": summary(under_flood(url, count)),
                "after_500_connection_burst": summary(after_burst(url, min(count, 50))),
                "slowloris_200": summary(during_slowloris(url, count)),
            }
        finally:
            process.terminate()
            process.wait(30)
    quiet = results["quiet"]["p99_ms"]
    print(f"{'scenario':<28} {'p50 ms':>8} {'p99 ms':>8} {'p99 / quiet':>12}")
    for name, result in results.items():
        ratio = result["p99_ms"] / quiet
        result["p99_ratio"] = ratio
        print(f"{name:<28} {result['p50_ms']:8.2f} {result['p99_ms']:8.2f} {ratio:12.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
