"""The /metrics benchmark runs end to end (quick mode); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "metrics_latency.py"


def test_quick_benchmark_completes_and_scrapes_cause_no_upstream_requests(tmp_path: Path) -> None:
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
        process.terminate()  # the script stops its servers on SIGTERM
        stdout, stderr = process.communicate(timeout=30)
        raise AssertionError(f"benchmark did not finish in 120s:\n{stdout}{stderr}") from None
    assert process.returncode == 0, stdout + stderr
    result = json.loads(out.read_text(encoding="utf-8"))

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
