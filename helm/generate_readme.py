#!/usr/bin/env python3
"""Write the chart's README.md from README.template.md and the `# --` comments of values.yaml.

A comment starting with ``# --`` documents the key on the line below it (the
helm-docs convention); the ``#`` lines after it continue the text. Inside it,
``# @default -- text`` replaces the default shown, and a leading ``(type)``
replaces the type read from the value::

    # -- Image tag.
    # @default -- the chart's appVersion
    tag: ""

Keys without such a comment are not listed (a documented parent covers its
children).

    python helm/generate_readme.py           # rewrite helm/budget-exporter/README.md
    python helm/generate_readme.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HELM = Path(__file__).resolve().parent
CHART = HELM / "budget-exporter"
TEMPLATE = HELM / "README.template.md"
README = CHART / "README.md"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_DOC = re.compile(r"^# -- ?(?P<text>.*)$")
_DEFAULT = re.compile(r"^# @default -- ?(?P<text>.*)$")
_TYPE = re.compile(r"^\((?P<type>[a-z/]+)\)\s*")


@dataclass
class Entry:
    key: str
    description: str
    default: str | None  # the @default text, else None: the value itself
    type: str | None  # the (type) given in the comment, else None: read from the value


class _Pending:
    def __init__(self, first: str) -> None:
        self.lines = [first]
        self.default: str | None = None


def parse(text: str) -> list[Entry]:
    """The documented keys of a values file, in file order, with dotted paths."""
    entries: list[Entry] = []
    stack: list[tuple[int, str]] = []
    pending: _Pending | None = None
    list_indent: int | None = None  # set while inside a list's items
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            pending = None
            continue
        if line.startswith("#"):
            if (doc := _DOC.match(line)) is not None:
                pending = _Pending(doc["text"])
            elif pending is not None and (default := _DEFAULT.match(line)) is not None:
                pending.default = default["text"].strip()
            elif pending is not None:
                pending.lines.append(line.removeprefix("#").strip())
            continue
        match = _KEY.match(raw)
        indent = len(raw) - len(raw.lstrip(" "))
        if match is None:  # a list item: it and its contents are never documented keys
            if line.startswith("- ") or line == "-":
                list_indent = indent if list_indent is None else min(list_indent, indent)
            pending = None
            continue
        if list_indent is not None:
            if indent > list_indent:
                pending = None
                continue
            list_indent = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            description = " ".join(part for part in pending.lines if part)
            declared = _TYPE.match(description)
            entries.append(
                Entry(
                    key=".".join(key for _, key in stack),
                    description=description[declared.end() :] if declared else description,
                    default=pending.default,
                    type=declared["type"] if declared else None,
                )
            )
        pending = None
    return entries


def lookup(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node[part]
    return node


def type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for entry in parse(values_text):
        value = lookup(values, entry.key)
        if entry.default is not None:
            default = cell(entry.default)
        else:
            default = "`" + cell(json.dumps(value, separators=(",", ":"))) + "`"
        kind = entry.type or type_of(value)
        rows.append(f"| `{entry.key}` | {kind} | {default} | {cell(entry.description)} |")
    return "\n".join(rows) + "\n"


def readme() -> str:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    text = TEMPLATE.read_text()
    for name, value in {
        "name": meta["name"],
        "version": meta["version"],
        "app_version": meta["appVersion"],
        "kube_version": meta["kubeVersion"],
        "description": " ".join(meta["description"].split()),
        "values_table": table((CHART / "values.yaml").read_text()),
    }.items():
        text = text.replace("{{ " + name + " }}", value)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    args = parser.parse_args(argv)
    wanted = readme()
    if args.check:
        if not README.is_file() or README.read_text() != wanted:
            print(
                f"{README.relative_to(HELM.parent)} is out of date (run python helm/generate_readme.py)",
                file=sys.stderr,
            )
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
