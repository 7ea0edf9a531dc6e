"""The HTML page served at ``/``: every budget with a usage bar, every source's health."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from budget_exporter import __version__
from budget_exporter.budgets import BudgetView
from budget_exporter.engine import Snapshot

_COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "stop": "#ef6c00", "exceeded": "#c62828"}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:72rem}
table{border-collapse:collapse;width:100%;margin-bottom:2rem}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #ddd}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#eee;width:12rem;height:.9rem;border-radius:3px;position:relative}
.bar>span{display:block;height:100%;border-radius:3px}
.bar>i{position:absolute;top:-2px;bottom:-2px;width:2px;background:#555}
"""


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


def render_landing(snapshot: Snapshot, metrics_path: str = "/metrics") -> bytes:
    rows = []
    for b in sorted(snapshot.budgets, key=lambda b: b.usage_ratio, reverse=True):
        width = min(b.usage_ratio, 1.0) * 100
        rows.append(
            "<tr>"
            f"<td>{escape(b.name)}</td><td>{escape(b.period)}</td>"
            f"<td class=num>{_money(float(b.spend), b.currency)}{_split(b)}</td>"
            f"<td class=num>{_money(float(b.limit), b.currency)}</td>"
            f"<td class=num>{_money(float(b.forecast), b.currency)}</td>"
            f'<td><div class=bar title="{b.usage_ratio:.1%}">'
            f'<span style="width:{width:.1f}%;background:{_COLOURS[b.state]}"></span>'
            f'<i style="left:{b.warning_ratio * 100:.1f}%"></i>'
            f'<i style="left:{b.stop_ratio * 100:.1f}%"></i></div></td>'
            f"<td class=num>{b.usage_ratio:.1%}</td><td>{escape(b.state)}</td>"
            "</tr>"
        )
    shown = {b.name for b in snapshot.budgets}
    states = {s.name: s for s in snapshot.states}
    for budget in snapshot.config.budgets:
        if budget.name not in shown:
            needed = [s.name for s in snapshot.config.polled_sources(budget)]
            down = [n for n in needed if n in states and states[n].attempted and not states[n].up]
            reason = (
                f"no data: source {', '.join(down)} failed (see Sources below)"
                if down
                else "waiting for the first data from every source"
            )
            rows.append(
                f"<tr><td>{escape(budget.name)}</td><td>{escape(str(budget.period))}</td>"
                f"<td colspan=6>{escape(reason)}</td></tr>"
            )
    sources = []
    for s in snapshot.states:
        health = "pending" if not s.attempted else "up" if s.up else "down"
        sources.append(
            f"<tr><td>{escape(s.name)}</td><td>{escape(s.provider)}</td><td>{health}</td>"
            f"<td>{_time(s.last_success)}</td><td>{escape(s.last_error or '')}</td></tr>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>budget-exporter</title>
<style>{_STYLE}</style></head><body>
<h1>budget-exporter</h1>
<p>Spend against budgets, polled in the background. Version {escape(__version__)};
data as of {_time(snapshot.built_at)}.</p>
<p><a href="{escape(metrics_path)}">Metrics</a> &middot; <a href="/-/healthy">Health</a>
&middot; <a href="/-/ready">Readiness</a> &middot; <a href="/api/v1/budgets">Budgets (JSON)</a></p>
<h2>Budgets</h2>
<table><tr><th>Budget</th><th>Period</th><th>Spend</th><th>Limit</th><th>Forecast</th>
<th>Usage</th><th></th><th>State</th></tr>
{"".join(rows) or "<tr><td colspan=8>no budgets configured</td></tr>"}</table>
<h2>Sources</h2>
<table><tr><th>Source</th><th>Provider</th><th>Health</th><th>Last success</th><th>Last error</th></tr>
{"".join(sources)}</table>
</body></html>
"""
    return page.encode()
