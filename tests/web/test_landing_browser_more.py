"""The landing page in a real headless Chromium: real-time budgets (a meter joined to a
bill, with the "billed ... + metered ... after ..." line) at desktop and phone widths, the
filter box and sortable columns at 2,000 budgets, and the page under a strict
Content-Security-Policy, loading nothing from elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.core.model import Period, PollResult, SpendLine, Window
from budget_exporter.runtime.engine import Engine
from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.webconfig import HTTPServerConfig, WebConfig
from tests.conftest import Clock
from tests.support.browser import chrome, console_errors, missing_browser
from tests.support.tools import missing
from tests.web.test_landing_browser import LINES_OF_AMOUNTS, REACH_HEADERS

pytestmark = pytest.mark.usefixtures("browser_installed")

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
HORIZON = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def browser_installed() -> None:
    """Skipped without selenium, Chromium or chromedriver; failed under CI."""
    reason = missing_browser()
    if reason is not None:
        missing(reason)


def usd(period: Period, amount: Decimal) -> SpendLine:
    return SpendLine.of(period, amount, "USD")


class Bill:
    """A bill through midnight: settled spend before its horizon."""

    def poll(self, windows: Sequence[Window]) -> PollResult:
        return PollResult(
            lines=tuple(usd(w.period, Decimal("41234.56")) for w in windows),
            data_through=HORIZON,
        )


class Meter:
    """A meter after the bill's horizon, as the prometheus provider answers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def poll(self, windows: Sequence[Window]) -> PollResult:
        horizon = self.engine.runners["meter"]._context.horizon()
        lines = tuple(usd(w.period, Decimal("12345.67")) for w in windows)
        return PollResult(lines=lines, metered_from=horizon, metered=True)


REALTIME = """
global: {poll_interval: 1h, retries: 0}
sources:
  - {name: bill, provider: http_json, url: "http://127.0.0.1:9/costs", amount: total,
     currency: USD, data_through: through}
  - {name: meter, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
     metered_after: bill, query: "sum(increase(spend_total[{range}]))"}
  - {name: saas, provider: static, amount: 1234.5, currency: EUR}
budgets:
  - {name: llm-production-realtime, limit: 75000, currency: USD, sources: [bill, meter]}
  - {name: llm-bill-only, limit: 60000, currency: USD, sources: [bill]}
  - {name: llm-search-assistant-realtime-eu-west, limit: 900000, currency: USD,
     sources: [bill, meter]}
  - {name: saas-tools-europe, limit: 2000, currency: EUR, sources: [saas]}
"""


def serve(engine: Engine, web_config: WebConfig | None = None) -> ExporterServer:
    server = ExporterServer(engine, "127.0.0.1:0", web_config)
    server.start()
    return server


def realtime_engine(directory: Path) -> Engine:
    """An engine whose real-time budgets join the meter to the bill (as in
    tests/accounting/test_nowcast.py)."""
    path = directory / "realtime.yml"
    path.write_text(REALTIME)
    engine = Engine(load_config(path), clock=Clock(NOW.timestamp()))
    engine.runners["bill"].provider.poll = Bill().poll  # type: ignore[method-assign]
    engine.runners["meter"].provider.poll = Meter(engine).poll  # type: ignore[method-assign]
    engine.poll_all_once()
    view = engine.snapshot.budget("llm-production-realtime")
    assert view is not None and view.metered > 0, "the meter is joined to the bill"
    return engine


@pytest.fixture(scope="module")
def realtime_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    engine = realtime_engine(tmp_path_factory.mktemp("realtime"))
    server = serve(engine)
    yield f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    engine.stop(timeout=1)


REALTIME_WIDTHS = [
    pytest.param(1200, False, id="desktop-1200px"),
    pytest.param(1440, False, id="desktop-1440px"),
    pytest.param(1920, False, id="desktop-1920px"),
    pytest.param(400, True, id="phone-400px"),
    pytest.param(360, True, id="phone-360px"),
]


