"""Real processes for end-to-end tests: the exporter, Prometheus, Alertmanager.

Each is started on 127.0.0.1 with an ephemeral port, its output written to a
log file, and waited for until its readiness endpoint answers 200.  A
:class:`ServiceSet` stops everything it started, newest first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port, get_json, http_get

START_TIMEOUT = 20.0


def find_binary(*names: str) -> str | None:
    """The first of ``names`` on PATH (Debian and upstream name some binaries differently)."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")


class ServiceError(AssertionError):
    """A service did not start; the message carries the tail of its log."""


class Service:
    """One running process with an HTTP endpoint on 127.0.0.1."""

    def __init__(self, name: str, argv: Sequence[str], port: int, workdir: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            list(argv), cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, path: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServiceError(
                    f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}"
                )
            try:
                status, body = http_get(self.url + path, timeout=1.0)
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ServiceError(
            f"{self.name} not ready on {self.url}{path} after {timeout:g}s ({last}):\n"
            f"{self.log_tail()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()


class ServiceSet:
    """Starts services under one work directory and stops them all on :meth:`close`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.services: list[Service] = []

    def __enter__(self) -> ServiceSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self.services:
            self.services.pop().stop()

    def log_tails(self, lines: int = 40) -> str:
        """The end of every started service's log, for a failing test's report."""
        return "\n".join(
            f"----- {service.name} ({service.log_path}) -----\n{service.log_tail(lines)}"
            for service in self.services
        )

    def start(self, name: str, argv: Sequence[str], port: int, ready_path: str) -> Service:
        """Run ``argv`` (listening on ``port``) and wait until ``ready_path`` answers 200."""
        same = sum(1 for s in self.services if s.name.split("-")[0] == name)
        service = Service(f"{name}-{same + 1}" if same else name, argv, port, self.workdir)
        self.services.append(service)
        service.wait_ready(ready_path)
        return service

    def exporter(
        self,
        config_file: Path,
        *extra_args: str,
        port: int | None = None,
        lifecycle: bool = True,
    ) -> Service:
        """``python -m budget_exporter`` (on ``port``, or a free one), ready once every
        source was polled once; its ``/-/reload`` is on (``--web.enable-lifecycle``) for
        tests that reload it, unless ``lifecycle`` is false."""
        port = port or free_port()
        argv = [
            sys.executable,
            "-m",
            "budget_exporter",
            "--config.file",
            str(config_file.resolve()),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            *(["--web.enable-lifecycle"] if lifecycle else []),
            *extra_args,
        ]
        return self.start("exporter", argv, port, "/-/ready")

    def prometheus(
        self,
        scrape_targets: dict[str, list[str]],
        rule_files: Sequence[Path] = (),
        alertmanagers: Sequence[str] = (),
        interval: str = "1s",
    ) -> Service:
        """Prometheus scraping ``{job: [host:port, ...]}`` and evaluating ``rule_files``."""
        binary = find_binary(*PROMETHEUS)
        if binary is None:
            raise ServiceError("prometheus is not installed")
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path.resolve()) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                for job, targets in scrape_targets.items()
            ],
        }
        if alertmanagers:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
            }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
            # Longer than any budget period: the exporter refuses a meter whose window
            # reaches back beyond the server's retention (default 15d).
            "--storage.tsdb.retention.time=400d",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        return self.start("prometheus", argv, port, "/-/ready")

    def alertmanager(self, config_file: Path) -> Service:
        """Alertmanager with clustering off."""
        binary = find_binary(*ALERTMANAGER)
        if binary is None:
            raise ServiceError("alertmanager is not installed")
        port = free_port()
        argv = [
            binary,
            f"--config.file={config_file.resolve()}",
            f"--storage.path={self.workdir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ]
        return self.start("alertmanager", argv, port, "/-/ready")


# -- API helpers --------------------------------------------------------------------


def prom_query(prometheus: Service, expr: str) -> list[dict[str, Any]]:
    """Instant query; the ``result`` list of a vector answer."""
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer = get_json(url)
    if answer.get("status") != "success":
        raise AssertionError(f"query {expr!r} failed: {answer}")
    return list(answer["data"]["result"])


def prom_alerts(prometheus: Service, state: str | None = "firing") -> list[dict[str, Any]]:
    """Alerts from ``/api/v1/alerts``, only those in ``state`` unless it is None."""
    alerts = get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if state is None or a["state"] == state]


def am_alerts(alertmanager: Service) -> list[dict[str, Any]]:
    """Every alert Alertmanager holds (active, suppressed, unprocessed), API v2."""
    return list(get_json(f"{alertmanager.url}/api/v2/alerts"))
