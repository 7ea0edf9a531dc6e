"""Tools the tests run (promtool, actionlint, hadolint, ...): found, or the test skips or fails.

Outside CI a missing tool skips the test with the way to install it. With ``CI`` set the same
test fails: CI installs every tool, so a missing one is a broken install step, and a suite that
quietly skipped it would pass for the wrong reason.
"""

from __future__ import annotations

import os
import shutil
import sysconfig

import pytest


def find_tool(name: str) -> str | None:
    """``name`` from the running environment's scripts (a virtualenv's ``bin``) or the PATH."""
    return shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)


def require_tool(name: str, install: str) -> str:
    """The path of ``name``; skips the test (fails it under CI) when it is missing."""
    path = find_tool(name)
    if path is None:
        message = f"{name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it", pytrace=False)
        pytest.skip(message)
    return path
