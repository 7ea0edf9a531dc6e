"""docs/configuration.md is the whole reference: every key of `global` (and the settings nested
in it), of `budgets` and the keys every source has is in its section, found by walking the
configuration models, so a new setting cannot land undocumented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from budget_exporter.config.schema import BudgetConfig, GlobalConfig
from budget_exporter.providers.base import SourceConfig
from tests.support.paths import ROOT

REFERENCE = (ROOT / "docs" / "configuration.md").read_text()


def section(title: str) -> str:
    """The text under the heading ``### `title``` up to the next heading."""
    match = re.search(rf"^### `{re.escape(title)}`\n(.*?)(?=^#{{2,3}} )", REFERENCE, re.M | re.S)
    assert match, f"docs/configuration.md has no section for `{title}`"
    return match.group(1)


def table_keys(text: str) -> set[str]:
    """Every backticked name in the first cell of the section's table rows."""
    keys: set[str] = set()
    for row in re.findall(r"^\| (.*?) \|", text, re.M):
        keys.update(re.findall(r"`([^`]+)`", row))
    return keys


def nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = nested_model(argument)
        if found is not None:
            return found
    return None


def settings(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(section, key) for every setting of ``model``: a nested model's keys are documented
    in a section of their own (``global.check``), or dotted in the parent's (``redis.url``)."""
    for name in model.model_fields:
        nested = nested_model(model.model_fields[name].annotation)
        if nested is None:
            yield prefix, name
        else:
            yield from settings(nested, f"{prefix}.{name}")


def row_of(title: str, key: str) -> str:
    """The table row of the section ``title`` whose first cell names ``key``; else ""."""
    for row in re.findall(r"^\| .*$", section(title), re.M):
        if f"`{key}`" in row.split(" | ")[0]:
            return row
    return ""


def documented(where: str, key: str) -> bool:
    """In the section of ``where``; dotted in the section of a parent (``redis.url``); or
    named in the row of its parent key (``limit_from``: ``{source, budget, thresholds}``)."""
    parts = where.split(".")
    for cut in range(len(parts), 0, -1):
        title = ".".join(parts[:cut])
        if not re.search(rf"^### `{re.escape(title)}`$", REFERENCE, re.M):
            continue
        if ".".join([*parts[cut:], key]) in table_keys(section(title)):
            return True
        if cut < len(parts) and re.search(rf"\b{key}\b", row_of(title, parts[cut])):
            return True
    return False


@pytest.mark.parametrize(
    ("model", "root"),
    [(GlobalConfig, "global"), (BudgetConfig, "budgets")],
    ids=["global", "budgets"],
)
def test_every_setting_is_in_the_reference(model: type[BaseModel], root: str) -> None:
    missing = [
        f"{where}.{key}" for where, key in settings(model, root) if not documented(where, key)
    ]
    assert missing == []


def test_every_key_each_source_has_is_in_the_sources_section() -> None:
    text = section("sources")
    assert [k for k in SourceConfig.model_fields if f"`{k}`" not in text] == []


def test_the_walk_finds_nested_and_misses_undocumented_keys() -> None:
    """The check is not vacuous: the nested holds settings are walked, and a key nobody
    documented is reported."""
    walked = set(settings(GlobalConfig, "global"))
    assert ("global.check", "max_data_age") in walked
    assert ("global.check.holds.redis", "url") in walked
    assert documented("global.check.holds.redis", "url")
    assert not documented("global.check", "no_such_setting")
    assert documented("budgets.limit_from", "thresholds")
    assert not documented("budgets.limit_from", "no_such_setting")
