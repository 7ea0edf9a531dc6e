"""The landing page in a real headless Chromium, at a desktop and a phone width.

Every column of the budget table (and of the sources table) is visible, or
reachable by scrolling the table's own box; the page itself never scrolls
sideways; amounts stay on one line; a down source is red; the console is clean.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.runtime.engine import Engine
from budget_exporter.web.endpoints import ExporterServer
from tests.conftest import Clock
from tests.support.browser import chrome, console_errors, missing_browser
from tests.support.tools import missing
from tests.web.test_landing import NOV_28, mixed_config

pytestmark = pytest.mark.usefixtures("browser_installed")


@pytest.fixture(scope="module")
def browser_installed() -> None:
    """Skipped without selenium, Chromium or chromedriver; failed under CI."""
    reason = missing_browser()
    if reason is not None:
        missing(reason)


WIDTHS = [
    pytest.param(1200, False, id="desktop-1200px"),
    pytest.param(1400, False, id="desktop-1400px"),
    pytest.param(400, True, id="phone-400px"),
]

# For each header cell: scroll its table's box so the cell is in view, then report
# whether the cell lies inside both the box and the window.
REACH_HEADERS = """
const box = document.getElementById(arguments[0]);
const out = [];
for (const th of box.querySelectorAll('thead th')) {
  box.scrollLeft = 0;
  const b0 = box.getBoundingClientRect(), c0 = th.getBoundingClientRect();
  if (c0.right > b0.right) box.scrollLeft = c0.right - b0.right;
  const b = box.getBoundingClientRect(), c = th.getBoundingClientRect();
  out.push({
    text: th.textContent,
    inside: c.left >= b.left - 0.5 && c.right <= b.right + 0.5
            && c.left >= -0.5 && c.right <= window.innerWidth + 0.5,
  });
}
box.scrollLeft = 0;
return out;
"""

# The lines each amount (a number cell's own text, not the notes below it) and date takes.
LINES_OF_AMOUNTS = """
const cells = [...document.querySelectorAll('#budgets td.num, #sources td:nth-child(4)')];
return cells.map(td => {
  const range = document.createRange();
  range.selectNodeContents(td.firstChild);
  return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
});
"""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    engine = Engine(
        load_config(mixed_config(tmp_path_factory.mktemp("landing"))), clock=Clock(NOV_28)
    )
    engine.poll_all_once()
    server = ExporterServer(engine, "127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    engine.stop(timeout=1)


@pytest.mark.parametrize(("width", "phone"), WIDTHS)
def test_every_column_reachable_page_never_scrolls_sideways(
    url: str, width: int, phone: bool
) -> None:
    with chrome(width, 900, mobile=phone) as driver:
        driver.get(url)
        # The layout viewport is the device's width: the viewport meta tag works.
        assert driver.execute_script("return window.innerWidth") == width
        page_width = driver.execute_script("return document.documentElement.scrollWidth")
        assert page_width <= width, "the page itself scrolls sideways"

        for table in ("budgets-scroll", "sources-scroll"):
            headers = driver.execute_script(REACH_HEADERS, table)
            assert len(headers) >= 5
            assert [h["text"] for h in headers if not h["inside"]] == []
        overflow = driver.execute_script(
            "const b = document.getElementById('budgets-scroll'); return b.scrollWidth - b.clientWidth"
        )
        if phone:
            assert overflow > 0, "at 400 px the budget table is wider than the screen and scrolls"
        else:
            assert overflow <= 0, f"at {width} px every column fits without scrolling"

        assert set(driver.execute_script(LINES_OF_AMOUNTS)) == {1}, "an amount or date wraps"

        down = driver.execute_script(
            "const e = document.querySelector('#sources .s-down');"
            "return [e.textContent, getComputedStyle(e).color]"
        )
        assert down == ["down", "rgb(183, 28, 28)"]
        assert console_errors(driver) == []
