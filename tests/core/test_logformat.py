"""What a user reads in the log when an upstream refuses the connection: one line, ours."""

from __future__ import annotations

from pathlib import Path

from tests.support.exporter import run
from tests.support.net import free_port

CONFIG = """
global: {{poll_interval: 1m, timeout: 2s, retries: 2}}
sources:
  - {{name: usage, provider: http_json, url: "http://127.0.0.1:{port}/v1/cost", amount: total,
     currency: USD}}
budgets:
  - {{name: b, limit: 10, currency: USD}}
"""


def refused_poll_log(tmp_path: Path, *flags: str) -> list[str]:
    config = tmp_path / "c.yml"
    config.write_text(CONFIG.format(port=free_port()))  # nothing listens there
    result = run("--config.file", str(config), "--once", *flags)
    assert result.returncode == 1  # the source failed
    return result.stderr.splitlines()


def test_a_refused_connection_is_one_line_without_library_retries(tmp_path: Path) -> None:
    lines = refused_poll_log(tmp_path)
    assert [line for line in lines if "level=warn" in line or "level=error" in line] == [
        line for line in lines if "logger=budget_exporter.usage" in line
    ]
    [poll] = [line for line in lines if "poll failed" in line]
    assert "Connection refused" in poll and "/v1/cost" in poll
    assert not any("Retrying (" in line or "NewConnectionError" in line for line in lines)


def test_debug_level_shows_the_library_retries(tmp_path: Path) -> None:
    lines = refused_poll_log(tmp_path, "--log.level", "debug")
    assert any("Retrying (" in line for line in lines)
