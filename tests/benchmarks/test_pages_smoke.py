"""The pages benchmark runs end to end (quick mode); no timing is asserted."""

from __future__ import annotations

from pathlib import Path

from tests.support.benchmarks import run_quick


def test_quick_pages_benchmark_completes(tmp_path: Path) -> None:
    result, stdout = run_quick("pages.py", tmp_path / "result.json", timeout=180)
    assert result["budgets"] == 100 and result["requests"] == 10
    assert set(result["pages"]) == {"/", "/api/v1/budgets"}
    for page in result["pages"].values():
        assert page["gzip"] is True and page["etag"] is True
        assert 0 < page["bytes_gzip"] < page["bytes_plain"]
        assert page["if_none_match_status"] == 304 and page["if_none_match_bytes"] == 0
        assert page["cpu_ms_per_request_gzip"] >= 0 and page["first_request_ms"] > 0
    assert "/api/v1/budgets" in stdout and "If-None-Match" in stdout
