"""Short, single-line text for error messages, logs and pages."""

from __future__ import annotations

MAX_MESSAGE = 300
"""How long a quoted explanation (an SDK's error, an API's answer) may be."""


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str) -> str:
    """``text`` with every run of white space, line breaks included, as one space."""
    return " ".join(text.split())


def first_line(text: str) -> str:
    """The first line of ``text`` once stripped, or ``""``."""
    return text.strip().splitlines()[0] if text.strip() else ""


def excerpt(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line and at most ``limit`` characters long."""
    return shorten(one_line(text), limit)
