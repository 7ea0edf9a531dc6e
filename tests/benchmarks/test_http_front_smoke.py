"""The /metrics benchmark runs end to end (quick mode); no timing is asserted."""

from __future__ import annotations

from pathlib import Path

from tests.support.benchmarks import run_quick


def test_quick_benchmark_completes_and_scrapes_cause_no_upstream_requests(tmp_path: Path) -> None:
    result, stdout = run_quick("metrics_latency.py", tmp_path / "result.json")

    upstream = result["upstream"]
    assert upstream["scrapes"] == 100
    # The first poll went through the counting server (two pages), and the
    # exporter's own counter saw the same requests: the counting works ...
    assert upstream["requests_before"] == 2
    assert upstream["counter_before"] == 2
    assert upstream["counter_matches_upstream"] is True
    # ... and 100 scrapes caused none.
    assert upstream["upstream_requests"] == 0
    assert upstream["counter_delta"] == 0
    assert upstream["target_met"] is True
    assert "upstream requests per 100 scrapes: 0 " in stdout

    workload = result["workload"]
    assert 2900 <= workload["series"] <= 3100  # --quick asks for ~3,000
    assert workload["same_series"] is True, "update NaiveCollector in benchmarks/metrics_latency.py"
    for key in ("exporter_plain", "exporter_gzip", "baseline_plain", "baseline_gzip"):
        assert result["latency"][key]["scrapes"] >= 3
    latency = result["latency"]
    assert latency["exporter_gzip"]["body_bytes"] < latency["exporter_plain"]["body_bytes"]
    assert "ratio exporter/baseline (median)" in stdout
    assert result["exporter_exit_code"] == 0
