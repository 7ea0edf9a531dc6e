"""Provider answers kept as JSON files: ``tests/providers/<provider>/fixtures/<name>.json``.

Each file is one answer as the provider's API reference documents it (field names,
nesting, amounts as strings or numbers as the API sends them, pagination fields), dated
for the test clock of that provider's tests.  The files are written from the documented
shapes with made-up figures and test identifiers; none was captured from a real account,
and none holds a secret.  A test loads a fresh copy with
:func:`load_fixture`; a test that needs a variant (a broken field, another month, other
budgets) derives it in code from a loaded document, where the reader sees the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROVIDERS = Path(__file__).resolve().parent.parent / "providers"


def fixture_path(provider: str, name: str) -> Path:
    """Where the recorded answer ``name`` of ``provider`` lives."""
    return PROVIDERS / provider / "fixtures" / f"{name}.json"


def load_fixture(
    provider: str, name: str, *, parse_float: Callable[[str], Any] | None = None
) -> Any:
    """The recorded answer ``name`` of ``provider``, parsed afresh (a test may change it).

    ``parse_float`` is handed to :func:`json.loads` (``Decimal`` reads numbers the way a
    provider that parses its answers exactly does)."""
    path = fixture_path(provider, name)
    return json.loads(path.read_text(encoding="utf-8"), parse_float=parse_float)


def _unix(value: int, by: timedelta) -> int:
    return value + int(by.total_seconds())


def _rfc3339(value: str, by: timedelta) -> str:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) + by
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


TIME_FIELDS: dict[str, Callable[[Any, timedelta], Any]] = {
    "start_time": _unix,  # OpenAI buckets: Unix seconds
    "end_time": _unix,
    "starting_at": _rfc3339,  # Anthropic buckets: RFC 3339, UTC
    "ending_at": _rfc3339,
}
"""The bucket bounds :func:`shifted` moves, and how each is written."""


def shifted(document: Any, by: timedelta) -> Any:
    """``document`` with every bucket bound in :data:`TIME_FIELDS` moved ``by`` (for a test
    whose clock is not the fixture's: the exporter run as a process uses the real time)."""
    if isinstance(document, list):
        return [shifted(item, by) for item in document]
    if isinstance(document, dict):
        return {
            key: TIME_FIELDS[key](value, by)
            if key in TIME_FIELDS and value is not None
            else shifted(value, by)
            for key, value in document.items()
        }
    return document
