"""Provider registry: the built-in providers, imported on first use, and the
``budget_exporter.providers`` entry-point group for providers of other packages.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from importlib.metadata import entry_points

from budget_exporter.providers.base import Provider

_REGISTRY: dict[str, type[Provider]] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


class UnknownProviderError(LookupError):
    pass


class BrokenProviderError(LookupError):
    """An entry point that does not load a provider registered under its own name."""


def get_provider(name: str) -> type[Provider]:
    """The provider class registered as ``name``, importing its module on first use."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if _NAME.match(name):
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the provider exists but its SDK is missing
        else:
            if name in _REGISTRY:
                return _REGISTRY[name]
        for entry in entry_points(group="budget_exporter.providers", name=name):
            return _load_entry_point(name, entry.value, entry.load)
    raise UnknownProviderError(name)


def _load_entry_point(name: str, target: str, load: Callable[[], object]) -> type[Provider]:
    """The provider class the entry point ``name = target`` loads, registered under ``name``."""
    where = f"entry point {name} = {target} (group budget_exporter.providers)"
    try:
        cls = load()
    except Exception as exc:  # any error of a third-party module: one line, no traceback
        raise BrokenProviderError(
            f"{where} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise BrokenProviderError(f"{where} is not a Provider subclass")
    if cls.name != name:
        raise BrokenProviderError(
            f"{where} loads a provider named {cls.name!r}: the entry point's name and the "
            "class's name must be the same"
        )
    return register(cls)


def builtin_names() -> list[str]:
    """Names of the providers shipped in this package, for error messages."""
    from importlib.resources import files

    return sorted(
        p.name.removesuffix(".py")
        for p in files(__name__).iterdir()
        if p.name.endswith(".py") and not p.name.startswith("_") and p.name != "base.py"
    )
