"""Tools the tests run (promtool, Prometheus, hadolint, Chromium, ...): found, or the test
skips or fails.

Outside CI a missing tool skips the test with the way to install it. With ``CI`` set the same
test fails: CI installs every tool, so a missing one is a broken install step, and a suite that
quietly skipped it would pass for the wrong reason.

In a test, ``require_tool("promtool", install=APT_PROMETHEUS)`` returns the path; on a whole
test or module, the mark ``needs_tool(("prometheus",), install=APT_PROMETHEUS)`` does the same
before the test starts (``tests/conftest.py`` applies it).
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from collections.abc import Iterable

import pytest

APT_PROMETHEUS = "apt-get install prometheus"
APT_ALERTMANAGER = "apt-get install prometheus-alertmanager"
APT_BROWSER = "apt-get install chromium chromium-driver"
TEST_EXTRA = "pip install -e '.[test]'"


def find_tool(*names: str) -> str | None:
    """The first of ``names`` in the running environment's scripts (a virtualenv's ``bin``) or
    on the PATH (Debian and upstream name some binaries differently)."""
    for name in names:
        path = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
        if path:
            return path
    return None


def missing(message: str) -> None:
    """Skip the running test for ``message``; fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI installs it, so its install step is broken", pytrace=False)
    pytest.skip(message)


def require_tool(*names: str, install: str) -> str:
    """The path of the first of ``names`` found; skips the test (fails it under CI) if none."""
    path = find_tool(*names)
    if path is None:
        missing(f"{names[0]} is not installed ({install})")
    assert path is not None
    return path


def needs_tool(names: Iterable[str], *, install: str) -> pytest.MarkDecorator:
    """Mark a test (or ``pytestmark`` a module) as needing one of ``names``."""
    return pytest.mark.needs_tool(tuple(names), install=install)
