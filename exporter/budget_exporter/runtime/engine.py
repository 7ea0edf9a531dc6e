"""The engine: runs every source's polls in the background and swaps in an immutable
snapshot (budgets computed, exposition rendered) after each burst of polls.
"""

from __future__ import annotations

import gc
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from budget_exporter.accounting.budgets import (
    BudgetView,
    IndexCache,
    PeriodIndexes,
    compute_budgets,
    currency_mismatches,
    limit_from_problems,
    match_problems,
)
from budget_exporter.accounting.feeds import budget_feeds
from budget_exporter.accounting.holds import covered_until
from budget_exporter.accounting.sourcestate import SourceState, keep_failed_windows
from budget_exporter.config.loader import load_config
from budget_exporter.config.schema import Config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.core.model import PollResult, Window
from budget_exporter.core.money import is_plausible
from budget_exporter.core.periods import next_boundary, window_at
from budget_exporter.core.redaction import redactor
from budget_exporter.exposition.families import (
    ExporterStatus,
    Rendered,
    build_families,
    holds_families,
    render,
)
from budget_exporter.exposition.rendering import write_families
from budget_exporter.providers.base import (
    Provider,
    ProviderContext,
    SourceConfig,
    base_url_hint,
)
from budget_exporter.runtime.holds import MemoryHolds, hold_config, open_store
from budget_exporter.runtime.scheduler import Coalescer, PollScheduler
from budget_exporter.runtime.storage import State, Storage, fingerprint

log = logging.getLogger(__name__)
_SOURCE_LOGS = logging.getLogger("budget_exporter")
"""Parent of the per-source loggers, ``budget_exporter.<source>`` (named in the runbook)."""

_BOUNDARY_GRACE_SECONDS = 5.0
_SWITCH_INTERVAL = 0.0002
"""Seconds a thread may hold the GIL while others wait (Python's default is 0.005)."""
_FULL_COLLECTION_SECONDS = 300.0
_SHOWN_HELD_SECONDS = 1.0
"""How long scrapes and pages share one answer of a Redis hold store."""
_MAX_REBUILD_DELAY = 1.0
"""Longest wait between a finished poll and the start of the rebuild that serves it."""
_MAX_SAVE_DELAY = 10.0
"""Longest wait between a finished poll and the save of the state that holds it."""
_FAILED_BEFORE_RESTART = "the last poll before the restart failed (its error is not kept)"
FIRST_RETRY_SECONDS = 60.0
"""After a failed poll, the next attempt comes this long after it, then twice as long
after each further failure, but never later than the source's interval."""


