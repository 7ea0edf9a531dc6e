"""The snapshot's exposition, pre-rendered in both formats (plain and gzipped), and the
per-scrape choice of one, with the ``process_*`` metrics appended.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest as generate_text
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_EOF = b"# EOF\n"
_GZIP = 31  # zlib window bits for a gzip header and trailer
_LEVEL = 6


def _escape_value(value: str) -> str:
    """A label value with ``\\``, newline and ``"`` escaped (the same in both formats)."""
    if "\\" in value or "\n" in value or '"' in value:
        value = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _escape_help(doc: str, openmetrics: bool) -> str:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return doc.replace('"', r"\"") if openmetrics else doc


def write_families(families: Iterable[Metric], *, openmetrics: bool) -> bytes:
    """Gauge and counter families in the text format or OpenMetrics (without ``# EOF``)."""
    return write_both(families, text=not openmetrics, openmetrics=openmetrics)[
        1 if openmetrics else 0
    ]


def write_both(
    families: Iterable[Metric], *, text: bool = True, openmetrics: bool = True
) -> tuple[bytes, bytes]:
    """The families in the text format and in OpenMetrics (without ``# EOF``).

    Sample lines are the same in both formats, so each is formatted once; only
    the ``HELP`` and ``TYPE`` lines differ.  Other metric types, timestamps and
    exemplars are rendered by ``prometheus_client`` itself (this exporter has
    none of them).
    """
    plain: list[str] = []
    om: list[str] = []
    formatted = _Formatted()
    for metric in families:
        simple = metric.type in ("gauge", "counter") and not getattr(metric, "unit", "")
        if not simple or any(s.timestamp is not None or s.exemplar for s in metric.samples):
            if text:
                plain.append(_library_render(metric, openmetrics=False))
            if openmetrics:
                om.append(_library_render(metric, openmetrics=True))
            continue
        name, doc = metric.name, metric.documentation
        if text:
            shown = name + "_total" if metric.type == "counter" else name
            plain.append(f"# HELP {shown} {_escape_help(doc, False)}\n")
            plain.append(f"# TYPE {shown} {metric.type}\n")
        if openmetrics:
            om.append(f"# HELP {name} {_escape_help(doc, True)}\n# TYPE {name} {metric.type}\n")
        samples = _sample_lines(metric, formatted)
        if text:
            plain.append(samples)
        if openmetrics:
            om.append(samples)
    return "".join(plain).encode("utf-8"), "".join(om).encode("utf-8")


class _Formatted:
    """What one rendering has formatted already: values, and label sets by their names.

    A snapshot repeats itself: every budget's labels appear on some twenty families, and
    thresholds, limits and period bounds take few distinct values.
    """

    def __init__(self) -> None:
        self.values: dict[float, str] = {}
        self.labels: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}


def _sample_lines(metric: Metric, formatted: _Formatted) -> str:
    out: list[str] = []
    keys: tuple[str, ...] | None = None
    order: list[str] = []
    values = formatted.values
    pairs_of: dict[tuple[str, ...], str] = {}
    for sample in metric.samples:
        value = sample.value
        # Not zero: 0.0 and -0.0 are equal keys, and Go writes them differently.
        number = values.get(value) if value else None
        if number is None:
            number = floatToGoString(value)
            if value:
                values[value] = number
        labels = sample.labels
        if labels:
            if tuple(labels) != keys:
                keys = tuple(labels)
                order = sorted(keys)
                pairs_of = formatted.labels.setdefault(keys, {})
            key = tuple(labels.values())
            pairs = pairs_of.get(key)
            if pairs is None:
                pairs = ",".join([f'{k}="{_escape_value(labels[k])}"' for k in order])
                pairs_of[key] = pairs
            out.append(f"{sample.name}{{{pairs}}} {number}\n")
        else:
            out.append(f"{sample.name} {number}\n")
    return "".join(out)


class _One:
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> list[Metric]:
        return [self._metric]


def _library_render(metric: Metric, openmetrics: bool) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_One(metric))  # type: ignore[arg-type]
    if openmetrics:
        return generate_openmetrics(registry).decode("utf-8").removesuffix("# EOF\n")
    return generate_text(registry).decode("utf-8")


