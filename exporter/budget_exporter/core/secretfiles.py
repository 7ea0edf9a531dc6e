"""Read a credential from a ``<field>_file``, at config load and, for providers that re-read
it, at every poll.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PUBLIC_HEADERS = frozenset({"accept", "content-type", "user-agent", "accept-encoding"})
"""Header names whose values are not secret, even in a secret file."""


class SecretFileError(Exception):
    """The file cannot be read or holds no usable value; the message names no secret."""


def read_secret_file(
    path: str | Path, mapping: bool = False, shown: str | None = None
) -> str | dict[str, Any]:
    """The credential in ``path``: a string, or a mapping when ``mapping``; errors name
    the file as ``shown`` (default: ``path``)."""
    name = str(path) if shown is None else shown
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretFileError(f"cannot read {name}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"cannot read {name}: not UTF-8 text") from None
    if not mapping:
        return content.strip()
    try:
        value = yaml.safe_load(content)
    except yaml.YAMLError:
        raise SecretFileError(f"{name} is not a YAML mapping") from None
    if not isinstance(value, dict):
        raise SecretFileError(f"{name} is not a YAML mapping")
    return value


def secrets_of(value: str | dict[str, Any]) -> set[str]:
    """The values in a secret file's content to scrub from logs, errors and pages:
    everything, but for plainly public headers."""
    if isinstance(value, str):
        return {value}
    return {str(v) for k, v in value.items() if str(k).lower() not in PUBLIC_HEADERS}