@pytest.mark.parametrize(("width", "phone"), REALTIME_WIDTHS)
def test_realtime_budgets_keep_every_column_in_view(
    realtime_url: str, width: int, phone: bool
) -> None:
    with chrome(width, 900, mobile=phone) as driver:
        driver.get(realtime_url)
        assert driver.execute_script("return window.innerWidth") == width
        split = driver.execute_script(
            "return [...document.querySelectorAll('#budgets small.split')].map(e => e.textContent)"
        )
        assert len(split) == 2 and all(
            t.startswith("billed 41,234.56 USD + metered ") and t.endswith(" UTC") for t in split
        )
        page_width = driver.execute_script("return document.documentElement.scrollWidth")
        assert page_width <= width, "the page itself scrolls sideways"
        headers = driver.execute_script(REACH_HEADERS, "budgets-scroll")
        assert [h["text"] for h in headers if not h["inside"]] == []
        if not phone:
            # Used and State are on screen as the page opens, without scrolling the table.
            visible = driver.execute_script(
                "const box = document.getElementById('budgets-scroll');"
                "return [box.scrollWidth - box.clientWidth, "
                "[...document.querySelectorAll('#budgets thead th')].map(th => "
                "th.getBoundingClientRect().right <= window.innerWidth)]"
            )
            assert visible[0] <= 0 and all(visible[1])
        assert set(driver.execute_script(LINES_OF_AMOUNTS)) == {1}, "an amount or date wraps"
        assert console_errors(driver) == []


# -- 2,000 budgets -------------------------------------------------------------------

BUDGETS = 2000


