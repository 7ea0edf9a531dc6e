"""The HTML page served at ``/``: a summary line, every budget with a usage bar, every
source's health (see docs/configuration.md#the-landing-page).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from urllib.parse import parse_qs

from budget_exporter import __version__
from budget_exporter.accounting.budgets import BudgetView
from budget_exporter.accounting.freshness import source_age
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.schema import Config
from budget_exporter.core.durations import format_duration
from budget_exporter.runtime.engine import Snapshot

STATES = ("ok", "warning", "stop", "exceeded")
MIN_REFRESH_SECONDS = 10
MAX_REFRESH_SECONDS = 3600
REFRESH_CHOICES = (30, 300)

_BAR_COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "stop": "#ef6c00", "exceeded": "#c62828"}

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1.5rem;
color:#1f2328;max-width:80rem;line-height:1.45}
h1{font-size:1.6rem;margin:0 0 .25rem}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
p{margin:.4rem 0}
a{color:#0b57d0}
nav a{margin-right:.9rem;display:inline-block}
.meta{color:#59636e;font-size:.9rem}
.summary{font-size:1.05rem;padding:.6rem .8rem;border-radius:6px;background:#f6f8fa;
border-left:6px solid #2e7d32}
.summary.attention{border-left-color:#c62828}
.scroll{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #d8dee4;white-space:nowrap;
vertical-align:middle}
th{font-size:.85rem;color:#59636e;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;min-width:14rem;max-width:40rem;overflow-wrap:anywhere}
.bar{background:#e6e9ec;width:10rem;height:.9rem;border-radius:3px;position:relative}
.bar>span{display:block;height:100%;border-radius:3px}
.tick{position:absolute;top:-4px;bottom:-4px;box-shadow:0 0 0 1px #fff}
.tick-warning{width:2px;margin-left:-1px;background:#1f2328}
.tick-stop{width:4px;margin-left:-2px;background:#b71c1c}
.hint{display:none;font-size:.85rem;color:#59636e}
.legend{font-size:.85rem;color:#59636e;margin-top:.5rem}
.legend .tick{position:relative;display:inline-block;top:2px;height:1em;margin:0 .3rem 0 .2rem}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.85rem;
font-weight:600;border:1px solid}
.s-ok,.s-up{color:#1b5e20;background:#e8f5e9;border-color:#a5d6a7}
.s-warning{color:#6d4c00;background:#fff8e1;border-color:#ffd54f}
.s-stop,.s-stale{color:#8f3a00;background:#fff3e0;border-color:#ffb74d}
.s-exceeded,.s-down{color:#b71c1c;background:#ffebee;border-color:#ef9a9a}
.s-pending,.s-nodata{color:#424a53;background:#f0f2f4;border-color:#c8ced4}
@media (max-width:600px){
body{padding:.75rem}
h1{font-size:1.3rem}
th,td{padding:.35rem .45rem}
.bar{width:6rem}
.hint{display:block}
}
"""


def refresh_seconds(query: str) -> int | None:
    """The auto-refresh interval asked for with ``?refresh=N``, kept within bounds.

    Anything that is not a whole number of seconds, or is 0, turns it off.
    """
    values = parse_qs(query).get("refresh")
    if not values:
        return None
    value = values[-1].strip()
    if not value.isascii() or not value.isdigit():
        return None
    value = value.lstrip("0")
    if not value:
        return None
    if len(value) > len(str(MAX_REFRESH_SECONDS)):
        return MAX_REFRESH_SECONDS
    return min(max(int(value), MIN_REFRESH_SECONDS), MAX_REFRESH_SECONDS)


def _money(amount: float, currency: str) -> str:
    return f"{amount:,.2f} {escape(currency)}"


