"""Keep secrets out of logs, error messages and pages: registered secret values and URL
credentials are masked.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "<redacted>"
_MIN_SECRET_LENGTH = 4
_URL = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]*@)?(?P<rest>[^\s'\"<>]*)"
)
_QUERY_VALUE = re.compile(r"([?&;][^=&#\s]+=)[^&#\s'\"<>)]*")
_PATH_QUERY = re.compile(r"(?<![\w:/])(/[^\s?'\"<>]*\?[^\s'\"<>)]+)")


class Redactor:
    """A thread-safe set of secret strings to scrub from text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self._base: set[str] = set()
        self._owned: dict[str, frozenset[str]] = {}

    def replace_secrets(self, secrets: set[str]) -> None:
        """Use exactly ``secrets`` from now on (called on every config load)."""
        keep = {form for s in secrets for form in _written_forms(s)}
        with self._lock:
            self._base = keep
            self._owned = {}
            self._update()

    def add(self, secret: str) -> None:
        forms = _written_forms(secret)
        if forms:
            with self._lock:
                self._base |= forms
                self._update()

    def set_owned(self, owner: str, secrets: set[str]) -> None:
        """Scrub ``secrets`` too, replacing what ``owner`` set before: a source that
        re-reads a rotating credential registers the current one, and a rotated-out
        value that no longer occurs does not pile up."""
        keep = frozenset(form for s in secrets for form in _written_forms(s))
        with self._lock:
            if self._owned.get(owner) != keep:
                self._owned[owner] = keep
                self._update()

    def _update(self) -> None:
        every = self._base.union(*self._owned.values())
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = tuple(sorted(every, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return redact_urls(text)


def basic_auth_forms(user: str, password: str) -> set[str]:
    """The forms ``user:password`` travels in as HTTP basic auth (base64, of its Latin-1
    bytes as ``requests`` sends it, and of its UTF-8 bytes): register them with the
    password, so that an upstream quoting the ``Authorization`` header back is masked
    too (the password is one decode away)."""
    pair = f"{user}:{password}"
    forms = {base64.b64encode(pair.encode("utf-8")).decode("ascii")}
    with contextlib.suppress(UnicodeEncodeError):
        forms.add(base64.b64encode(pair.encode("latin-1")).decode("ascii"))
    return forms


def _written_forms(secret: str) -> set[str]:
    """``secret`` as it is, and as error messages quote it: repr() or escaped (requests'
    InvalidHeader shows a value with a line break in it as ``'...\\n'``)."""
    if not secret or len(secret) < _MIN_SECRET_LENGTH:
        return set()
    return {
        secret,
        repr(secret)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),  # percent-encoded, as in a query string or a form
        quote_plus(secret, safe=""),
    }


def redact_urls(text: str) -> str:
    """Mask user-info and every query-string value of URLs found in ``text``."""

    def scrub(match: re.Match[str]) -> str:
        userinfo = f"{MASK}@" if match.group("userinfo") else ""
        rest = _QUERY_VALUE.sub(lambda m: m.group(1) + MASK, match.group("rest"))
        return match.group("scheme") + userinfo + rest

    text = _URL.sub(scrub, text)
    # bare paths with a query string, as in urllib3's "Max retries exceeded with url: /x?key=..."
    return _PATH_QUERY.sub(
        lambda m: _QUERY_VALUE.sub(lambda q: q.group(1) + MASK, m.group(1)), text
    )


redactor = Redactor()
"""The process-wide redactor used by logging, errors and pages."""
