"""When polls run (:class:`PollScheduler`, a heap of due times and a fixed worker pool) and
when snapshots are rebuilt (:class:`Coalescer`, once per burst of requests).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

PollTask = Callable[[str], float | None]
"""Polls the named source; returns seconds until its next poll, or None to drop it."""


class PollScheduler:
    """Runs each source's polls on a bounded pool of worker threads."""

    def __init__(
        self,
        task: PollTask,
        workers: int,
        rates: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._task = task
        self._workers = workers
        self._rates = dict(rates or {})
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, bool]] = []
        self._tokens: dict[str, int] = {}  # name -> token of its one valid heap entry
        self._groups: dict[str, str] = {}  # name -> rate-limit group (its provider)
        self._next_slot: dict[str, float] = {}  # group -> earliest next start
        self._seq = itertools.count()
        self._in_flight: set[str] = set()
        self._again: set[str] = set()  # poll again as soon as the poll in flight ends
        self._busy = 0
        self._ready: list[str] = []  # handed to workers, not yet taken
        self._threads: list[threading.Thread] = []
        self._dispatcher: threading.Thread | None = None
        self._stopped = False
        self.polls_started = 0

    # -- configuration -------------------------------------------------------------

    def set_workers(self, workers: int) -> None:
        """Grow or shrink the pool (a reload may change ``global.poll_workers``)."""
        with self._cond:
            self._workers = workers
            if self._dispatcher is not None:
                self._spawn_workers()
            self._cond.notify_all()

    def set_rates(self, rates: Mapping[str, float]) -> None:
        with self._cond:
            self._rates = dict(rates)

    # -- schedule ------------------------------------------------------------------

    def schedule(self, name: str, delay: float, group: str = "") -> None:
        """Poll ``name`` in ``delay`` seconds, replacing its earlier due time.

        If a poll of it is in flight, it is polled again once that one ends.
        """
        with self._cond:
            self._groups[name] = group
            if name in self._in_flight:
                self._tokens.pop(name, None)
                if delay <= 0:
                    self._again.add(name)
                else:
                    self._again.discard(name)
                    self._push(name, self._clock() + delay)
                return
            self._push(name, self._clock() + delay)
            self._cond.notify_all()

    def remove(self, name: str) -> None:
        """Never poll ``name`` again (a poll in flight finishes)."""
        with self._cond:
            self._tokens.pop(name, None)
            self._again.discard(name)
            self._groups.pop(name, None)

    def in_flight(self, name: str) -> bool:
        with self._cond:
            return name in self._in_flight

    def due(self, name: str) -> float | None:
        """Seconds until ``name``'s next poll (None if in flight or unknown)."""
        with self._cond:
            token = self._tokens.get(name)
            for due, seq, entry, _ in self._heap:
                if entry == name and seq == token:
                    return max(due - self._clock(), 0.0)
            return None

    def _push(self, name: str, due: float, reserved: bool = False) -> None:
        token = next(self._seq)
        self._tokens[name] = token
        heapq.heappush(self._heap, (due, token, name, reserved))
        if len(self._heap) > 4 * len(self._tokens) + 64:  # drop replaced entries now and then
            self._heap = [e for e in self._heap if self._tokens.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._stopped = False
            self._spawn_workers()
            self._dispatcher = threading.Thread(
                target=self._dispatch, name="poll-scheduler", daemon=True
            )
            self._dispatcher.start()

    def stop(self, timeout: float) -> None:
        """Stop starting polls; wait up to ``timeout`` for the ones in flight."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        threads = [t for t in (self._dispatcher, *self._threads) if t is not None]
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def alive(self) -> bool:
        """False once a started dispatcher or worker has died (a bug)."""
        with self._cond:
            if self._dispatcher is None or self._stopped:
                return True
            return self._dispatcher.is_alive() and all(t.is_alive() for t in self._threads)

    def thread_count(self) -> int:
        with self._cond:
            return sum(t.is_alive() for t in (self._dispatcher, *self._threads) if t is not None)

    def _spawn_workers(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive() and not getattr(t, "retire", 0)]
        while len(self._threads) > self._workers:
            thread = self._threads.pop()
            thread.retire = True  # type: ignore[attr-defined]
        self._cond.notify_all()
        while len(self._threads) < self._workers:
            thread = threading.Thread(
                target=self._work, name=f"poll-worker-{next(self._seq)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    # -- threads -------------------------------------------------------------------

    def _dispatch(self) -> None:
        with self._cond:
            while not self._stopped:
                wait = self._dispatch_due()
                self._cond.wait(wait)

    def _dispatch_due(self) -> float | None:
        """Hand due polls to free workers; return how long to sleep (lock held)."""
        while self._heap and self._busy < self._workers:
            due, token, name, reserved = self._heap[0]
            if self._tokens.get(name) != token:
                heapq.heappop(self._heap)  # replaced or removed
                continue
            now = self._clock()
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            group = self._groups.get(name, "")
            rate = self._rates.get(group)
            if rate and not reserved:
                slot = self._next_slot.get(group, now)
                if slot > now:  # over the provider's rate: take the next free start slot
                    self._push(name, slot, reserved=True)
                    self._next_slot[group] = slot + 1 / rate
                    continue
                self._next_slot[group] = now + 1 / rate
            del self._tokens[name]
            self._in_flight.add(name)
            self._busy += 1
            self._ready.append(name)
            self.polls_started += 1
            self._cond.notify_all()
        return None

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._ready and not self._stopped and not getattr(me, "retire", False):
                    self._cond.wait()
                if self._stopped or getattr(me, "retire", False):
                    return
                name = self._ready.pop(0)
            delay: float | None = None
            try:
                delay = self._task(name)
            except Exception:  # the task logs its own errors; this is a last resort
                log.exception("unexpected error in the poll of source %s", name)
                delay = 60.0
            finally:
                self._finished(name, delay)

    def _finished(self, name: str, delay: float | None) -> None:
        with self._cond:
            self._in_flight.discard(name)
            self._busy -= 1
            if name in self._again:
                self._again.discard(name)
                self._push(name, self._clock())
            elif name in self._tokens:
                pass  # rescheduled while in flight
            elif delay is not None and name in self._groups:
                self._push(name, self._clock() + delay)
            self._cond.notify_all()


class Coalescer:
    """Runs ``action`` after :meth:`request`, once per burst of requests.

    A request starts a run after a short delay (``min_delay``, and at least
    ``idle_ratio`` times the last run's duration after that run ended, so that
    runs take at most about ``1 / (1 + idle_ratio)`` of the time), but never
    more than ``max_delay`` after the request unless a run is still in progress.
    So a burst of finished polls costs one run.  At most one run is in progress
    and at most one waits; a request made during a run always leads to another
    run after it.
    """

    def __init__(
        self,
        action: Callable[[], None],
        *,
        min_delay: float = 0.05,
        max_delay: float = 1.0,
        idle_ratio: float = 2.0,
        name: str = "rebuild",
    ) -> None:
        self._action = action
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.idle_ratio = idle_ratio
        self._name = name
        self._cond = threading.Condition()
        self._requested_at: float | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._last_duration = 0.0
        self._last_end = 0.0
        self._running = False
        self.runs = 0
        self.requests = 0

    def request(self) -> None:
        with self._cond:
            self.requests += 1
            if self._requested_at is None:
                self._requested_at = time.monotonic()
                self._cond.notify_all()

    def start(self) -> None:
        with self._cond:
            self._stopped = False
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        thread = self._thread
        return thread is None or thread.is_alive() or self._stopped

    def idle(self) -> bool:
        """Nothing requested that has not run yet."""
        with self._cond:
            return self._requested_at is None and not self._running

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._requested_at is None and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                # Gather a burst of requests into one run, and leave at least
                # ``idle_ratio`` x the last run's time idle after it (runs never take
                # all the CPU), but never wait more than ``max_delay`` after a request.
                requested = self._requested_at
                idle = min(self._last_duration * self.idle_ratio, self.max_delay)
                start_at = max(requested + self.min_delay, self._last_end + idle)
                start_at = min(start_at, max(requested + self.max_delay, self._last_end))
                while not self._stopped and (left := start_at - time.monotonic()) > 0:
                    self._cond.wait(left)
                if self._stopped:
                    return
                self._requested_at = None  # requests from now on need another run
                self._running = True
            started = time.monotonic()
            try:
                self._action()
            except Exception:
                log.exception("unexpected error in %s", self._name)
            finally:
                with self._cond:
                    self._running = False
                    self._last_end = time.monotonic()
                    self._last_duration = self._last_end - started
                    self.runs += 1
                    self._cond.notify_all()
