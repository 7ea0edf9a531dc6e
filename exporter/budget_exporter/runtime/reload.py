"""Reloading the configuration: one reload at a time, requests coalesced, and SIGHUP
caught from the very start (see docs/configuration.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

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


class Signals:
    """What the signal handlers leave for the main loop: two flags, and a byte on a pipe.

    A handler runs in the main thread between two bytecodes, possibly in the middle
    of anything else the main thread does, another handler included.  So it only
    stores ``True`` in an attribute: no lock (``threading.Event.set()`` takes one,
    and a handler interrupting the holder would wait for it forever), no logging,
    nothing that grows with the number of signals.  Signals arriving faster than
    that are merged by the interpreter.  The C-level handler also writes the
    signal's number to a non-blocking pipe (:func:`signal.set_wakeup_fd`; a full
    pipe drops the byte, harmlessly), which wakes :meth:`wait` at once.
    """

    def __init__(self) -> None:
        self.reload_requested = False
        self.stop_requested = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.installed = False
        """Whether the handlers are in place (only the main thread can install them)."""

    def catch_reload(self) -> None:
        """SIGHUP requests a reload (where there is a SIGHUP, from the main thread)."""
        if hasattr(signal, "SIGHUP") and self._install():
            signal.signal(signal.SIGHUP, self._on_reload)

    def catch_stop(self) -> None:
        """SIGTERM and SIGINT request a stop."""
        if self._install():
            signal.signal(signal.SIGTERM, self._on_stop)
            signal.signal(signal.SIGINT, self._on_stop)

    def _install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        if not self.installed:
            signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
            self.installed = True
        return True

    def stopping(self) -> None:
        """Ignore SIGHUP from now on: while the process ends, a reload is moot (and the
        interpreter, finalising, would put back the default action, which kills)."""
        if self.installed and hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_reload(self, signum: int, frame: object) -> None:
        self.reload_requested = True

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def take_reload(self) -> bool:
        """Whether a reload was requested since the last call.  The flag is cleared
        before the reload runs, so a signal arriving during it asks for another."""
        if not self.reload_requested:
            return False
        self.reload_requested = False
        return True

    def wait(self, timeout: float) -> None:
        """Until a signal arrives or ``timeout`` seconds pass; the pipe is emptied."""
        with contextlib.suppress(OSError, ValueError):
            select.select([self._read], [], [], timeout)
            while os.read(self._read, 4096):
                pass


def catch_sighup() -> Signals:
    """The process's :class:`Signals`, with SIGHUP caught (a no-op where there is none)."""
    signals = Signals()
    signals.catch_reload()
    return signals
