"""Optional extras (``aws``, ``gcp``, ``azure``): is a provider's SDK installed, and if not, why.

A configuration is checked with :func:`missing` (finds modules, imports none);
a poll calls :func:`require` before its first SDK import.  Both name the extra
to install in the same words.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from typing import Any

from budget_exporter.core.errors import SourceError

DISTRIBUTIONS = {
    "boto3": "boto3",
    "azure.identity": "azure-identity",
    "azure.core.exceptions": "azure-core",
    "google.auth": "google-auth",
    "google.api_core": "google-api-core",
    "google.cloud.bigquery": "google-cloud-bigquery",
    "google.cloud.billing_v1": "google-cloud-billing",
    "google.cloud.billing.budgets_v1": "google-cloud-billing-budgets",
}
"""Module -> the PyPI package of the extra that brings it (``pyproject.toml`` lists them)."""


def hint(extra: str) -> str:
    """``install the gcp extra: pip install 'budget-exporter[gcp]'``."""
    return f"install the {extra} extra: pip install 'budget-exporter[{extra}]'"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported; nothing is imported to find out.

    ``importlib.util.find_spec`` imports the parents of a dotted name (for
    ``google.cloud.billing.budgets_v1`` the whole Cloud Billing client), so
    only a top-level name goes through it; each further level is looked up
    in its parent's directories.  ``None`` in ``sys.modules`` (an import
    blocked on purpose) counts as missing.
    """
    return _spec(module) is not None


def _spec(name: str) -> Any:
    if name in sys.modules:
        module = sys.modules[name]
        return None if module is None else getattr(module, "__spec__", None) or module
    parent, _, child = name.rpartition(".")
    if not parent:
        try:
            return importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
    spec = _spec(parent)
    locations = getattr(spec, "submodule_search_locations", None) or getattr(spec, "__path__", None)
    if locations is None:
        return None
    return importlib.machinery.PathFinder.find_spec(child, list(locations))


def missing(provider: str, extra: str, *modules: str) -> str | None:
    """Why ``provider`` cannot run here (one of ``modules`` is not installed), or None."""
    for module in modules:
        if not installed(module):
            return f"provider {provider} needs {DISTRIBUTIONS.get(module, module)}: {hint(extra)}"
    return None


def require(provider: str, extra: str, *modules: str) -> None:
    """Import ``modules``, or fail the poll naming the extra.

    The configuration check (:func:`missing`) normally catches a missing extra;
    this covers an installation broken after the configuration was loaded.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            package = DISTRIBUTIONS.get(module, module)
            raise SourceError(
                f"provider {provider} needs {package}, which cannot be imported: {hint(extra)}"
            ) from None
