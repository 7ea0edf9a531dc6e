"""A real ``redis-server`` on 127.0.0.1 for the shared-holds tests.

Started on a free port with persistence off (``--save '' --appendonly no``), its
output in a log file, and stopped (with everything it held) when the test ends.
Optionally with a password (``--requirepass``) or TLS only (``--tls-port``).
Outside CI a missing ``redis-server`` (or the ``redis`` Python package) skips the
test; with ``CI`` set it fails, as for every tool CI installs.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.net import free_port
from tests.support.tools import TEST_EXTRA, missing, require_tool

APT_REDIS = "apt-get install redis-server"


def redis_module() -> Any:
    """The ``redis`` client package (in the ``test`` extra)."""
    try:
        import redis
    except ImportError:
        missing(f"the redis Python package is not installed ({TEST_EXTRA})")
        raise
    return redis


class RedisServer:
    """One ``redis-server`` process on a free port of 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        binary = require_tool("redis-server", install=APT_REDIS)
        redis_module()
        self.port = free_port()
        self.password = password
        self.tls = tls
        argv = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(workdir)]
        if tls is None:
            argv += ["--port", str(self.port)]
        else:
            cert, key = tls
            argv += ["--port", "0", "--tls-port", str(self.port)]
            argv += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            argv += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        if password is not None:
            argv += ["--requirepass", password]
        self.log_path = workdir / f"redis-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        options: dict[str, Any] = {"password": self.password}
        if self.tls is not None:
            options["ssl_ca_certs"] = str(self.tls[0])
        return redis_module().Redis.from_url(self.url, **options)

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                client = self.client()
                client.ping()
                client.close()
                return
            except Exception as exc:  # not listening yet
                last = exc
                time.sleep(0.05)
        raise AssertionError(f"redis-server not ready after {timeout}s: {last}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def redis_servers(workdir: Path) -> Iterator[Any]:
    """Body of a fixture starting servers (``start(password=None, tls=None)``), all stopped
    after the test."""
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer(workdir, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def redis_settings(url: str, **options: Any) -> Any:
    """Settings shaped as ``global.check.holds.redis`` for a store built in a test."""
    from budget_exporter.config.holds import RedisConfig

    return RedisConfig(url=url, **options)