def _time(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _split(b: BudgetView) -> str:
    """Billed and metered shares of a budget that counts metered spend (the nowcast)."""
    if not b.metered:
        return ""
    horizons = [p.data_through.timestamp() for p in b.parts if p.meters and p.data_through]
    after = f" after {_time(min(horizons))}" if horizons else ""
    return (
        f"<br><small>billed {_money(float(b.billed), b.currency)} + metered "
        f"{_money(float(b.metered), b.currency)}{escape(after)}</small>"
    )


def _held(amount: Decimal | None, currency: str) -> str:
    """The amount held by checks in flight and recent records (counted by the check API)."""
    if not amount:
        return ""
    return f"<br><small class=held>+ {_money(float(amount), currency)} held</small>"


def _badge(kind: str, text: str | None = None) -> str:
    return f'<span class="badge s-{kind}">{escape(text or kind)}</span>'


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _budget_rows(snapshot: Snapshot) -> tuple[list[str], Counter[str]]:
    rows: list[str] = []
    counts: Counter[str] = Counter()
    held = snapshot.held() if snapshot.held is not None else {}
    for b in sorted(snapshot.budgets, key=lambda b: b.usage_ratio, reverse=True):
        state = b.state
        counts[state] += 1
        width = min(b.usage_ratio, 1.0) * 100
        warning, stop = b.warning_ratio * 100, b.stop_ratio * 100
        rows.append(
            "<tr>"
            f"<td>{escape(b.name)}</td><td>{escape(b.period)}</td>"
            f"<td class=num>{_money(float(b.spend), b.currency)}{_split(b)}"
            f"{_held(held.get(b.name), b.currency)}</td>"
            f"<td class=num>{_money(float(b.limit), b.currency)}</td>"
            f"<td class=num>{_money(float(b.forecast), b.currency)}</td>"
            f'<td><div class=bar role=img title="{b.usage_ratio:.1%} of the limit used" '
            f'aria-label="{b.usage_ratio:.1%} of the limit used">'
            f'<span style="width:{width:.1f}%;background:{_BAR_COLOURS[state]}"></span>'
            f'<i class="tick tick-warning" style="left:{warning:.1f}%" '
            f'title="warning at {warning:.0f}%"></i>'
            f'<i class="tick tick-stop" style="left:{stop:.1f}%" title="stop at {stop:.0f}%">'
            "</i></div></td>"
            f"<td class=num>{b.usage_ratio:.1%}</td><td>{_badge(state)}</td>"
            "</tr>"
        )
    shown = {b.name for b in snapshot.budgets}
    source_states = {s.name: s for s in snapshot.states}
    for budget in snapshot.config.budgets:
        if budget.name in shown:
            continue
        counts["no data"] += 1
        needed = [s.name for s in snapshot.config.polled_sources(budget)]
        down = [
            n
            for n in needed
            if n in source_states and source_states[n].attempted and not source_states[n].up
        ]
        reason = (
            f"no data: source {', '.join(down)} failed (see Sources below)"
            if down
            else "waiting for the first data from every source"
        )
        rows.append(
            f"<tr><td>{escape(budget.name)}</td><td>{escape(str(budget.period))}</td>"
            f"<td colspan=5>{escape(reason)}</td><td>{_badge('nodata', 'no data')}</td></tr>"
        )
    return rows, counts


def _stale_badge(config: Config, state: SourceState, now: float | None) -> str:
    """A "stale" badge for a source whose figures are older than its ``max_data_age``
    (the check API then follows ``on_stale`` for its budgets)."""
    source = next((c for c in config.sources if c.name == state.name), None)
    if now is None or source is None or state.last_success is None:
        return ""
    age = source_age(config, source, state, now)
    if not age.stale:
        return ""
    title = (
        f"figures {_age(age.age or 0.0)} old, older than the allowed {_age(age.allowed)} "
        "(max_data_age): the check API follows on_stale"
    )
    return f' <span class="badge s-stale" title="{escape(title)}">stale</span>'


def _age(seconds: float) -> str:
    return format_duration(timedelta(seconds=int(seconds)))


def _source_rows(snapshot: Snapshot, now: float | None = None) -> tuple[list[str], int]:
    rows = []
    down = 0
    for s in snapshot.states:
        health = "pending" if not s.attempted else "up" if s.up else "down"
        down += health == "down"
        stale = _stale_badge(snapshot.config, s, now) if s.attempted else ""
        rows.append(
            f"<tr><td>{escape(s.name)}</td><td>{escape(s.provider)}</td>"
            f"<td>{_badge(health)}{stale}</td><td>{_time(s.last_success)}</td>"
            f"<td class=wrap>{escape(s.last_error or '')}</td></tr>"
        )
    return rows, down


def _summary(counts: Counter[str], sources: int, down: int) -> str:
    total = sum(counts.values())
    parts = [f"{counts[s]} {s}" for s in STATES if counts[s] or s == "ok"]
    if counts["no data"]:
        parts.append(f"{counts['no data']} without data")
    budgets = f"{_plural(total, 'budget')}: {', '.join(parts)}" if total else "no budgets"
    if not sources:
        health = "no sources"
    elif down:
        health = f"{down} of {_plural(sources, 'source')} down"
    else:
        health = "the source is up" if sources == 1 else f"all {sources} sources up"
    attention = down or counts["stop"] or counts["exceeded"] or counts["no data"]
    css = "summary attention" if attention else "summary"
    return f'<p class="{css}" id=summary>{escape(budgets)} &middot; {escape(health)}</p>'


def _links(metrics_path: str, dashboard_url: str | None, refresh: int | None) -> str:
    links = [
        f'<a href="{escape(metrics_path)}">Metrics</a>',
        '<a href="/api/v1/budgets">Budgets (JSON)</a>',
        '<a href="/-/healthy">Health</a>',
        '<a href="/-/ready">Readiness</a>',
    ]
    if dashboard_url:
        links.insert(0, f'<a href="{escape(dashboard_url)}">Grafana dashboards</a>')
    if refresh:
        links.append(f'<a href="/">Stop auto-refresh (every {refresh} s)</a>')
    else:
        links.extend(
            f'<a href="/?refresh={s}">Auto-refresh {s // 60} min</a>'
            if s >= 60
            else f'<a href="/?refresh={s}">Auto-refresh {s} s</a>'
            for s in REFRESH_CHOICES
        )
    return "<nav>" + " ".join(links) + "</nav>"


def _legend() -> str:
    swatches: Iterable[str] = (_badge(s) for s in STATES)
    return (
        "<p class=legend>Bar: spend as a share of the limit; tick marks: "
        '<i class="tick tick-warning"></i>warning threshold, '
        '<i class="tick tick-stop"></i>stop threshold. '
        f"States: {' '.join(swatches)} (at or above the warning ratio, the stop ratio, "
        "the limit).</p>"
    )


def render_landing(
    snapshot: Snapshot, metrics_path: str = "/metrics", query: str = "", now: float | None = None
) -> bytes:
    """The page for ``snapshot``; ``query`` is the request's query string (``refresh=N``);
    ``now`` (Unix time) marks sources whose figures are stale."""
    budget_rows, counts = _budget_rows(snapshot)
    source_rows, down = _source_rows(snapshot, now)
    refresh = refresh_seconds(query)
    dashboard_url = snapshot.config.global_.dashboard_url
    meta_refresh = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{meta_refresh}<link rel="icon" href="data:,"><title>budget-exporter</title>
<style>{_STYLE}</style></head><body>
<header><h1>budget-exporter</h1>
<p class=meta>Spend against budgets, polled in the background. Version {escape(__version__)};
data as of {_time(snapshot.built_at)}.</p>
{_links(metrics_path, dashboard_url, refresh)}</header>
<main>
{_summary(counts, len(snapshot.states), down)}
<h2>Budgets</h2>
<p class=hint>Swipe the tables sideways for more columns.</p>
<div class=scroll id=budgets-scroll><table id=budgets><thead><tr><th>Budget</th><th>Period</th>
<th class=num>Spend</th><th class=num>Limit</th><th class=num>Forecast</th><th>Usage</th>
<th class=num>Used</th><th>State</th></tr></thead><tbody>
{"".join(budget_rows) or "<tr><td colspan=8>no budgets configured</td></tr>"}</tbody></table></div>
{_legend()}
<h2>Sources</h2>
<div class=scroll id=sources-scroll><table id=sources><thead><tr><th>Source</th><th>Provider</th>
<th>Health</th><th>Last success</th><th>Last error</th></tr></thead><tbody>
{"".join(source_rows)}</tbody></table></div>
</main>
</body></html>
"""
    return page.encode()
