"""Past samples for a real Prometheus: counters written as OpenMetrics text and turned into
TSDB blocks by ``promtool tsdb create-blocks-from openmetrics``, in the data directory of a
Prometheus that has not started yet (it loads them when it starts).

A real Prometheus only has data for the times it has seen; backfilled blocks give it
figures for any time in the past (within its retention), such as the minutes around the
start of a month, so that a test can ask it what it would have answered then.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.tools import APT_PROMETHEUS, require_tool


@dataclass(frozen=True)
class Rate:
    """From ``since`` on (until the next rate), the counter grows by ``per_step`` a step."""

    since: datetime
    per_step: float


def counter_points(
    first: datetime,
    last: datetime,
    start_value: float,
    rates: Sequence[Rate],
    step: timedelta,
) -> list[tuple[datetime, float]]:
    """A counter sampled every ``step`` from ``first`` to ``last`` (both included),
    ``start_value`` at ``first``: each sample adds the rate in force at the step before it
    (none before the first rate).  Pick values a binary float holds exactly (multiples of
    1/4) and PromQL's arithmetic on them is exact too."""
    points = [(first, start_value)]
    value, moment = start_value, first
    while moment + step <= last:
        before = moment
        moment += step
        current = [r.per_step for r in rates if r.since <= before]
        value += current[-1] if current else 0.0
        points.append((moment, value))
    return points


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    points: Sequence[tuple[datetime, float]]


def openmetrics(family: str, help_text: str, series: Sequence[Series]) -> str:
    """One counter family (``family`` without ``_total``) as OpenMetrics text with
    timestamps, each series' samples together and in time order, ``# EOF`` at the end."""
    lines = [f"# HELP {family} {help_text}", f"# TYPE {family} counter"]
    for one in series:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(one.labels.items()))
        lines.extend(
            f"{family}_total{{{labels}}} {value!r} {moment.timestamp():.3f}"
            for moment, value in one.points
        )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(text: str, data_dir: Path, workdir: Path) -> None:
    """Write ``text`` (OpenMetrics) as TSDB blocks into ``data_dir``; fails with promtool's
    output if it refuses.  Skips the test (fails it under CI) without promtool."""
    promtool = require_tool("promtool", install=APT_PROMETHEUS)
    source = workdir / "backfill.om.txt"
    source.write_text(text)
    data_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source),
         str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"promtool could not backfill: {done.stdout}{done.stderr}")


def last_month_start(now: datetime, margin: timedelta) -> datetime:
    """The latest first-of-the-month midnight (UTC) at least ``margin`` before ``now``."""
    moment = now.astimezone(UTC) - margin
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
