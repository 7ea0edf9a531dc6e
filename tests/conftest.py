from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import responses

from budget_exporter.config.loader import load_config
from budget_exporter.runtime.engine import Engine
from tests.support.clock import Clock
from tests.support.extras import extra_installed, skip_reason
from tests.support.fake_upstream import FakeUpstream
from tests.support.tools import require_tool


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "config.yml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def make_engine(write_config: Callable[[str], Path]) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make(text: str, clock: Callable[[], float] | None = None) -> Engine:
        path = write_config(text)
        engine = Engine(load_config(path), clock=clock or Clock(1_764_000_000.0))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop(timeout=1)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def rs() -> Iterator[responses.RequestsMock]:
    """A ``responses`` mock for the test's duration; requests it does not know fail."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``@pytest.mark.extra("gcp")`` when that extra is not installed."""
    for item in items:
        for marker in item.iter_markers("extra"):
            for extra in marker.args:
                if not extra_installed(extra):
                    item.add_marker(pytest.mark.skip(reason=skip_reason(extra)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``needs_tool``: skipped where the tool is missing, failed under CI."""
    for marker in item.iter_markers("needs_tool"):
        require_tool(*marker.args[0], install=marker.kwargs["install"])


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the image test is to run, debootstrap its stand-in base meanwhile (a minute of
    mostly network and disk, off the suite's critical path)."""
    if any(item.nodeid.startswith("tests/packaging/test_image.py") for item in session.items):
        from tests.support.image import prepare_stand_in
        from tests.support.paths import ROOT

        prepare_stand_in(ROOT / "Dockerfile")