def _poll_rates(config: Config) -> dict[str, float]:
    """Per provider, how many polls of its sources may start per second (if limited)."""
    rates: dict[str, float] = {}
    for source in config.sources:
        rate = config.provider_class(source).max_polls_per_second
        if rate:
            rates[source.provider] = rate
    return rates


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape or a page needs, built once per change."""

    config: Config
    budgets: tuple[BudgetView, ...]
    states: tuple[SourceState, ...]
    rendered: Rendered
    built_at: float
    held: Callable[[], dict[str, Decimal]] | None = field(default=None, compare=False, repr=False)
    """The amounts held per budget right now (holds change between snapshots)."""
    _by_name: dict[str, BudgetView] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {b.name: b for b in self.budgets})

    def budget(self, name: str) -> BudgetView | None:
        return self._by_name.get(name)


def _runner_key(config: Config, source: SourceConfig) -> tuple[object, ...]:
    """Settings that, when changed by a reload, need a new provider instance."""
    g = config.global_
    return (
        source,
        config.poll_interval(source),
        config.timeout(source),
        g.retries,
        g.retry_backoff,
        g.max_retry_after,
        g.jitter_ratio,
    )


class SourceRunner:
    """One source: its provider, its schedule and its polls (run by the engine's pool)."""

    def __init__(self, engine: Engine, config: Config, source: SourceConfig) -> None:
        self.engine = engine
        self.config = config
        self.source = source
        self.key = _runner_key(config, source)
        self.interval = config.poll_interval(source).total_seconds()
        self.logger = _SOURCE_LOGS.getChild(source.name)
        g = config.global_
        context = ProviderContext(
            source=source.name,
            timeout=config.timeout(source),
            retries=g.retries,
            retry_backoff=g.retry_backoff,
            max_retry_after=g.max_retry_after,
            record_request=lambda status: engine.count_request(source.name, status),
            now=engine.now,
            logger=self.logger,
            max_response_size=source.max_response_size,
            horizon=_horizon_of(engine, source.billed_source()),
        )
        self._context = context
        self._provider: Provider | None = None
        self._poll_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._polling = False
        self._retired = False
        self.failures = 0
        """Polls failed in a row (the backoff before the next attempt)."""

    @property
    def provider(self) -> Provider:
        """The provider instance, created on first use (creating an SDK client can fail)."""
        if self._provider is None:
            self._provider = self.config.provider_class(self.source)(self.source, self._context)
        return self._provider

    def close(self) -> None:
        if self._provider is not None:
            self._provider.close()

    def retire(self) -> None:
        """Removed or replaced: close the provider now, or after the poll in flight."""
        with self._state_lock:
            self._retired = True
            if self._polling:
                return
        self.close()

    def next_delay(self) -> float:
        """The interval with jitter, but never past the next period boundary; after a
        failed poll, a backoff from :data:`FIRST_RETRY_SECONDS` up to the interval."""
        jitter = self.config.global_.jitter_ratio
        delay = self.interval * (1 + random.uniform(-jitter, jitter))
        if self.failures:
            backoff = FIRST_RETRY_SECONDS * 2 ** min(self.failures - 1, 16)
            delay = min(delay, backoff * (1 + random.uniform(-jitter, jitter)))
        now = self.engine.now()
        periods = self.config.periods(self.source)
        boundary = next_boundary(periods, now)
        if boundary is not None:
            delay = min(delay, (boundary - now).total_seconds() + _BOUNDARY_GRACE_SECONDS)
        return max(delay, 0.0)

    def poll(self, *, rebuild: bool = True) -> bool:
        """Poll once now; record the outcome with the engine. Returns success.

        With ``rebuild`` the engine rebuilds its snapshot before this returns;
        the pool's polls pass False and the rebuilds are coalesced instead.
        """
        with self._state_lock:
            if self._retired:
                return False
            self._polling = True
        try:
            return self._poll(rebuild)
        finally:
            with self._state_lock:
                self._polling = False
                retired = self._retired
            if retired:
                self.close()

    def _poll(self, rebuild: bool) -> bool:
        with self._poll_lock:
            now = self.engine.now()
            windows = tuple(window_at(p, now) for p in sorted(self.config.periods(self.source)))
            started = time.monotonic()
            result: PollResult | None = None
            error: str | None = None
            try:
                result = self.provider.poll(windows)  # built here, so a failing client is contained
                _check_result(result, windows)
            except SourceError as exc:
                error = redactor(str(exc) + base_url_hint(self.source, exc))
            except Exception as exc:
                error = redactor(f"{type(exc).__name__}: {exc}")
            duration = time.monotonic() - started
            if error is not None:
                result = None
            elif result is not None and result.failed_windows:
                error, result = _failed_windows(result, windows)
            if result is not None and error is None:
                self.logger.debug("poll succeeded in %.3fs: %d lines", duration, len(result.lines))
            elif result is not None:
                self.logger.warning("poll failed in part after %.3fs: %s", duration, error)
            else:
                self.logger.warning("poll failed after %.3fs: %s", duration, error)
            self.failures = 0 if error is None else self.failures + 1
            self.engine.record_poll(
                self, result, windows, now.timestamp(), duration, error, rebuild=rebuild
            )
            return error is None


def _failed_windows(
    result: PollResult, windows: tuple[Window, ...]
) -> tuple[str, PollResult | None]:
    """The error of a poll some windows of which failed alone, each named (the source is
    down: ``budget_source_up 0``), and the result to keep: None when no window answered.
    Each window's error is redacted in the result too: it is kept, and saved to storage."""
    failed = tuple(replace(f, error=redactor(f.error)) for f in result.failed_windows)
    error = "; ".join(f"the {f.period} window: {f.error}" for f in failed)
    answered = {w.period for w in windows} - {f.period for f in failed}
    return error, replace(result, failed_windows=failed) if answered else None


def _check_result(result: object, windows: tuple[Window, ...]) -> None:
    """Reject results no provider should return, before they reach the budgets."""
    if not isinstance(result, PollResult):
        raise TypeError(f"provider returned {type(result).__name__}, not PollResult")
    wanted = {w.period for w in windows}
    failed = {f.period for f in result.failed_windows}
    if not failed <= wanted:
        raise ValueError("provider returned a failed window for a period it was not asked for")
    for line in result.lines:
        if line.period not in wanted:
            raise ValueError("provider returned lines for a period it was not asked for")
        if failed and line.period in failed:
            raise ValueError("provider returned lines for a window it says failed")
        if not is_plausible(line.amount):
            raise ValueError(f"provider returned an implausible amount ({line.amount:.3e})")
    for item in (*result.forecasts, *result.budgets):
        for attribute in ("amount", "limit", "actual", "forecast"):
            amount = getattr(item, attribute, None)
            if isinstance(amount, Decimal) and not is_plausible(amount):
                raise ValueError(f"provider returned an implausible amount ({amount:.3e})")


_EARLIER_KEPT = 3
"""Earlier bills (other horizons) kept per billed source for meters yet to re-poll."""


def _horizon_of(engine: Engine, billed: str | None) -> Callable[[], datetime | None]:
    """For a metered source: a function giving its billed source's current horizon."""
    if billed is None:
        return lambda: None
    return lambda: engine.horizon(billed)


class Engine:
    """Owns the configuration, the source runners and the current snapshot."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        config_path: str | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.clock = clock
        self.storage = storage
        self.config_path = config_path or config.file
        self._lock = threading.RLock()
        self._build_lock = threading.Lock()
        self._requests: dict[str, Counter[str]] = {}
        self._mismatches: Counter[tuple[str, str, str]] = Counter()
        self._reload_ok = True
        self._last_reload_success: float | None = clock()
        self._started = False
        self.config = config
        redactor.replace_secrets(set(config.secrets))
        self.runners: dict[str, SourceRunner] = {}
        self.states: dict[str, SourceState] = {}
        self._startup_sources = frozenset(s.name for s in config.sources)
        self._ready = False
        self._warned: set[str] = set()  # problems logged under the current configuration
        self._warned_mismatches: set[tuple[str, str, str]] = set()
        self._indexes: IndexCache = {}  # only touched while building, under the build lock
        self._scheduler = PollScheduler(
            self._poll_task, config.global_.poll_workers, _poll_rates(config)
        )
        self._rebuilds = Coalescer(self._rebuild_live, max_delay=_MAX_REBUILD_DELAY)
        self._last_full_collection = time.monotonic()
        for source in config.sources:
            self._add_runner(config, source)
        self._saved_due: dict[str, float] = {}  # source -> when its restored figures fall due
        self._carried: set[str] = set()  # changed sources serving figures of their old settings
        self._saves = Coalescer(self._save, min_delay=1.0, max_delay=_MAX_SAVE_DELAY, name="save")
        loaded = self._restore(storage) if storage is not None else None
        self.hold_settings, redis = hold_config(config)
        self.holds = open_store(self.hold_settings, redis)  # kept across reloads
        if isinstance(self.holds, MemoryHolds):
            self.holds.on_change = self._request_save  # holds taken are saved within ~1 s
        if loaded is not None and loaded.holds and isinstance(self.holds, MemoryHolds):
            taken = self.holds.restore(loaded.holds, clock())
            log.info("storage: restored %d hold(s) of the check API not yet expired", taken)
        self._live_cache: dict[bool, tuple[Snapshot, tuple[object, ...], bytes]] = {}
        self._shown_held: tuple[Snapshot, float, dict[str, Decimal]] | None = None
        self._covered: tuple[Snapshot, dict[str, float]] | None = None
        self.snapshot = self._build()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        # A rebuild is pure Python: with the default 5 ms switch interval, every
        # time a scrape's thread needs the GIL back it could wait that long.
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL))
        with self._lock:
            self._started = True
            self._rebuilds.start()
            if self.storage is not None:
                self._saves.start()
            for name, runner in self.runners.items():
                self._scheduler.schedule(name, self._first_delay(runner), runner.source.provider)
            # Started once all are in: each schedule() would wake every idle worker and the
            # dispatcher (a fifth of a restart with 5,000 sources).
            self._scheduler.start()

    def _first_delay(self, runner: SourceRunner) -> float:
        """When to poll a source first: when its restored figures fall due (see
        :meth:`_restore`), or at once; but a meter joined to a bill without a
        horizon yet waits for the bill's first result (which polls it at once), at most as
        long as that poll may take: without a horizon it would query the whole period."""
        due = self._saved_due.get(runner.source.name)
        if due is not None:
            now = self.now()
            boundary = next_boundary(runner.config.periods(runner.source), now)
            if boundary is not None:  # a new period is polled for at once, as always
                due = min(due, boundary.timestamp() + _BOUNDARY_GRACE_SECONDS)
            return max(due - now.timestamp(), 0.0)
        billed = runner.source.billed_source()
        if billed is None or billed not in self.runners or self.horizon(billed) is not None:
            return 0.0
        bill = self.runners[billed].source
        attempts = self.config.global_.retries + 1
        return self.config.timeout(bill).total_seconds() * attempts + _BOUNDARY_GRACE_SECONDS

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._started = False
            runners = list(self.runners.values())
        deadline = time.monotonic() + timeout
        self._scheduler.stop(timeout)
        self._rebuilds.stop(max(deadline - time.monotonic(), 0))
        if self.storage is not None:
            self._saves.stop(max(deadline - time.monotonic(), 0))
            self._save()  # the last polls' figures, for the next start
        for runner in runners:
            runner.retire()
        self.holds.close()

    def poll_all_once(self) -> bool:
        """Poll every source once, concurrently, and wait (for ``--once``)."""
        runners = list(self.runners.values())
        workers = max(self.config.global_.poll_workers, 1)
        # Bills first, then the meters joined to them, which start at the bills' horizons.
        rounds = [
            [r for r in runners if r.source.billed_source() is None],
            [r for r in runners if r.source.billed_source() is not None],
        ]
        results: list[bool] = []
        for batch in rounds:
            if not batch:
                continue
            with ThreadPoolExecutor(max_workers=min(workers, len(batch))) as pool:
                # one snapshot at the end, not one per source
                results += list(pool.map(lambda r: r.poll(rebuild=False), batch))
        self.rebuild()
        for runner in runners:
            runner.close()
        return all(results)

    def healthy(self) -> bool:
        """The scheduler, its workers and the rebuild thread are still running."""
        return self._scheduler.alive() and self._rebuilds.alive()

    def thread_count(self) -> int:
        """Threads polling and rebuilding (bounded by ``poll_workers`` + 2).

        HTTP attempts add no thread of their own: their deadlines share the
        one watchdog thread of :mod:`budget_exporter.providers._http`.
        """
        return self._scheduler.thread_count() + (1 if self._started else 0)

    @property
    def rebuilds(self) -> int:
        """Coalesced rebuilds run so far (not counting direct ones)."""
        return self._rebuilds.runs

    def _poll_task(self, name: str) -> float | None:
        """Run by a pool worker: one poll, then the delay until the next."""
        with self._lock:
            runner = self.runners.get(name)
        if runner is None:
            return None
        try:
            runner.poll(rebuild=False)
        except Exception:  # a bug in the core: log it and keep polling
            runner.logger.exception("unexpected error while recording a poll")
        with self._lock:
            if self.runners.get(name) is not runner:
                return None  # replaced or removed meanwhile: the scheduler already knows
        return runner.next_delay()

    def _schedule_new(self, runner: SourceRunner) -> None:
        if self._started:
            self._scheduler.schedule(runner.source.name, 0.0, runner.source.provider)

    def pending_sources(self) -> list[str]:
        """Sources whose first attempt is not in the served snapshot yet.

        Judged on the snapshot, not the live states, so that once ready,
        ``/metrics`` already holds every source's first result.  Only sources
        configured at start-up count: a reload that adds a source must not take
        a serving exporter out of its load balancer.
        """
        if self._ready:
            return []
        pending = [
            state.name
            for state in self.snapshot.states
            if not state.attempted
            and state.result is None  # figures restored from storage count
            and state.name in self._startup_sources
        ]
        self._ready = not pending  # once ready, stays ready
        return pending

    def horizon(self, source: str) -> datetime | None:
        """The data horizon of ``source``'s last good result (None if it has none)."""
        with self._lock:
            state = self.states.get(source)
            return state.result.data_through if state and state.result else None

    def live_states(self) -> dict[str, SourceState]:
        """The sources' states as of their latest polls (the snapshot may lag behind)."""
        with self._lock:
            return dict(self.states)

    # -- reload ------------------------------------------------------------------

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file; on error keep the running config."""
        try:
            config = load_config(self.config_path)
        except Exception as exc:  # a ConfigError, or a loader bug: never fatal on reload
            message = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            message = redactor(message)
            log.error("reload rejected, keeping the running configuration: %s", message)
            self._reload_ok = False
            self.rebuild()
            return False, message
        self.apply(config)
        log.info("configuration reloaded from %s", self.config_path)
        return True, "configuration reloaded"

    def apply(self, config: Config) -> None:
        """Switch to ``config``.

        Unchanged sources keep their runner and schedule; a source whose settings
        changed gets a new runner (polling at once, after any poll of the old one
        in flight) but keeps its last good data until then; removed sources stop.
        """
        with self._lock:
            old = self.runners
            self.runners = {}
            states: dict[str, SourceState] = {}
            for source in config.sources:
                runner = old.pop(source.name, None)
                if runner is not None and runner.key == _runner_key(config, source):
                    periods_before = runner.config.periods(source)
                    runner.config = config
                    self.runners[source.name] = runner
                    states[source.name] = self.states[source.name]
                    if config.periods(source) != periods_before:
                        self._schedule_new(runner)  # a budget now needs another period from it
                    continue
                if runner is not None:
                    runner.retire()
                new = self._add_runner(config, source, states)
                before = self.states.get(source.name)
                if before is not None and before.provider == source.provider:
                    # Same source, new settings: keep serving its last good data
                    # until the new runner's first poll replaces it.
                    states[source.name] = before.with_(
                        poll_interval_seconds=new.interval, requests=states[source.name].requests
                    )
                    self._carried.add(source.name)  # not saved under the new settings
                self._schedule_new(new)  # after any poll of the old runner in flight
            for name, runner in old.items():
                self._scheduler.remove(name)
                runner.retire()
            self._scheduler.set_rates(_poll_rates(config))
            self._scheduler.set_workers(config.global_.poll_workers)
            self.states = states
            self._carried &= set(states)
            self._requests = {k: v for k, v in self._requests.items() if k in states}
            self.config = config
            self.hold_settings, redis = hold_config(config)
            self.holds.configure(self.hold_settings)
            if (redis is None) != (self.holds.kind == "memory"):
                log.warning(
                    "global.check.holds.store changed: holds stay in %s until a restart",
                    self.holds.kind,
                )
            self._warned.clear()
            self._warned_mismatches.clear()
            self._reload_ok = True
            self._last_reload_success = self.clock()
            redactor.replace_secrets(set(config.secrets))
        self.rebuild()
        self._request_save()  # removed sources leave the saved state

    def _add_runner(
        self,
        config: Config,
        source: SourceConfig,
        states: dict[str, SourceState] | None = None,
    ) -> SourceRunner:
        runner = SourceRunner(self, config, source)
        self.runners[source.name] = runner
        (self.states if states is None else states)[source.name] = SourceState(
            name=source.name,
            provider=source.provider,
            poll_interval_seconds=runner.interval,
            accrues=config.provider_class(source).accrues,
            requests=Counter(self._requests.get(source.name, Counter())),
        )
        return runner

    # -- results -----------------------------------------------------------------

    def count_request(self, source: str, status: str) -> None:
        with self._lock:
            self._requests.setdefault(source, Counter())[status] += 1

    def record_poll(
        self,
        runner: SourceRunner,
        result: PollResult | None,
        windows: tuple[Window, ...],
        attempted_at: float,
        duration: float,
        error: str | None,
        *,
        rebuild: bool = True,
    ) -> None:
        """Keep the outcome of a poll; rebuild now, or ask for a coalesced rebuild."""
        name = runner.source.name
        with self._lock:
            if self.runners.get(name) is not runner:
                return  # reconfigured or removed while polling: drop the result
            state = self.states[name].with_(
                attempted=True,
                last_attempt=attempted_at,
                duration=duration,
                up=error is None,
                last_error=error,
            )
            moved = False
            if result is not None and result.failed_windows:
                # The other windows' figures are new; the failed ones keep theirs.
                result, windows = keep_failed_windows(state, result, windows)
            if result is not None:
                before = state.result
                moved = before is None or before.data_through != result.data_through
                if before is not None and moved:
                    # Keep the bill of the old horizon for meters not yet polled against the new.
                    earlier = ((before, state.windows), *state.earlier)[:_EARLIER_KEPT]
                    state = state.with_(earlier=earlier)
                state = state.with_(
                    result=result,
                    windows=windows,
                    last_success=attempted_at,
                    recorded_at=self.clock(),
                )
                self._carried.discard(name)
            self.states[name] = state
            if moved and result is not None and result.data_through is not None:
                for meter in self.runners.values():
                    if meter.source.billed_source() == name:
                        self._schedule_new(meter)  # count the meter from the new horizon at once
            config = self.config
        if result is not None:
            self._check_lines(runner, config, result)
        if rebuild:
            self.rebuild()
        elif self._started:
            self._rebuilds.request()
        if result is not None:
            self._request_save()

    # -- storage -----------------------------------------------------------------

    def _restore(self, storage: Storage) -> State:
        """Take each source's last good state from ``storage`` (before the first snapshot).

        A saved source is used only if it is still configured, with the same settings
        (fingerprint) and provider, and polled for the windows its periods have now:
        figures of a previous period are never served as the current ones.  It is
        served with its real age and polled when its interval since the saved last
        success runs out.
        """
        storage.check_writable()
        loaded = storage.load()
        saved = loaded.sources
        if not saved:
            return loaded
        now = self.now()
        sources = {s.name: s for s in self.config.sources}
        restored, changed, gone, old = 0, 0, 0, 0
        for name, entry in saved.items():
            source = sources.get(name)
            if source is None:
                gone += 1
                continue
            if entry.provider != source.provider or entry.fingerprint != fingerprint(source):
                changed += 1
                continue
            wanted = {p: window_at(p, now) for p in self.config.periods(source)}
            if any(wanted.get(w.period) != w for w in entry.windows) or (
                set(wanted) - {w.period for w in entry.windows}
            ):
                old += 1  # another period now, or another period asked for: poll at once
                continue
            state = self.states[name].with_(
                result=entry.result,
                windows=entry.windows,
                earlier=entry.earlier,
                attempted=True,
                up=entry.up,
                last_attempt=entry.last_attempt or entry.last_success,
                last_success=entry.last_success,
                recorded_at=entry.recorded_at,
                last_error=None if entry.up else _FAILED_BEFORE_RESTART,
            )
            self.states[name] = state
            # A source that was failing is tried again at once, one that was not when due.
            due = entry.last_success + state.poll_interval_seconds if entry.up else 0.0
            self._saved_due[name] = due
            restored += 1
        skipped = []
        if gone:
            skipped.append(f"{gone} no longer configured")
        if changed:
            skipped.append(f"{changed} whose settings changed")
        if old:
            skipped.append(f"{old} polled for an earlier period")
        log.info(
            "storage: restored the figures of %d of %d sources from %s%s",
            restored,
            len(sources),
            storage.path,
            f" (dropped {', '.join(skipped)})" if skipped else "",
        )
        return loaded

    def _request_save(self) -> None:
        if self.storage is not None and self._started:
            self._saves.request()

    def _save(self) -> None:
        """Write every source's last good state to the storage (run by the save thread)."""
        storage = self.storage
        if storage is None:
            return
        with self._lock:
            states = [s for n, s in self.states.items() if n not in self._carried]
            sources = list(self.config.sources)
        prints = {s.name: fingerprint(s) for s in sources}
        holds = self.holds.entries() if isinstance(self.holds, MemoryHolds) else ()
        storage.save(storage.encode(states, prints, self.clock(), holds))

    def _check_lines(self, runner: SourceRunner, config: Config, result: PollResult) -> None:
        """Warn about a poll's unusable lines and count those left out for their currency.

        The line checks walk every line of the result, so they run outside the
        engine lock (rebuilds and the meters' horizons are not held up); the lock
        is taken again only to count and to note what has been warned about.
        Each problem is logged once per configuration; the counter
        ``budget_currency_mismatch_lines_total`` counts every poll.
        """
        name = runner.source.name
        limit_problems = limit_from_problems(config, name, result)
        indexes: PeriodIndexes = {}  # both checks read the same per-period line indexes
        problems = match_problems(config, name, result, indexes)
        mismatches = currency_mismatches(config, name, result, indexes)
        with self._lock:
            if self.config is not config or self.runners.get(name) is not runner:
                return  # reconfigured meanwhile: these findings are about the old settings
            self._mismatches.update(mismatches)
            problems = [p for p in problems if p not in self._warned]
            self._warned.update(problems)
            unwarned = [key for key in mismatches if key not in self._warned_mismatches]
            self._warned_mismatches.update(unwarned)
        for problem in limit_problems:
            log.warning("%s; the budget is not exported", problem)
        for problem in problems:
            log.warning("%s", problem)
        for budget, source, currency in unwarned:
            log.warning(
                "budget %s: %d line(s) from source %s are in %s, not the budget's currency; "
                "left out (no currency conversion)",
                budget,
                mismatches[(budget, source, currency)],
                source,
                currency,
            )

    # -- snapshot ----------------------------------------------------------------

    def rebuild(self) -> None:
        """Build and swap in a new snapshot.

        Should building fail (a bug), the previous snapshot keeps being served.
        """
        with self._build_lock:
            try:
                self.snapshot = self._build()
            except Exception:
                log.exception("could not build a new snapshot; still serving the previous one")

    def _rebuild_live(self) -> None:
        """A coalesced rebuild of the running exporter, then :func:`gc.freeze`.

        Each snapshot leaves tens of thousands of long-lived objects, and Python's
        full collections, which scan them all, would pause every thread (scrapes
        included) for tens to hundreds of milliseconds a few times a minute.
        Frozen objects are never scanned; they are still freed when no longer
        referenced.  Cyclic garbage frozen meanwhile is collected by a full
        collection every few minutes.
        """
        self.rebuild()
        now = time.monotonic()
        if now - self._last_full_collection >= _FULL_COLLECTION_SECONDS:
            self._last_full_collection = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    def _build(self) -> Snapshot:
        with self._lock:
            config = self.config
            states = {
                name: state.with_(requests=Counter(self._requests.get(name, Counter())))
                for name, state in self.states.items()
            }
        now = self.now()
        budgets = tuple(compute_budgets(config, states, now, self._indexes))
        self._warn_blind_meters(config, budgets)
        with self._lock:
            status = ExporterStatus(
                reload_successful=self._reload_ok,
                last_reload_success=self._last_reload_success,
                mismatches=dict(self._mismatches),
            )
        ordered = tuple(states[s.name] for s in config.sources if s.name in states)
        max_series = {
            s.name: s.max_series or config.global_.max_series_per_source for s in config.sources
        }
        feeds = budget_feeds(config, states, self._indexes)
        rendered = render(build_families(budgets, ordered, status, max_series, feeds), self._live)
        return Snapshot(config, budgets, ordered, rendered, now.timestamp(), self._held_now)

    def _warn_blind_meters(self, config: Config, budgets: tuple[BudgetView, ...]) -> None:
        """Log once per configuration each budget whose joined meters add nothing while
        the bill shows spend after its horizon (``budget_meter_blind``)."""
        found = [
            (b.name, part, f"meter-blind:{b.name}:{part.source}:{part.blind}")
            for b in budgets
            for part in b.parts
            if part.blind is not None
        ]
        with self._lock:
            if self.config is not config:
                return
            new = [(name, part) for name, part, key in found if key not in self._warned]
            self._warned.update(key for _, _, key in found)
        for name, part in new:
            why = (
                "their queries matched no series (a renamed metric or label?)"
                if part.blind == "no_series"
                else "their series add nothing to it (dimension values that differ from the "
                "budget's match, or series that did not increase: first scraped with their "
                "spend already on them, or spend the meter does not see)"
            )
            log.warning(
                "budget %s: the meter(s) %s joined to %s add nothing while the bill shows spend "
                "after its data horizon: %s; the bill's open part is counted instead "
                "(docs/realtime.md, when the meter is wrong)",
                name,
                ", ".join(part.meters),
                part.source,
                why,
            )

    def _held_now(self) -> dict[str, Decimal]:
        """Every budget's held amount now, judged against the served snapshot's polls, as
        scrapes and pages show it. From Redis this is a round trip: scrapes and pages share
        one answer for up to a second instead of each waiting on Redis (checks always ask)."""
        snapshot = self.snapshot
        shared = self.holds.kind == "redis"
        started = time.monotonic()
        shown = self._shown_held
        fresh = shown is not None and started - shown[1] < _SHOWN_HELD_SECONDS
        if shared and fresh and shown is not None and shown[0] is snapshot:
            return shown[2]
        kept = self._covered
        if kept is not None and kept[0] is snapshot:  # the same for every scrape of a snapshot
            covered = kept[1]
        else:
            after = self.hold_settings.visible_after
            covered = covered_until(snapshot.config, snapshot.states, after)
            self._covered = (snapshot, covered)
        held = self.holds.held(self.clock(), covered)
        if shared:
            self._shown_held = (snapshot, started, held)
        return held

    def _live(self, openmetrics: bool) -> bytes:
        """The families rendered at each scrape: the held amounts and the holds store's health
        (rendered again only when they changed: a gauge per budget is thousands of lines)."""
        snapshot = self.snapshot
        held = self._held_now()
        up = self.holds.up()
        key = (tuple(sorted(held.items())), up)
        cached = self._live_cache.get(openmetrics)
        if cached is not None and cached[0] is snapshot and cached[1] == key:
            return cached[2]
        currencies = {b.name: b.currency for b in snapshot.config.budgets}
        families = holds_families(held, currencies, self.holds.kind, up)
        rendered = write_families(families, openmetrics=openmetrics)
        self._live_cache[openmetrics] = (snapshot, key, rendered)
        return rendered
