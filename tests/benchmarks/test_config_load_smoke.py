"""The configuration-load benchmark runs end to end (quick mode); no timing is asserted."""

from __future__ import annotations

from pathlib import Path

from tests.support.benchmarks import run_quick


def test_quick_config_load_benchmark_completes(tmp_path: Path) -> None:
    result, stdout = run_quick("config_load.py", tmp_path / "result.json")
    assert result["entries"] == 200 and result["bytes"] > 10_000
    assert result["libyaml"] is True  # the test extra's PyYAML wheel bundles libyaml
    for key in ("pure_python_parse_s", "libyaml_parse_s", "load_config_s"):
        assert result[key] > 0
    assert "PyYAML pure-Python parse (baseline)" in stdout and "load_config" in stdout
