"""The real exporter in a subprocess, for tests of its command line, signals and logs.

Unlike :meth:`tests.support.services.ServiceSet.exporter` (end-to-end runs beside
Prometheus, output in a log file), this keeps stdout and stderr apart, takes
extra environment variables, can wait for readiness behind basic auth and
reports the exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from tests.support.net import free_port

EXPORTER = (sys.executable, "-m", "budget_exporter")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m budget_exporter ARGS`` to the end (a minute at most), output captured."""
    return subprocess.run(
        [*EXPORTER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


class ExporterProcess:
    """``python -m budget_exporter`` serving on a free port of 127.0.0.1, with
    ``/-/reload`` on (``--web.enable-lifecycle``) unless ``lifecycle`` is False."""

    def __init__(
        self,
        config: Path,
        *flags: str,
        env: dict[str, str] | None = None,
        lifecycle: bool = True,
    ) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        if lifecycle:
            flags = ("--web.enable-lifecycle", *flags)
        self.proc = subprocess.Popen(
            [
                *EXPORTER,
                f"--config.file={config}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._stopped: tuple[int, str] | None = None

    def wait_ready(self, timeout: float = 20, auth: tuple[str, str] | None = None) -> None:
        """Until ``/-/ready`` answers 200; fails with the log if the exporter exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited: {self.proc.communicate()[1]}")
            try:
                response = requests.get(f"{self.url}/-/ready", timeout=1, auth=auth)
                if response.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError("exporter never became ready")

    def stop(self) -> tuple[int, str]:
        """SIGTERM (SIGKILL after 15 s); its exit code and stderr (the log).  Idempotent."""
        if self._stopped is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                _, err = self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            self._stopped = (self.proc.returncode, err)
        return self._stopped


def exporters() -> Iterator[Callable[..., ExporterProcess]]:
    """Body of a fixture that starts exporters (``start(config, *flags, env=None,
    lifecycle=True)``) and always stops them::

        @pytest.fixture
        def running() -> Iterator[Callable[..., ExporterProcess]]:
            yield from exporters()
    """
    started: list[ExporterProcess] = []

    def start(
        config: Path, *flags: str, env: dict[str, str] | None = None, lifecycle: bool = True
    ) -> ExporterProcess:
        exporter = ExporterProcess(config, *flags, env=env, lifecycle=lifecycle)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()
