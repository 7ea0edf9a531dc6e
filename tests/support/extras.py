"""Tests that need a provider extra (``aws``, ``gcp``, ``azure``) skip when it is missing.

With only ``pip install -e '.[test]'`` the provider SDKs are absent; a test that
needs one is skipped with a one-line reason naming the extra, instead of failing.
Which packages make up an extra is read from the installed project's metadata
(``pyproject.toml``'s optional dependencies), so the list lives in one place.

* ``@pytest.mark.extra("gcp")`` on a test (or ``pytestmark`` on a module): the
  hook in ``tests/conftest.py`` skips it when the extra is not installed.
* ``skip_unless_installed_for(providers)`` inside a test whose providers are
  only known at run time (an example file, a rendered Helm chart).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from importlib import metadata

import pytest

PROVIDER_EXTRAS = ("aws", "gcp", "azure")
"""Extras that bring a provider's SDK; providers of extra ``x`` are named ``x_…``."""

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;\s*(.*)$")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


@functools.cache
def extra_packages(extra: str) -> tuple[str, ...]:
    """The distributions the project's ``extra`` requires (empty if not installed)."""
    try:
        requirements = metadata.requires("budget-exporter") or []
    except metadata.PackageNotFoundError:
        return ()
    packages = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match and extra in _EXTRA_MARKER.findall(match.group(2)):
            packages.append(match.group(1))
    return tuple(packages)


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


@functools.cache
def extra_installed(extra: str) -> bool:
    if extra not in PROVIDER_EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(PROVIDER_EXTRAS)}")
    return all(_installed(package) for package in extra_packages(extra))


def skip_reason(extra: str) -> str:
    return f"needs the {extra} extra: pip install -e '.[{extra}]'"


def extras_for(providers: Iterable[str]) -> list[str]:
    """The extras the named providers need, in a stable order."""
    prefixes = {provider.split("_", 1)[0] for provider in providers}
    return [extra for extra in PROVIDER_EXTRAS if extra in prefixes]


def skip_unless_installed_for(providers: Iterable[str]) -> None:
    """Skip the running test if one of ``providers`` needs an extra that is missing."""
    for extra in extras_for(providers):
        if not extra_installed(extra):
            pytest.skip(skip_reason(extra))


def providers_in(config_text: str) -> list[str]:
    """The provider names a YAML configuration mentions (``provider: name``)."""
    return re.findall(r"\bprovider:\s*['\"]?([a-z][a-z0-9_]*)", config_text)
