"""A real headless Chromium, driven by selenium through Debian's chromedriver.

``chrome(width, height, mobile=...)`` opens a browser whose window (or, with
``mobile=True``, emulated phone screen) is that size, with the browser console
log kept for ``console_errors()``.  ``missing_browser()`` says why no browser can
run here, for a skip reason.

``python -m tests.support.browser docs/landing-page.png`` runs the exporter on
the demo configuration and saves a screenshot of its landing page.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = "chromedriver"


def _binary(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
        )
        if found:
            return found
    return None


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "needs selenium (the test extra)"
    if _binary(CHROMIUM) is None:
        return "needs chromium (apt-get install chromium)"
    if _binary((CHROMEDRIVER,)) is None:
        return "needs chromedriver (apt-get install chromium-driver)"
    return None


@contextmanager
def chrome(width: int, height: int, *, mobile: bool = False) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM) or ""
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    if mobile:
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1, "touch": True}},
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(_binary((CHROMEDRIVER,))))
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """Messages the page logged at error level (failed loads, script errors, CSP...)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


SCREENSHOT_TIME = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
"""Late in a month, so the demo's budgets show more than one state."""


def screenshot_demo(path: Path, width: int = 1400, at: datetime = SCREENSHOT_TIME) -> None:
    """Save a screenshot of the landing page of an exporter running the demo configuration."""
    from budget_exporter.config.loader import load_config
    from budget_exporter.runtime.engine import Engine
    from budget_exporter.web.endpoints import ExporterServer

    root = Path(__file__).resolve().parents[2]
    engine = Engine(load_config(root / "examples" / "demo.yml"), clock=at.timestamp)
    engine.poll_all_once()
    server = ExporterServer(engine, "127.0.0.1:0")
    server.start()
    try:
        with chrome(width, 900) as driver:
            driver.get(f"http://127.0.0.1:{server.port}/")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
            driver.save_screenshot(str(path))
    finally:
        server.shutdown()


if __name__ == "__main__":
    screenshot_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/landing-page.png"))
