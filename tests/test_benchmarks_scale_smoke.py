"""The scale benchmark runs end to end (quick mode); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "scale.py"


def test_quick_scale_benchmark_completes(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.terminate()  # the script stops its exporters on SIGTERM
        stdout, stderr = process.communicate(timeout=30)
        raise AssertionError(f"benchmark did not finish in 120s:\n{stdout}{stderr}") from None
    assert process.returncode == 0, stdout + stderr
    result = json.loads(out.read_text(encoding="utf-8"))

    rows = result["scaling"]
    assert [row["sources"] for row in rows] == [20, 100]
    assert rows[0]["ratio"] == 1.0
    for row in rows:
        assert row["seconds"] > 0 and row["rss_mb"] > 0
        # the pool, its scheduler, the rebuild thread, the HTTP server and main;
        # not one thread per source
        assert row["threads"] < 8 + 10
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
