"""The HTML page served at ``/``: a summary line, every budget with a usage bar, every
source's health (see docs/configuration.md#the-landing-page), and its script (a filter
box and sortable columns), served from the exporter itself at :data:`SCRIPT_PATH`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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
from budget_exporter.web.api import BudgetFilter, changes_after, read_filter
from budget_exporter.web.pagecache import Page, PageCache

STATES = ("ok", "warning", "stop", "exceeded")
MIN_REFRESH_SECONDS = 10
MAX_REFRESH_SECONDS = 3600
REFRESH_CHOICES = (30, 300)
CONTENT_TYPE = "text/html; charset=utf-8"
SCRIPT_PATH = "/-/landing.js"
DOCS_URL = "https://github.com/budget-exporter/budget-exporter/blob/main/docs/"

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
td small{display:block;color:#59636e}
td small.split{white-space:normal;min-width:12rem;max-width:14rem;margin-left:auto}
td.name{white-space:normal;overflow-wrap:anywhere;min-width:9rem;max-width:18rem}
th button{font:inherit;color:inherit;background:none;border:0;padding:0;cursor:pointer;
text-align:inherit}
th button::after{content:"\\2195";margin-left:.25rem;opacity:.35}
th[aria-sort=ascending] button::after{content:"\\2191";opacity:1}
th[aria-sort=descending] button::after{content:"\\2193";opacity:1}
.tools{display:flex;flex-wrap:wrap;gap:.4rem .9rem;align-items:center;margin:.4rem 0}
.tools input{font:inherit;padding:.25rem .5rem;width:18rem;max-width:100%}
code{font-size:.85rem;background:#f6f8fa;padding:.1rem .3rem;border-radius:4px;
overflow-wrap:anywhere}
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
    """Billed and metered shares of a budget that counts metered spend (the nowcast);
    the only text of the table that wraps, so that it never widens the table."""
    if not b.metered:
        return ""
    horizons = [p.data_through.timestamp() for p in b.parts if p.meters and p.data_through]
    after = f" after {_time(min(horizons))}" if horizons else ""
    return (
        f"<small class=split>billed {_money(float(b.billed), b.currency)} + metered "
        f"{_money(float(b.metered), b.currency)}{escape(after)}</small>"
    )


def _held(amount: Decimal | None, currency: str) -> str:
    """The amount held by checks in flight and recent records (counted by the check API)."""
    if not amount:
        return ""
    return f"<small class=held>+ {_money(float(amount), currency)} held</small>"


def _badge(kind: str, text: str | None = None) -> str:
    return f'<span class="badge s-{kind}">{escape(text or kind)}</span>'


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _row_data(labels: Mapping[str, str], state: str) -> str:
    """A row's data for the page's script, beside its cells: its state and labels (the
    filter box searches them with the name and period)."""
    words = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f'<tr data-state={state} data-labels="{escape(words)}"'


def _budget_rows(
    snapshot: Snapshot,
    held: Mapping[str, Decimal] | None = None,
    wanted: BudgetFilter | None = None,
) -> tuple[list[str], Counter[str]]:
    """The rows ``wanted`` keeps, and every budget counted by state."""
    rows: list[str] = []
    counts: Counter[str] = Counter()
    if held is None:
        held = snapshot.held() if snapshot.held is not None else {}
    labels = {b.name: b.labels for b in snapshot.config.budgets}
    for b in sorted(snapshot.budgets, key=lambda b: b.usage_ratio, reverse=True):
        state = b.state
        counts[state] += 1
        if wanted and not wanted.keeps(b.name, labels.get(b.name, {}), state):
            continue
        width = min(b.usage_ratio, 1.0) * 100
        warning, stop = b.warning_ratio * 100, b.stop_ratio * 100
        rows.append(
            f'{_row_data(labels.get(b.name, {}), state)} data-ratio="{b.usage_ratio!r}">'
            f"<td class=name>{escape(b.name)}</td><td>{escape(b.period)}</td>"
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
        if wanted and not wanted.keeps(budget.name, budget.labels, "unknown"):
            continue
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
            f"{_row_data(budget.labels, 'unknown')}>"
            f"<td class=name>{escape(budget.name)}</td><td>{escape(str(budget.period))}</td>"
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


def _unconverted(snapshot: Snapshot) -> str:
    """Spend in other currencies the budgets leave out for want of a fresh rate, said
    plainly (docs/currencies.md); nothing when every such spend is converted."""
    items = []
    for b in sorted(snapshot.budgets, key=lambda b: b.name):
        for gone in b.left_out:
            if gone.reason == "stale_rate" and gone.stale is not None and gone.stale.day:
                why = (
                    f"the newest {gone.currency} to {b.currency} rate ({gone.stale.source}, "
                    f"{gone.stale.day.isoformat()}) is older than its max_age"
                )
            else:
                why = f"no rates source publishes a {gone.currency} to {b.currency} rate"
            items.append(
                f"<li>Budget {escape(b.name)} leaves out "
                f"{_money(float(gone.native), gone.currency)} of source "
                f"{escape(gone.source)}: {escape(why)}.</li>"
            )
    if not items:
        return ""
    return (
        "<h2>Not converted</h2>\n<ul id=unconverted>" + "".join(items) + "</ul>\n"
        "<p class=hint>These budgets count less than was spent until a fresh rate comes "
        "(see budget_unconverted_spend_amount).</p>"
    )


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
    links.append('<a href="#check-api">Check API</a>')
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


def _check_api(snapshot: Snapshot) -> str:
    """How an application asks before spending: one line of curl, and the docs."""
    name = snapshot.config.budgets[0].name if snapshot.config.budgets else "<budget>"
    body = escape(f'{{"budget": "{name}", "cost": 2.50}}')
    return (
        "<p class=meta id=check-api>Ask before spending (the check API): "
        f"<code>curl -s <span class=origin>http://localhost:9820</span>/api/v1/check "
        f"-d &#x27;{body}&#x27;</code> &middot; "
        f'<a href="{DOCS_URL}check-api.md">check API docs</a></p>'
    )


def _filtered(wanted: BudgetFilter | None, shown: int, total: int) -> str:
    if not wanted:
        return ""
    return (
        f"<p class=meta id=filtered>Showing {shown} of {_plural(total, 'budget')} "
        f'({escape(wanted.describe())}) &middot; <a href="/">show all</a></p>'
    )


def landing_page(
    snapshot: Snapshot,
    metrics_path: str,
    query: str,
    now: float,
    cache: PageCache,
    render_page: Callable[..., bytes] | None = None,
) -> Page:
    """The page for a request (``query``: its query string), rendered (by ``render_page``,
    :func:`render_landing` by default) once per snapshot, held amounts and query, and kept
    in ``cache``; FilterError for a bad filter."""
    render_page = render_page or render_landing
    wanted = read_filter(query, also=("refresh",), strict=False)
    held = snapshot.held() if snapshot.held is not None else {}

    def render() -> tuple[Page, float]:
        body = render_page(snapshot, metrics_path, query, now, wanted=wanted, held=held)
        return Page.of(body, CONTENT_TYPE), changes_after(snapshot, now)

    variant = (refresh_seconds(query), wanted)
    return cache.get(snapshot, tuple(sorted(held.items())), now, variant, render)


def render_landing(
    snapshot: Snapshot,
    metrics_path: str = "/metrics",
    query: str = "",
    now: float | None = None,
    *,
    wanted: BudgetFilter | None = None,
    held: Mapping[str, Decimal] | None = None,
) -> bytes:
    """The page for ``snapshot``; ``query`` is the request's query string (``refresh=N``);
    ``now`` (Unix time) marks sources whose figures are stale; ``wanted`` filters the
    budgets; ``held`` are the amounts held (else read from the snapshot)."""
    budget_rows, counts = _budget_rows(snapshot, held, wanted)
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
{_links(metrics_path, dashboard_url, refresh)}
{_check_api(snapshot)}</header>
<main>
{_summary(counts, len(snapshot.states), down)}
<h2>Budgets</h2>
{_filtered(wanted, len(budget_rows), sum(counts.values()))}
<div class=tools id=filter-bar hidden><label>Filter <input type=search id=filter
placeholder="name, label=value or state" autocomplete=off></label>
<span id=filter-count class=meta aria-live=polite></span></div>
<p class=hint>Swipe the tables sideways for more columns.</p>
<div class=scroll id=budgets-scroll><table id=budgets><thead><tr>
<th data-sort=text>Budget</th><th data-sort=text>Period</th>
<th class=num data-sort=amount>Spend</th><th class=num data-sort=amount>Limit</th>
<th class=num data-sort=amount>Forecast</th><th>Usage</th>
<th class=num data-sort=ratio aria-sort=descending>Used</th><th data-sort=state>State</th>
</tr></thead><tbody>
{"".join(budget_rows) or _no_rows(wanted)}</tbody></table></div>
{_legend()}
{_unconverted(snapshot)}
<h2>Sources</h2>
<div class=scroll id=sources-scroll><table id=sources><thead><tr><th>Source</th><th>Provider</th>
<th>Health</th><th>Last success</th><th>Last error</th></tr></thead><tbody>
{"".join(source_rows)}</tbody></table></div>
</main>
<script src="{SCRIPT_PATH}" defer></script>
</body></html>
"""
    return page.encode()


