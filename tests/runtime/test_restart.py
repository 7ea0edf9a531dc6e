"""A restart with ``--storage.path``: 500 sources (a meter among them) and 500 budgets are
served again at once, no provider is asked again before its interval, and ``fail_closed``
checks are answered from the saved figures."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.exposition.test_families import samples
from tests.support.exporter import ExporterProcess, exporters
from tests.support.fake_upstream import FakeUpstream, Reply

SOURCES = 500
ANSWER = {
    "total": "12.5",  # every http_json source
    "status": "success",  # the meter: a Prometheus instant vector
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "4.25"]}]},
}


@pytest.fixture
def running() -> Iterator[Callable[..., ExporterProcess]]:
    yield from exporters()


def config(upstream: FakeUpstream) -> str:
    lines = ["global:", "  poll_interval: 1h", "  check: {on_stale: fail_closed}", "sources:"]
    for i in range(SOURCES - 1):
        lines.append(
            f'  - {{name: s{i}, provider: http_json, url: "{upstream.url}/cost/{i}", '
            "amount: total, currency: USD}"
        )
    lines.append(
        f'  - {{name: meter, provider: prometheus, url: "{upstream.url}/prom", currency: USD, '
        'query: "sum(increase(spend_total[{range}]))", poll_interval: 10m, retention: 400d}'
    )
    lines.append("budgets:")
    for i in range(SOURCES - 1):
        lines.append(f"  - {{name: b{i}, limit: 100, currency: USD, sources: [s{i}]}}")
    lines.append("  - {name: metered, limit: 100, currency: USD, sources: [meter]}")
    return "\n".join(lines) + "\n"


def served(url: str) -> dict[str, float]:
    try:
        text = requests.get(f"{url}/metrics", timeout=2).content
    except requests.ConnectionError:
        return {}
    return {
        labels["budget"]: value for labels, value in samples(text).get("budget_spend_amount", [])
    }


def wait_all_served(url: str, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spends = served(url)
        if len(spends) == SOURCES:
            return spends
        time.sleep(0.05)
    raise AssertionError(f"only {len(served(url))} budgets served after {timeout} s")


def test_a_restart_serves_every_budget_at_once_without_polling_again(
    running, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.default = Reply(json=ANSWER)
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(config(upstream)))
    storage = f"--storage.path={tmp_path / 'data'}"

    first = running(path, storage)
    first.wait_ready(timeout=60)
    before = wait_all_served(first.url, timeout=60)
    assert before["b7"] == 12.5 and before["metered"] == 4.25
    hold = requests.post(
        f"{first.url}/api/v1/check",
        json={"budget": "b3", "cost": 5, "hold": True, "hold_seconds": 600},
        timeout=5,
    ).json()
    assert hold["allowed"] is True and hold["hold"]["amount"] == 5, hold
    code, log = first.stop()  # SIGTERM: the last polls' figures are saved
    assert code == 0, log
    asked = len(upstream.seen)
    assert asked == SOURCES  # one request each: the meter's retention is set, no flags asked

    started = time.monotonic()
    second = running(path, storage)
    after = wait_all_served(second.url, timeout=10)
    elapsed = time.monotonic() - started
    assert after == before  # the previous figures, every budget
    assert elapsed < 2.0, f"budgets served {elapsed:.2f} s after the restart"
    second.wait_ready(timeout=1)

    answer = requests.post(
        f"{second.url}/api/v1/check", json={"budget": "b3", "cost": 1}, timeout=5
    ).json()
    assert answer["allowed"] is True and answer["stale"] is False, answer  # fail_closed, fresh
    assert answer["held"] == 5  # the hold taken before the restart still counts
    answer = requests.post(
        f"{second.url}/api/v1/check", json={"budget": "metered", "cost": 1}, timeout=5
    ).json()
    assert answer["allowed"] is True and answer["stale"] is False, answer
    time.sleep(1.0)
    assert len(upstream.seen) == asked  # every saved result is younger than its interval
    code, log = second.stop()
    assert code == 0
    assert "storage: restored the figures of 500 of 500 sources" in log
    assert "warn" not in log.replace("level=info", ""), log


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b'{"format": "budget-exporter-state", "vers', "not valid JSON (truncated or corrupt?)"),
        (
            b'{"format": "budget-exporter-state", "version": 2, "sources": {}}',
            "written by a newer budget-exporter (format 2; this one reads 1)",
        ),
    ],
    ids=["truncated", "future-version"],
)
def test_an_unusable_state_file_is_one_warning_line_at_start(
    running, tmp_path: Path, content: bytes, said: str
) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        "sources: [{name: a, provider: static, amount: 1, currency: USD}]\n"
        "budgets: [{name: a, limit: 10, currency: USD}]\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "state.json").write_bytes(content)
    exporter = running(path, f"--storage.path={tmp_path / 'data'}")
    exporter.wait_ready()
    assert wait_served(exporter.url, {"a"})
    code, log = exporter.stop()
    assert code == 0
    warnings = [line for line in log.splitlines() if "level=warn" in line]
    assert len(warnings) == 1 and said in warnings[0], log
    assert "Traceback" not in log


def wait_served(url: str, budgets: set[str], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(served(url)) == budgets:
            return True
        time.sleep(0.05)
    return False
