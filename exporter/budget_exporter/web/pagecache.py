"""Pages rendered once and served many times: the landing page and ``/api/v1/budgets``.

A :class:`Page` holds its bytes, the same bytes gzipped and a weak ``ETag``; it answers a
request with the shared bytes (never copied per request), gzip when ``Accept-Encoding``
allows it, or ``304 Not Modified`` when ``If-None-Match`` names its ``ETag``.

A :class:`PageCache` keeps the pages of one *epoch*: a snapshot, plus whatever else a page
shows that changes between snapshots (the held amounts, the moment a source turns stale or
a budget's period ends).  A new epoch drops the old pages.  Rendering happens under the
cache's lock, so requests arriving together for a new epoch wait for one rendering instead
of each doing it.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from budget_exporter.exposition.rendering import gzip_accepted
from budget_exporter.web.routes import Request, Response

_GZIP = 31  # zlib window bits for a gzip header and trailer
_LEVEL = 6
MAX_VARIANTS = 32
"""Variants (filters, refresh intervals) kept per epoch; beyond, a variant is rendered for
its request."""
MAX_BYTES = 32 * 1024 * 1024
"""Bytes (plain and gzipped) kept per epoch: variants asked for with many query strings
cannot make the cache grow without end."""


@dataclass(frozen=True)
class Page:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str
    cache_control: str = "no-cache"

    @classmethod
    def of(cls, body: bytes, content_type: str, cache_control: str = "no-cache") -> Page:
        compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP)
        gzipped = compressor.compress(body) + compressor.flush()
        # Weak: the plain and the gzipped bytes are the same page.
        etag = 'W/"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        return cls(body, gzipped, etag, content_type, cache_control)

    def response(self, request: Request, status: int = 200) -> Response:
        """The answer to ``request``: 304, gzip or plain."""
        headers = {
            "ETag": self.etag,
            "Vary": "Accept-Encoding",
            "Cache-Control": self.cache_control,
        }
        if status == 200 and etag_matches(request.headers.get("If-None-Match"), self.etag):
            return Response(304, b"", self.content_type, headers)
        if gzip_accepted(request.headers.get("Accept-Encoding")):
            headers["Content-Encoding"] = "gzip"
            return Response(status, self.gzipped, self.content_type, headers)
        return Response(status, self.body, self.content_type, headers)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


class PageCache:
    """The pages of the current epoch, by variant."""

    def __init__(self, max_variants: int = MAX_VARIANTS, max_bytes: int = MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._max = max_variants
        self._max_bytes = max_bytes
        self._bytes = 0
        self._snapshot: object = None
        self._key: Hashable = None
        self._until = float("-inf")
        self._since = float("inf")
        self._pages: dict[Hashable, Page] = {}

    def get(
        self,
        snapshot: object,
        key: Hashable,
        now: float,
        variant: Hashable,
        render: Callable[[], tuple[Page, float]],
    ) -> Page:
        """The page of ``variant`` for ``snapshot`` and ``key`` at ``now``.

        ``render`` returns the page and the instant until which it stays true (its figures
        being those of the snapshot, what changes with time: a source turning stale, a
        period ending); from then on, or should the clock go back, it is rendered again.
        """
        with self._lock:
            current = (
                self._snapshot is snapshot and self._key == key and self._since <= now < self._until
            )
            if not current:
                self._snapshot, self._key = snapshot, key
                self._since, self._until = now, float("inf")
                self._pages = {}
                self._bytes = 0
            page = self._pages.get(variant)
            if page is not None:
                return page
            page, until = render()
            self._until = min(self._until, until)
            size = len(page.body) + len(page.gzipped)
            if len(self._pages) < self._max and self._bytes + size <= self._max_bytes:
                self._pages[variant] = page
                self._bytes += size
            return page