def _no_rows(wanted: BudgetFilter | None) -> str:
    text = "no budget matches the filter" if wanted else "no budgets configured"
    return f"<tr><td colspan=8>{text}</td></tr>"


SCRIPT = """\
"use strict";
// The landing page's filter box and sortable columns (budget-exporter); no framework.
(function () {
  for (const e of document.querySelectorAll(".origin")) e.textContent = location.origin;
  const table = document.getElementById("budgets");
  if (!table) return;
  const tbody = table.tBodies[0];
  const rows = Array.from(tbody.querySelectorAll("tr[data-state]"), (row) => ({
    row,
    text: [row.cells[0].textContent, row.cells[1].textContent, row.dataset.state,
      row.dataset.labels].join(" ").toLowerCase(),
  }));
  const box = document.getElementById("filter");
  const count = document.getElementById("filter-count");
  document.getElementById("filter-bar").hidden = false;
  function filter() {
    const words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let shown = 0;
    for (const r of rows) {
      const keep = words.every((w) => r.text.includes(w));
      r.row.hidden = !keep;
      if (keep) shown += 1;
    }
    count.textContent = words.length ? `${shown} of ${rows.length} shown` : "";
  }
  box.addEventListener("input", filter);
  const SEVERITY = { ok: 0, warning: 1, stop: 2, exceeded: 3 };
  const heads = Array.from(table.tHead.rows[0].cells);
  const sortable = heads.filter((th) => th.dataset.sort);
  // A row's sort key; undefined for a budget without data (sorted last either way).
  function key(row, column, kind) {
    if (kind === "text") return row.cells[column].textContent;
    if (kind === "state") return SEVERITY[row.dataset.state];
    if (kind === "ratio") return row.dataset.ratio === undefined ? undefined : +row.dataset.ratio;
    const cell = row.cells[column];
    if (!cell || cell.colSpan > 1) return undefined;
    return parseFloat(cell.firstChild.textContent.replace(/,/g, ""));
  }
  function sortBy(th) {
    const kind = th.dataset.sort, column = heads.indexOf(th);
    const previous = th.getAttribute("aria-sort");
    const first = kind === "text" ? "ascending" : "descending";
    const order = previous ? (previous === "ascending" ? "descending" : "ascending") : first;
    const sign = order === "ascending" ? 1 : -1;
    for (const h of sortable) h.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", order);
    const keyed = rows.map((r) => [key(r.row, column, kind), r]);
    keyed.sort((a, b) => {
      const x = a[0], y = b[0];
      const xm = x === undefined || Number.isNaN(x), ym = y === undefined || Number.isNaN(y);
      if (xm || ym) return xm - ym;
      if (kind === "text") return sign * x.localeCompare(y);
      return sign * (x - y);
    });
    rows.splice(0, rows.length, ...keyed.map((k) => k[1]));
    const fragment = document.createDocumentFragment();
    for (const r of rows) fragment.appendChild(r.row);
    tbody.appendChild(fragment);
  }
  for (const th of sortable) {
    const button = document.createElement("button");
    button.type = "button";
    button.append(...th.childNodes);
    button.addEventListener("click", () => sortBy(th));
    th.append(button);
  }
})();
"""


def script_page() -> Page:
    """The page's script, served at :data:`SCRIPT_PATH`."""
    return _SCRIPT_PAGE


_SCRIPT_PAGE = Page.of(SCRIPT.encode(), "text/javascript; charset=utf-8")
