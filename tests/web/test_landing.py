"""The landing page's HTML: summary, states in colour and words, legend,
dashboard link, auto-refresh, nothing fetched from elsewhere, nothing secret."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.runtime.engine import Engine
from budget_exporter.web.endpoints import ExporterServer
from budget_exporter.web.landing import DOCS_URL, refresh_seconds, render_landing
from tests.conftest import Clock
from tests.support.paths import ROOT

NOV_28 = 1_795_856_400.0  # 2026-11-28 09:00 UTC: the demo's budgets are ok, warning and stop
DASHBOARD = "https://grafana.example.com/d/budget-exporter-overview?orgId=1&var-team=ml"


def mixed_config(tmp_path: Path, port: int = 9) -> Path:
    """The demo configuration plus a source that fails (its URL carries a key) and a link."""
    text = (ROOT / "examples" / "demo.yml").read_text()
    text = text.replace(
        "global:\n", f"global:\n  retries: 0\n  dashboard_url: '{DASHBOARD}'\n", 1
    ).replace(
        "sources:\n",
        "sources:\n  - {name: billing-api, provider: http_json, amount: total, currency: USD,\n"
        f"     url: 'http://127.0.0.1:{port}/usage?key=SECRET-KEY-123'}}\n",
        1,
    )
    path = tmp_path / "mixed.yml"
    path.write_text(text)
    return path


@pytest.fixture
def page(tmp_path: Path) -> Callable[..., str]:
    engines: list[Engine] = []

    def render(path: Path | None = None, query: str = "") -> str:
        engine = Engine(load_config(path or mixed_config(tmp_path)), clock=Clock(NOV_28))
        engines.append(engine)
        engine.poll_all_once()
        return render_landing(engine.snapshot, "/metrics", query).decode()

    yield render
    for engine in engines:
        engine.stop(timeout=1)


def test_summary_counts_states_and_sources_down(page) -> None:
    html = page()
    summary = re.search(r'<p class="summary attention" id=summary>(.*?)</p>', html)
    assert summary is not None
    assert summary.group(1) == (
        "4 budgets: 2 ok, 1 stop, 1 without data &middot; 1 of 5 sources down"
    )


def test_summary_with_every_source_up(page, tmp_path: Path) -> None:
    html = page(ROOT / "examples" / "demo.yml")
    # a budget at its stop threshold needs attention even with every source up
    assert (
        '<p class="summary attention" id=summary>'
        "4 budgets: 2 ok, 1 warning, 1 stop &middot; all 4 sources up</p>"
    ) in html
    calm = tmp_path / "calm.yml"
    calm.write_text(
        "sources: [{name: s, provider: static, amount: 1, currency: USD}]\n"
        "budgets: [{name: b, limit: 10, currency: USD}]\n"
    )
    assert '<p class="summary" id=summary>1 budget: 1 ok &middot; the source is up</p>' in page(
        calm
    )


def test_states_and_health_carry_a_colour_class_and_a_word(page) -> None:
    html = page()
    assert '<span class="badge s-stop">stop</span>' in html
    assert '<span class="badge s-ok">ok</span>' in html
    assert '<span class="badge s-down">down</span>' in html
    assert '<span class="badge s-up">up</span>' in html
    assert '<span class="badge s-nodata">no data</span>' in html
    assert re.search(r"\.s-exceeded,\.s-down\{color:#b71c1c", html), "down is red"


def test_legend_explains_the_tick_marks(page) -> None:
    html = page()
    legend = re.search(r"<p class=legend>(.*?)</p>", html, flags=re.S)
    assert legend is not None
    assert 'class="tick tick-warning"></i>warning threshold' in legend.group(1)
    assert 'class="tick tick-stop"></i>stop threshold' in legend.group(1)
    # the same marks are drawn on every bar, at the budget's own ratios (hunter: 70 % and 90 %)
    assert 'class="tick tick-warning" style="left:70.0%"' in html
    assert 'class="tick tick-stop" style="left:90.0%"' in html


def test_page_is_self_contained_responsive_and_keeps_secrets(page) -> None:
    html = page()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    # One script, the exporter's own (a Content-Security-Policy of script-src 'self' allows it)
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/-/landing.js" defer>']
    assert "@import" not in html and "url(" not in html
    external = re.findall(r'(?:src|href)="(https?:[^"]*)"', html)
    # the configured link and the check API's documentation only
    assert external == [DASHBOARD.replace("&", "&amp;"), f"{DOCS_URL}check-api.md"]
    assert "SECRET-KEY-123" not in html
    assert "Connection refused" in html or "failed" in html  # the error itself is shown
    assert ".scroll{overflow-x:auto" in html and "td.num,th.num{" in html


def test_dashboard_link_is_shown_escaped_and_optional(page, tmp_path: Path) -> None:
    html = page()
    assert f'<a href="{DASHBOARD.replace("&", "&amp;")}">Grafana dashboards</a>' in html
    assert "Grafana dashboards" not in page(ROOT / "examples" / "demo.yml")
    tricky = tmp_path / "tricky.yml"
    tricky.write_text(
        "global: {dashboard_url: 'https://g.example.com/d?x=\"><b>x</b>'}\n"
        "sources: [{name: s, provider: static, amount: 1, currency: USD}]\n"
        "budgets: [{name: b, limit: 10, currency: USD}]\n"
    )
    html = page(tricky)
    assert "<b>x</b>" not in html and "&quot;&gt;&lt;b&gt;x&lt;/b&gt;" in html


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://grafana.example.com/", "must be an http:// or https:// URL"),
        ("grafana.example.com/d/x", "must be an http:// or https:// URL"),
        ("https://admin:hunter2@grafana.example.com/", "must not contain a user name or password"),
    ],
)
def test_dashboard_url_is_checked(tmp_path: Path, url: str, message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        f"global: {{dashboard_url: '{url}'}}\n"
        "sources: [{name: s, provider: static, amount: 1, currency: USD}]\n"
        "budgets: [{name: b, limit: 10, currency: USD}]\n"
    )
    with pytest.raises(ConfigError, match=f"global.dashboard_url: {message}") as error:
        load_config(path)
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize(
    ("query", "seconds"),
    [
        ("refresh=30", 30),
        ("refresh=1", 10),
        ("refresh=86400", 3600),
        ("a=b&refresh=300", 300),
        ("refresh=0", None),
        ("refresh=-5", None),
        ("refresh=abc", None),
        ("refresh=%D9%A3%D9%A0", None),  # Arabic-Indic digits are not a number of seconds here
        ("refresh=" + "9" * 5000, 3600),  # no int() of 5000 digits (a ValueError, a 500)
        ("refresh=0000000030", 30),
        ("refresh=000", None),
        ("", None),
    ],
)
def test_refresh_is_bounded(query: str, seconds: int | None) -> None:
    assert refresh_seconds(query) == seconds


def test_refresh_through_the_server(tmp_path: Path) -> None:
    engine = Engine(load_config(ROOT / "examples" / "demo.yml"), clock=Clock(NOV_28))
    engine.poll_all_once()
    server = ExporterServer(engine, "127.0.0.1:0")
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/"
        refreshing = requests.get(url, params={"refresh": "45"}, timeout=5).text
        assert '<meta http-equiv="refresh" content="45">' in refreshing
        assert "Stop auto-refresh (every 45 s)" in refreshing
        plain = requests.get(url, timeout=5).text
        assert 'http-equiv="refresh"' not in plain
        assert '<a href="/?refresh=30">Auto-refresh 30 s</a>' in plain
    finally:
        server.shutdown()
        engine.stop(timeout=1)


def test_screenshot_in_docs_is_small_and_a_png() -> None:
    shot = ROOT / "docs" / "landing-page.png"
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) < 200_000


def test_the_check_api_is_linked_with_a_line_of_curl(page) -> None:
    html = page(ROOT / "examples" / "demo.yml")
    assert '<a href="#check-api">Check API</a>' in html
    section = re.search(r"<p class=meta id=check-api>(.*?)</p>", html)
    assert section is not None
    # The first configured budget as the example; the script puts the page's own origin in.
    assert (
        "<code>curl -s <span class=origin>http://localhost:9820</span>/api/v1/check "
        "-d &#x27;{&quot;budget&quot;: &quot;global&quot;, &quot;cost&quot;: 2.50}&#x27;</code>"
    ) in section.group(1)
    assert f'<a href="{DOCS_URL}check-api.md">check API docs</a>' in section.group(1)
    assert (ROOT / "docs" / "check-api.md").is_file()