def big_config(path: Path) -> Path:
    """One static source with a line per team, and 2,000 budgets with labels."""
    config = {
        "global": {"poll_interval": "1h"},
        "sources": [
            {
                "name": "usage",
                "provider": "static",
                "currency": "USD",
                "lines": [
                    {"amount": 10 + t, "dimensions": {"team": f"team-{t}"}} for t in range(50)
                ],
            }
        ],
        "budgets": [
            {
                "name": f"budget-{i:04d}-of-a-big-company",
                "limit": 20 + (i * 7919) % 60,
                "currency": "USD",
                "match": {"team": f"team-{i % 50}"},
                "labels": {"team": f"team-{i % 50}", "cost_center": f"cc-{i % 200}"},
            }
            for i in range(BUDGETS)
        ],
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def big_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = big_config(tmp_path_factory.mktemp("big") / "big.yml")
    engine = Engine(load_config(path), clock=Clock(NOW.timestamp()))
    engine.poll_all_once()
    assert len(engine.snapshot.budgets) == BUDGETS
    server = serve(engine)
    yield f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    engine.stop(timeout=1)


TYPE_INTO_FILTER = """
const box = document.getElementById('filter');
const t0 = performance.now();
box.value = arguments[0];
box.dispatchEvent(new Event('input'));
void document.body.offsetHeight;  // the layout that follows is part of the time
const shown = [...document.querySelectorAll('#budgets tbody tr')].filter(r => !r.hidden);
return [performance.now() - t0, shown.length, document.getElementById('filter-count').textContent];
"""

CLICK_HEADER = """
const th = [...document.querySelectorAll('#budgets thead th')]
  .find(th => th.textContent.trim() === arguments[0]);
const t0 = performance.now();
th.querySelector('button').click();
void document.body.offsetHeight;
const elapsed = performance.now() - t0;
const rows = [...document.querySelectorAll('#budgets tbody tr')].filter(r => !r.hidden);
return [elapsed, th.getAttribute('aria-sort'),
        rows.map(r => [r.cells[0].textContent, r.cells[2].textContent, r.dataset.state,
                       r.dataset.labels])];
"""


def amount(text: str) -> float:
    return float(text.split()[0].replace(",", ""))


def test_filter_and_sort_2000_budgets(big_url: str) -> None:
    with chrome(1400, 900) as driver:
        started = time.monotonic()
        driver.get(big_url)
        loaded = time.monotonic() - started
        assert driver.execute_script("return document.getElementById('filter-bar').hidden") is False
        assert driver.execute_script(
            "return document.querySelectorAll('#budgets tbody tr').length"
        ) == (BUDGETS)

        # Filter: words, all of them, over name, period, state and labels.
        took, shown, said = driver.execute_script(TYPE_INTO_FILTER, "team-7 ")
        assert shown == BUDGETS // 50 and said == f"{BUDGETS // 50} of {BUDGETS} shown"
        filter_ms = took
        took, shown, _ = driver.execute_script(TYPE_INTO_FILTER, "cc-7 TEAM-7")
        assert shown == BUDGETS // 200  # cost_center cc-7 is always team-7
        _, shown, _ = driver.execute_script(TYPE_INTO_FILTER, "budget-0042")
        assert shown == 1
        _, shown, _ = driver.execute_script(TYPE_INTO_FILTER, "")
        assert shown == BUDGETS

        # Sort: numbers descending first, again for ascending; names ascending first.
        took, order, rows = driver.execute_script(CLICK_HEADER, "Spend")
        sort_ms = took
        spends = [amount(r[1]) for r in rows]
        assert order == "descending" and spends == sorted(spends, reverse=True)
        _, order, rows = driver.execute_script(CLICK_HEADER, "Spend")
        assert order == "ascending" and [amount(r[1]) for r in rows] == sorted(spends)
        _, order, rows = driver.execute_script(CLICK_HEADER, "Budget")
        names = [r[0] for r in rows]
        assert order == "ascending" and names == sorted(names) and len(names) == BUDGETS
        _, order, rows = driver.execute_script(CLICK_HEADER, "State")
        severity = {"ok": 0, "warning": 1, "stop": 2, "exceeded": 3}
        states = [severity[r[2]] for r in rows]
        assert order == "descending" and states == sorted(states, reverse=True)
        assert len(set(states)) > 1, "the budgets are in more than one state"

        # Sorting keeps the filter: the rows shown are still the filtered ones.
        driver.execute_script(TYPE_INTO_FILTER, "team=team-49")
        _, order, rows = driver.execute_script(CLICK_HEADER, "Used")
        assert order == "descending"  # a number column sorts the largest first
        assert len(rows) == BUDGETS // 50 and all(r[3].endswith(" team=team-49") for r in rows)
        assert console_errors(driver) == []
    print(
        f"\n2,000 budgets: page loaded in {loaded:.2f} s, filter {filter_ms:.0f} ms, "
        f"sort {sort_ms:.0f} ms"
    )
    # Bounds for a busy shared machine (two cores, several test runs at once, where a sort
    # measured 0.4-1.2 s with its layout); an idle laptop is several times faster.
    assert filter_ms < 2000 and sort_ms < 5000 and loaded < 30


# -- strict headers --------------------------------------------------------------------

STRICT = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src data:; "
        "connect-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def test_the_page_works_under_strict_headers_and_loads_nothing_from_elsewhere(
    tmp_path: Path,
) -> None:
    engine = realtime_engine(tmp_path)
    server = serve(engine, WebConfig(http_server_config=HTTPServerConfig(headers=STRICT)))
    try:
        with chrome(1200, 900) as driver:
            driver.get(f"http://127.0.0.1:{server.port}/")
            ran = driver.execute_script(
                "return [document.getElementById('filter-bar').hidden,"
                " document.querySelector('.origin').textContent,"
                " document.querySelector('#budgets thead th button') !== null]"
            )
            assert ran == [False, f"http://127.0.0.1:{server.port}", True]
            _, shown, _ = driver.execute_script(TYPE_INTO_FILTER, "realtime")
            assert shown == 2
            loads = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert loads == [f"http://127.0.0.1:{server.port}/-/landing.js"]
            assert console_errors(driver) == []  # no CSP violation, no script error
    finally:
        server.shutdown()
        engine.stop(timeout=1)
