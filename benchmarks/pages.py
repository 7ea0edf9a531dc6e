"""Benchmark: the landing page and ``/api/v1/budgets`` at 2,000 budgets -- bytes on the wire
and the exporter's CPU per request.

The real exporter (``python -m budget_exporter``) runs a configuration of static sources
and 2,000 budgets with labels (``--budgets N``; ``--quick``: 100) on 127.0.0.1.  For each
page the script measures, with a new connection per request:

* **bytes on the wire**: the body plain and with ``Accept-Encoding: gzip``;
* **the first request** after the snapshot was built: it renders the page (wall time);
* **CPU per request** afterwards: the exporter process's own CPU time (``/proc/<pid>/stat``,
  user + system) over ``--requests`` GETs, divided by their number, plain and gzip;
* **a filtered request** (``?state=exceeded``), rendered once as well;
* **304**: a request sending the ``ETag`` back in ``If-None-Match``.

Before this change (issue 23, item 22) each request rendered its page again: 1.32 MB and
about 145 ms of CPU for ``/``, 3.3 MB and about 355 ms for ``/api/v1/budgets``, uncompressed
even when gzip was asked for (measured in the same way, see benchmarks/README.md).
Nothing here asserts on timings: it is a benchmark, not a timed test.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

PAGES = ("/", "/api/v1/budgets")


def config(budgets: int) -> str:
    """Static sources and budgets with labels."""
    return json.dumps(harness.labelled_budgets(budgets, limit=100))


def start_exporter(workdir: Path, budgets: int) -> tuple[subprocess.Popen[bytes], int]:
    path = workdir / "pages.yml"
    path.write_text(config(budgets))
    port = harness.free_port()
    argv = harness.exporter_argv(path, port, "--log.level=error")
    process = subprocess.Popen(argv, env=harness.exporter_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if get(port, "/-/ready")[0] == 200:
                return process, port
        except OSError:
            time.sleep(0.1)
    harness.stop_process(process)
    raise RuntimeError("the exporter did not become ready")


def get(port: int, path: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    """One GET on a new connection: status, the body as sent (not decoded), headers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(pid: int, port: int, path: str, count: int, **headers: str) -> float:
    before = cpu_seconds(pid)
    for _ in range(count):
        status, _, _ = get(port, path, **headers)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    return (cpu_seconds(pid) - before) / count


def measure_page(pid: int, port: int, path: str, count: int) -> dict[str, Any]:
    started = time.perf_counter()
    status, plain, headers = get(port, path, **{"Accept-Encoding": "identity"})
    first = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}")
    _, zipped, zipped_headers = get(port, path, **{"Accept-Encoding": "gzip"})
    filtered = path + "?state=exceeded"
    started = time.perf_counter()
    get(port, filtered, **{"Accept-Encoding": "gzip"})
    first_filtered = time.perf_counter() - started
    etag = headers.get("ETag")
    not_modified = get(port, path, **{"If-None-Match": etag}) if etag else (None, b"", {})
    return {
        "bytes_plain": len(plain),
        "bytes_gzip": len(zipped),
        "gzip": zipped_headers.get("Content-Encoding") == "gzip",
        "first_request_ms": round(first * 1000, 1),
        "first_filtered_request_ms": round(first_filtered * 1000, 1),
        "cpu_ms_per_request_plain": round(
            cpu_per_request(pid, port, path, count, **{"Accept-Encoding": "identity"}) * 1000, 2
        ),
        "cpu_ms_per_request_gzip": round(
            cpu_per_request(pid, port, path, count, **{"Accept-Encoding": "gzip"}) * 1000, 2
        ),
        "etag": etag is not None,
        "if_none_match_status": not_modified[0],
        "if_none_match_bytes": len(not_modified[1]),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    budgets = 100 if args.quick else args.budgets
    count = 10 if args.quick else args.requests
    with tempfile.TemporaryDirectory() as tmp:
        process, port = start_exporter(Path(tmp), budgets)
        try:
            pages = {path: measure_page(process.pid, port, path, count) for path in PAGES}
        finally:
            harness.stop_process(process)
    return {"budgets": budgets, "requests": count, "pages": pages}


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['budgets']} budgets, {result['requests']} requests per row",
        f"{'page':<18} {'plain':>10} {'gzip':>9} {'first ms':>9} {'CPU ms plain':>13} "
        f"{'CPU ms gzip':>12} {'If-None-Match':>14}",
    ]
    for path, page in result["pages"].items():
        lines.append(
            f"{path:<18} {page['bytes_plain']:>10,} {page['bytes_gzip']:>9,} "
            f"{page['first_request_ms']:>9.1f} {page['cpu_ms_per_request_plain']:>13.2f} "
            f"{page['cpu_ms_per_request_gzip']:>12.2f} "
            f"{page['if_none_match_status'] or 'no ETag':>14}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 budgets (a smoke run)")
    parser.add_argument("--budgets", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=50, help="GETs per CPU measurement")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    harness.stop_on_sigterm()
    return harness.finish(lambda: measure(args), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
