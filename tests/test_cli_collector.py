"""The command pauses Python's cyclic collector while it starts (configuration, saved state,
first snapshot) and always turns it back on: after a check, a --once run, a bad file, and
before serving."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from budget_exporter import cli
from tests.support.paths import ROOT

DEMO = str(ROOT / "examples" / "demo.yml")


@pytest.mark.parametrize(
    "argv",
    [
        ["--config.file", DEMO, "--config.check"],
        ["--config.file", DEMO, "--once"],
        ["--config.file", str(ROOT / "no-such-file.yml")],
    ],
    ids=["check", "once", "bad-file"],
)
def test_the_collector_is_on_again_after_the_command(argv: list[str], capsys) -> None:
    assert gc.isenabled()
    cli.main(argv)
    assert gc.isenabled()


def test_start_up_runs_without_the_collector_and_serving_with_it(monkeypatch, tmp_path) -> None:
    seen: dict[str, Any] = {}

    def serve(engine: Any, args: Any, signals: Any, collecting: bool) -> int:
        seen.update(paused=not gc.isenabled(), collecting=collecting, engine=engine)
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    assert cli.main(["--config.file", DEMO, f"--storage.path={tmp_path}"]) == 0
    assert seen["paused"] and seen["collecting"]  # built with it off; _serve turns it on
    assert b"budget_exporter_build_info" in seen["engine"].snapshot.rendered.text  # built first
    assert gc.isenabled()

    gc.disable()  # whoever turned it off keeps it off
    try:
        cli.main(["--config.file", DEMO, f"--storage.path={tmp_path}"])
        assert seen["collecting"] is False and not gc.isenabled()
    finally:
        gc.enable()
