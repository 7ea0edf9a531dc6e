"""The scale benchmark runs end to end (quick mode); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.benchmarks import BENCHMARKS, run_quick


def test_quick_scale_benchmark_completes(tmp_path: Path) -> None:
    result, stdout = run_quick("scale.py", tmp_path / "result.json")

    rows = result["scaling"]
    assert [row["sources"] for row in rows] == [20, 100]
    assert rows[0]["ratio"] == 1.0
    for row in rows:
        assert row["seconds"] > 0 and row["rss_mb"] > 0
        # the pool, its scheduler, the rebuild thread, the HTTP server and main;
        # not one thread per source
        assert row["threads"] < 8 + 10
    restart = result["restart"]
    assert restart["sources"] == 100 and restart["seconds"] > 0 and restart["rss_mb"] > 0
    assert restart["polled_again"] == 0  # every saved result younger than its interval
    assert "Restart with --storage.path, 100 saved sources" in stdout
    big = result["big_source"]
    assert (big["lines"], big["budgets"]) == (2000, 200)
    assert 0 < big["rebuild_median_s"] <= big["rebuild_max_s"]
    assert big["full_scan_s"] > 0
    scrapes = result["scrapes"]
    for phase in ("idle", "polling"):
        assert scrapes[phase]["scrapes"] >= 4
        assert 0 < scrapes[phase]["median_ms"] <= scrapes[phase]["p99_ms"]
    assert scrapes["p99_ratio"] > 0
    assert "Time from start until /metrics shows every budget" in stdout
    assert "p99 while polling / p99 idle" in stdout


def test_the_restart_row_alone_repeated(tmp_path: Path) -> None:
    out = tmp_path / "restart.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "scale.py"), "--quick", "--only", "restart",
         "--sizes", "50", "--runs", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert list(result) == ["restart"]  # no other part ran
    restart = result["restart"]
    assert restart["sources"] == 50 and len(restart["runs_seconds"]) == 2
    assert restart["seconds"] == min(restart["runs_seconds"]) > 0
    assert restart["polled_again"] == 0
    assert done.stdout.startswith("Restart with --storage.path, 50 saved sources")
    assert "(best of 2: " in done.stdout
