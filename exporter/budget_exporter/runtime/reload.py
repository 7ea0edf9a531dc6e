"""Reloading the configuration: one reload at a time, requests coalesced.

A reload re-reads and validates the whole configuration, so reloads running
side by side only multiply the memory and the time each takes.  :class:`Reloader`
runs one at a time; every request that arrives while one runs is answered by
the next single reload, which starts after it and so sees the file as it was
when the request was made.

The SIGHUP handler is installed before the configuration is loaded
(:func:`catch_sighup`): a SIGHUP that arrives while the exporter starts is kept
and served once it runs, instead of killing the process.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger("budget_exporter")

ReloadResult = tuple[bool, str]


class Reloader:
    """Serialises and coalesces calls of ``reload`` (which returns ``(ok, message)``)."""

    def __init__(self, reload: Callable[[], ReloadResult]) -> None:
        self._reload = reload
        self._changed = threading.Condition()
        self._running = False
        self._requested = 0  # requests so far
        self._served = 0  # requests that a finished reload started after
        self._result: ReloadResult = (True, "")
        self.runs = 0
        """Reloads run so far (coalesced requests count once)."""

    def reload(self) -> ReloadResult:
        """Run a reload that starts after this call, or wait for one; its result."""
        with self._changed:
            self._requested += 1
            mine = self._requested
            while self._served < mine:
                if not self._running:
                    break
                self._changed.wait()
            else:
                return self._result  # a reload that started after this request has finished
            self._running = True
            covers = self._requested  # everything asked so far is served by this run
        try:
            result = self._reload()
        except Exception as exc:  # the engine's reload never raises; this one never does either
            log.exception("reload failed")
            result = (False, f"reload failed: {type(exc).__name__}")
        with self._changed:
            self._running = False
            self._served = covers
            self._result = result
            self.runs += 1
            self._changed.notify_all()
        return result


def catch_sighup() -> threading.Event:
    """Turn SIGHUP into an event set for the serving loop (a no-op where there is no SIGHUP)."""
    requested = threading.Event()
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda *_: requested.set())
    return requested
