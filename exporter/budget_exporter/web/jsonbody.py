"""Reading a JSON request body strictly: small, UTF-8, one value per key (a key given twice
is refused, naming it; see docs/security.md#the-http-front).
"""

from __future__ import annotations

import json
from typing import Any

MAX_BYTES = 16 * 1024
"""The largest body the JSON API reads: a valid request (a check with its spend
descriptions and holds) takes a few kilobytes at most."""


class BodyError(ValueError):
    """A body refused with ``status`` (400 or 413) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BodyError(400, f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def read_json(body: bytes, max_bytes: int | None = None) -> Any:
    """The JSON value of ``body`` (an empty body is ``None``); :class:`BodyError` if it
    is larger than ``max_bytes``, not UTF-8 JSON, or repeats a key within an object."""
    if max_bytes is not None and len(body) > max_bytes:
        raise BodyError(413, f"the body is larger than {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(400, "the body is not JSON") from None
    if not text:
        return None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError:
        raise BodyError(400, "the body is not JSON") from None
    except BodyError:
        raise
    except (ValueError, RecursionError):  # an integer of thousands of digits, deep nesting
        raise BodyError(
            400, "the body is not JSON this API reads (a number too long or nesting too deep)"
        ) from None