class _ProcessMetrics:
    """``process_*`` metrics of this process, rendered fresh for each scrape."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._collector = ProcessCollector(registry=self._registry)

    def render(self, openmetrics: bool) -> bytes:
        return write_families(self._collector.collect(), openmetrics=openmetrics)


PROCESS = _ProcessMetrics()


@dataclass(frozen=True)
class _Format:
    """One format's cached bytes and the gzip stream state right after them."""

    body: bytes
    content_type: str
    trailer: bytes  # appended after the per-scrape part (``# EOF`` for OpenMetrics)
    openmetrics: bool
    _gzip_head: bytes = field(repr=False, default=b"")
    _gzip_state: object = field(repr=False, default=None)
    _lock: threading.Lock = field(repr=False, default_factory=threading.Lock)

    @classmethod
    def of(cls, body: bytes, content_type: str, trailer: bytes, openmetrics: bool) -> _Format:
        compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP)
        head = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return cls(body, content_type, trailer, openmetrics, head, compressor)

    def plain(self, extra: bytes) -> tuple[bytes, ...]:
        """The cached body itself (shared, never copied per scrape), then the rest."""
        return (self.body, extra + self.trailer)

    def gzipped(self, extra: bytes) -> tuple[bytes, ...]:
        with self._lock:  # copying a compressor is not safe from several threads at once
            compressor = self._gzip_state.copy()  # type: ignore[attr-defined]
        return (self._gzip_head, compressor.compress(extra + self.trailer) + compressor.flush())


@dataclass(frozen=True)
class Rendered:
    """The exposition of one snapshot, in both formats, ready for any scrape."""

    text: bytes
    """The Prometheus text format of the snapshot's own families (no ``process_*``)."""
    openmetrics: bytes
    """The same in OpenMetrics, without the closing ``# EOF``."""
    _text: _Format = field(repr=False)
    _openmetrics: _Format = field(repr=False)
    live: Callable[[bool], bytes] | None = field(default=None, repr=False, compare=False)
    """Families rendered at each scrape (``live(openmetrics)``), such as the held amounts."""

    @classmethod
    def of(cls, families: list[Metric], live: Callable[[bool], bytes] | None = None) -> Rendered:
        text, openmetrics = write_both(families)
        return cls(
            text,
            openmetrics,
            _Format.of(text, CONTENT_TYPE_TEXT, b"", False),
            _Format.of(openmetrics, CONTENT_TYPE_OPENMETRICS, _EOF, True),
            live,
        )

    @property
    def gzipped(self) -> bytes:
        """:attr:`text`, gzipped."""
        return b"".join(self._text.gzipped(b""))

    def select(
        self, accept: str | None, accept_encoding: str | None, *, process: bool = True
    ) -> tuple[bytes, str, str | None]:
        """:meth:`select_parts`, with the body's parts joined."""
        parts, content_type, encoding = self.select_parts(accept, accept_encoding, process=process)
        return b"".join(parts), content_type, encoding

    def select_parts(
        self, accept: str | None, accept_encoding: str | None, *, process: bool = True
    ) -> tuple[tuple[bytes, ...], str, str | None]:
        """``(body parts, content type, content encoding or None)`` for a scrape's headers.
        The first part is the snapshot's cached bytes, shared by every scrape (a
        server writes the parts one after the other, without joining them).

        OpenMetrics when ``Accept`` prefers ``application/openmetrics-text``
        (version 1.0.0 or unversioned), else the text format; gzip when
        ``Accept-Encoding`` allows it.  The ``process_*`` metrics and the ``live``
        families of the moment are appended unless ``process`` is False.
        """
        chosen = self._openmetrics if wants_openmetrics(accept) else self._text
        extra = PROCESS.render(chosen.openmetrics) if process else b""
        if process and self.live is not None:
            extra = self.live(chosen.openmetrics) + extra
        if gzip_accepted(accept_encoding):
            return chosen.gzipped(extra), chosen.content_type, "gzip"
        return chosen.plain(extra), chosen.content_type, None


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def _version(params: list[str]) -> str:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "version":
            return value.strip()
    return ""


def wants_openmetrics(accept: str | None) -> bool:
    """Whether ``Accept`` prefers OpenMetrics 1.0.0 to the text format.

    As ``prometheus_client`` chooses, plus quality values: among the media
    types this exporter serves (``application/openmetrics-text`` unversioned or
    version 1.x, ``text/plain``, ``*/*``), the one with the highest ``q`` wins,
    the earlier one on a tie.
    """
    best, best_q = "text", 0.0
    for entry in (accept or "").split(","):
        media, *params = entry.split(";")
        media = media.strip().lower()
        q = _quality(params)
        if media == "application/openmetrics-text":
            version = _version(params)
            kind = "openmetrics" if not version or version.split(".")[0] == "1" else ""
        elif media in ("text/plain", "text/*", "*/*"):
            kind = "text"
        else:
            kind = ""
        if kind and q > best_q:
            best, best_q = kind, q
    return best == "openmetrics"


def gzip_accepted(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (not with ``q=0``)."""
    for entry in (accept_encoding or "").split(","):
        coding, *params = entry.split(";")
        if coding.strip().lower() == "gzip" and _quality(params) > 0:
            return True
    return False
