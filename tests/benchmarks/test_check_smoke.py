"""The check benchmark runs end to end (quick mode); no timing is asserted."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.benchmarks import run_quick


def test_quick_check_benchmark_completes(tmp_path: Path) -> None:
    result, stdout = run_quick("check.py", tmp_path / "result.json", timeout=180)
    scenarios = result["scenarios"]
    expected = {"bare_tuned", "bare_stdlib", "memory_no_holds", "memory_holds"}
    if shutil.which("redis-server"):
        expected |= {"redis_no_holds", "redis_holds"}
    else:
        assert result["redis"].startswith("skipped")
    assert expected <= set(scenarios)
    for name in expected:
        item = scenarios[name]
        assert item["answers"] >= 10 and item["checks_per_second"] > 0
        assert 0 < item["p50_ms"] <= item["p99_ms"]
        assert item["throughput_vs_tuned"] > 0 and item["p99_vs_stdlib"] > 0
    assert result["budgets"] == 200 and result["clients"] == 10
    assert "memory with holds vs bare_tuned: throughput >= 0.8x" in stdout
    assert set(result["targets"]) == {"tuned", "stdlib"}
