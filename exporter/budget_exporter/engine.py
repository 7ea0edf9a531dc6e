"""Background polling and the atomically swapped snapshot.

One thread per source polls on the source's own interval (with jitter, and
again right after each period boundary), so at most one poll of a source is
ever in flight.  After every poll the engine rebuilds an immutable
:class:`Snapshot` -- budgets computed, exposition rendered -- and swaps it in
with a single reference assignment; scrapes only ever read the current one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from budget_exporter.budgets import (
    BudgetView,
    compute_budgets,
    currency_mismatches,
    limit_from_problems,
    match_problems,
)
from budget_exporter.config import Config, load_config
from budget_exporter.errors import ConfigError, SourceError
from budget_exporter.exposition import ExporterStatus, Rendered, build_families, render
from budget_exporter.model import PollResult, Window
from budget_exporter.money import is_plausible
from budget_exporter.periods import window_at
from budget_exporter.providers.base import Provider, ProviderContext, SourceConfig
from budget_exporter.redact import redactor
from budget_exporter.state import SourceState

log = logging.getLogger("budget_exporter")

_BOUNDARY_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape or a page needs, built once per change."""

    config: Config
    budgets: tuple[BudgetView, ...]
    states: tuple[SourceState, ...]
    rendered: Rendered
    built_at: float
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
    """Polls one source, in its own thread or on demand."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        source: SourceConfig,
        previous: SourceRunner | None = None,
    ) -> None:
        self.engine = engine
        self.previous = previous
        self.config = config
        self.source = source
        self.key = _runner_key(config, source)
        self.interval = config.poll_interval(source).total_seconds()
        self.logger = log.getChild(source.name)
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
        )
        self._context = context
        self._provider: Provider | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._poll_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def provider(self) -> Provider:
        """The provider instance, created on first use (creating an SDK client can fail)."""
        if self._provider is None:
            self._provider = self.config.provider_class(self.source)(self.source, self._context)
        return self._provider

    def close(self) -> None:
        if self._provider is not None:
            self._provider.close()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"poll-{self.source.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Poll now instead of waiting for the next scheduled poll."""
        self._wake.set()

    def join(self, timeout: float | None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        """False once a started polling thread has ended without being stopped."""
        thread = self._thread
        return thread is None or thread.is_alive() or self._stop.is_set()

    def _run(self) -> None:
        if self.previous is not None:
            # A reload replaced this source: let the old runner's poll finish first,
            # so there is never more than one poll of a source in flight.
            self.previous.join(None)
            self.previous = None
        delay = 0.0
        try:
            while True:
                self._wake.wait(delay)
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    self.poll()
                except Exception:  # a bug in the core: log it and keep polling
                    self.logger.exception("unexpected error while recording a poll")
                delay = self.next_delay()
        finally:
            self.close()

    def next_delay(self) -> float:
        """The interval with jitter, but never past the next period boundary."""
        jitter = self.config.global_.jitter_ratio
        delay = self.interval * (1 + random.uniform(-jitter, jitter))
        now = self.engine.now()
        periods = self.config.periods(self.source)
        if periods:
            boundary = min(window_at(p, now).end for p in periods)
            delay = min(delay, (boundary - now).total_seconds() + _BOUNDARY_GRACE_SECONDS)
        return max(delay, 0.0)

    def poll(self) -> bool:
        """Poll once now; record the outcome with the engine. Returns success."""
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
                error = redactor(str(exc))
            except Exception as exc:
                error = redactor(f"{type(exc).__name__}: {exc}")
            duration = time.monotonic() - started
            if error is not None:
                result = None
            if result is not None:
                self.logger.debug("poll succeeded in %.3fs: %d lines", duration, len(result.lines))
            else:
                self.logger.warning("poll failed after %.3fs: %s", duration, error)
            self.engine.record_poll(self, result, windows, now.timestamp(), duration, error)
            return error is None


def _check_result(result: object, windows: tuple[Window, ...]) -> None:
    """Reject results no provider should return, before they reach the budgets."""
    if not isinstance(result, PollResult):
        raise TypeError(f"provider returned {type(result).__name__}, not PollResult")
    wanted = {w.period for w in windows}
    for line in result.lines:
        if line.period not in wanted:
            raise ValueError("provider returned lines for a period it was not asked for")
        if not is_plausible(line.amount):
            raise ValueError(f"provider returned an implausible amount ({line.amount:.3e})")
    for item in (*result.forecasts, *result.budgets):
        for attribute in ("amount", "limit", "actual", "forecast"):
            amount = getattr(item, attribute, None)
            if isinstance(amount, Decimal) and not is_plausible(amount):
                raise ValueError(f"provider returned an implausible amount ({amount:.3e})")


class Engine:
    """Owns the configuration, the source runners and the current snapshot."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        config_path: str | None = None,
    ) -> None:
        self.clock = clock
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
        self._batch = False
        self._warned: set[str] = set()
        for source in config.sources:
            self._add_runner(config, source)
        self.snapshot = self._build()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._started = True
            for runner in self.runners.values():
                runner.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._started = False
            runners = list(self.runners.values())
        for runner in runners:
            runner.stop()
        deadline = time.monotonic() + timeout
        for runner in runners:
            runner.join(max(deadline - time.monotonic(), 0))

    def poll_all_once(self) -> bool:
        """Poll every source once, concurrently, and wait (for ``--once``)."""
        runners = list(self.runners.values())
        self._batch = True  # one snapshot at the end, not one per source
        try:
            with ThreadPoolExecutor(max_workers=min(8, max(len(runners), 1))) as pool:
                results = list(pool.map(lambda r: r.poll(), runners))
        finally:
            self._batch = False
        self.rebuild()
        for runner in runners:
            runner.close()
        return all(results)

    def healthy(self) -> bool:
        """Every started polling thread is still running."""
        with self._lock:
            return all(runner.alive() for runner in self.runners.values())

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
            if not state.attempted and state.name in self._startup_sources
        ]
        self._ready = not pending  # once ready, stays ready
        return pending

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
                        runner.wake()  # a budget now needs another period from it
                    continue
                if runner is not None:
                    runner.stop()
                new = self._add_runner(config, source, states, previous=runner)
                before = self.states.get(source.name)
                if before is not None and before.provider == source.provider:
                    # Same source, new settings: keep serving its last good data
                    # until the new runner's first poll replaces it.
                    states[source.name] = before.with_(
                        poll_interval_seconds=new.interval, requests=states[source.name].requests
                    )
                if self._started:
                    new.start()
            for runner in old.values():
                runner.stop()
            self.states = states
            self._requests = {k: v for k, v in self._requests.items() if k in states}
            self.config = config
            self._warned.clear()
            self._reload_ok = True
            self._last_reload_success = self.clock()
            redactor.replace_secrets(set(config.secrets))
        self.rebuild()

    def _add_runner(
        self,
        config: Config,
        source: SourceConfig,
        states: dict[str, SourceState] | None = None,
        previous: SourceRunner | None = None,
    ) -> SourceRunner:
        runner = SourceRunner(self, config, source, previous)
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
    ) -> None:
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
            if result is not None:
                state = state.with_(result=result, windows=windows, last_success=attempted_at)
            self.states[name] = state
            if result is not None:
                for problem in limit_from_problems(self.config, name, result):
                    log.warning("%s; the budget is not exported", problem)
                for problem in match_problems(self.config, name, result):
                    if problem not in self._warned:  # once per configuration
                        self._warned.add(problem)
                        log.warning("%s", problem)
                self._count_mismatches(name, currency_mismatches(self.config, name, result))
        if not self._batch:
            self.rebuild()

    def _count_mismatches(self, source: str, found: Counter[tuple[str, str, str]]) -> None:
        """Count (once per poll of ``source``) its lines left out for their currency."""
        for key, count in found.items():
            self._mismatches[key] += count
            log.warning(
                "budget %s: %d line(s) from source %s are in %s, not the budget's currency; "
                "left out (no currency conversion)",
                key[0],
                count,
                source,
                key[2],
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

    def _build(self) -> Snapshot:
        with self._lock:
            config = self.config
            states = {
                name: state.with_(requests=Counter(self._requests.get(name, Counter())))
                for name, state in self.states.items()
            }
        now = self.now()
        budgets = tuple(compute_budgets(config, states, now))
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
        rendered = render(build_families(budgets, ordered, status, max_series))
        return Snapshot(config, budgets, ordered, rendered, now.timestamp())
