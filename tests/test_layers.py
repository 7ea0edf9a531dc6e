"""The package's layers import downwards only (the module map in docs/development.md).

Every ``budget_exporter`` import is read from the source, including those inside functions and
under ``TYPE_CHECKING``: a lower layer importing a higher one fails here, naming both modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGE = ROOT / "exporter" / "budget_exporter"
LAYERS = (
    "core",
    "pricing",
    "providers",
    "config",
    "accounting",
    "exposition",
    "runtime",
    "web",
    "cli",
    "guard metering",  # the public face for applications
    "__main__",
)
"""Bottom to top. A module may import its own layer and every layer below it."""


def layer_of(module: str) -> int:
    """The rank of ``budget_exporter.<module>`` in :data:`LAYERS`; -1 for the package itself."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # ``budget_exporter`` itself: the version, importable from anywhere
    for rank, names in enumerate(LAYERS):
        if parts[1] in names.split():
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and the module map")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str | None = None) -> set[str]:
    """Every ``budget_exporter`` module ``path`` (module ``module``) imports, wherever the
    import statement is: at the top, inside a function, under ``TYPE_CHECKING``."""
    found: set[str] = set()
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "budget_exporter")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base.split(".")[0] != "budget_exporter":
                continue
            for alias in node.names:  # ``from budget_exporter.web import api`` imports web.api
                candidate = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py")
                found.add(candidate if is_module.exists() else base)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a higher layer."""
    return sorted(
        f"{importer} -> {target}"
        for importer, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(importer)
    )


def package_graph() -> dict[str, set[str]]:
    return {module_name(p): imported(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer() -> None:
    for module in package_graph():
        layer_of(module)


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports(package_graph()) == []


@pytest.mark.parametrize(
    ("importer", "target", "upward"),
    [
        ("budget_exporter.core.money", "budget_exporter.web.api", True),
        ("budget_exporter.providers.openai", "budget_exporter.config.loader", True),
        ("budget_exporter.accounting.budgets", "budget_exporter.runtime.engine", True),
        ("budget_exporter.web.api", "budget_exporter.accounting.budgets", False),
        ("budget_exporter.guard", "budget_exporter.pricing", False),
        ("budget_exporter.providers.demo", "budget_exporter", False),
    ],
)
def test_the_check_catches_an_upward_import(importer: str, target: str, upward: bool) -> None:
    """The check is not vacuous: a lower layer importing a higher one is reported."""
    assert bool(upward_imports({importer: {target}})) is upward


def test_imports_are_read_inside_functions_too(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "def late():\n    from budget_exporter.web import endpoints\n    return endpoints\n"
    )
    assert imported(source, "budget_exporter.core.mod") == {"budget_exporter.web.endpoints"}
    assert upward_imports(
        {"budget_exporter.core.mod": imported(source, "budget_exporter.core.mod")}
    )
