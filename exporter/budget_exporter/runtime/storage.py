"""The state kept under ``--storage.path``: each source's last good result, so that a
restart serves figures at once and polls no source before it falls due.

One JSON file, ``state.json``, written whole (temporary file, fsync, rename, fsync of the
directory), so a crash at any moment leaves the old file or the new one.  It holds no
secrets: each source is stored with a fingerprint (a hash of its settings) so that a
source whose settings changed does not reuse figures polled with the old ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from budget_exporter.accounting.holds import Entry
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.core.model import Period, PollResult, Window
from budget_exporter.providers.base import SourceConfig

log = logging.getLogger(__name__)

FORMAT = "budget-exporter-state"
VERSION = 1
FILE_NAME = "state.json"
_ABANDONED_SECONDS = 600.0
"""A temporary file untouched this long belongs to a write that was killed."""
MAX_BYTES = 256 * 1024 * 1024
"""The largest state file written or read (5,000 sources take a few megabytes)."""

_SCHEDULE_FIELDS = frozenset(
    {"poll_interval", "timeout", "max_series", "max_response_size", "max_data_age"}
)
"""Settings that change when a source is polled or how its figures are judged, not what
its figures are: changing them keeps the saved figures."""


_PRINTS: dict[int, tuple[weakref.ref[SourceConfig], str]] = {}
"""Fingerprints by source object while it lives (each save asks for every source's)."""


def fingerprint(source: SourceConfig) -> str:
    """A hash of the settings that decide ``source``'s figures (its account, its query).

    Secrets enter only through the hash, which is all that is stored.  A source's settings
    never change (the models are frozen): its hash is worked out once per object.
    """
    key = id(source)
    found = _PRINTS.get(key)
    if found is not None and found[0]() is source:
        return found[1]
    print_ = _fingerprint(source)

    def forget(ref: weakref.ref[SourceConfig]) -> None:  # the source is gone (a reload)
        if _PRINTS.get(key, (None, ""))[0] is ref:
            del _PRINTS[key]

    _PRINTS[key] = (weakref.ref(source, forget), print_)
    return print_


def _fingerprint(source: SourceConfig) -> str:
    settings = source.model_dump(mode="json", exclude=set(_SCHEDULE_FIELDS))
    settings["$type"] = type(source).__qualname__
    for name in source.secret_fields:  # their real values, not pydantic's mask
        value = getattr(source, name, None)
        getter = getattr(value, "get_secret_value", None)
        settings[name] = getter() if callable(getter) else value
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StorageError(Exception):
    """A state file that cannot be used (its message is one line)."""


# -- encoding ----------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):  # Period included
        return str(value)
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot store a {type(value).__name__}")


Decoder = Callable[[Any], Any]
"""Reads one JSON value back as a type; ValueError, TypeError or KeyError if it is not one."""

_DECODERS: dict[Any, Decoder] = {}


def _decode(tp: Any, value: Any) -> Any:
    """``value`` read back as a ``tp``; ValueError, TypeError or KeyError if it is not one."""
    return _decoder(tp)(value)


def _decoder(tp: Any) -> Decoder:
    """The decoder of ``tp``, worked out from its type hints once per type (a state file
    holds thousands of values of the same few types)."""
    found = _DECODERS.get(tp)
    if found is None:
        found = _DECODERS[tp] = _make_decoder(tp)
    return found


@functools.lru_cache(maxsize=4096)
def _amount(value: str) -> Decimal:
    # Decimals are immutable: equal amounts (and the times below) are shared.
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError("not a finite amount")
    return amount


@functools.lru_cache(maxsize=4096)
def _time(value: str) -> datetime:
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError("a time without its zone")
    return when


def _decode_amount(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise TypeError("expected an amount as a string")
    return _amount(value)


def _decode_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("expected a time as a string")
    return _time(value)


def _decode_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _decode_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected a boolean")
    return value


def _decode_float(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError("expected a number")
    return float(value)


def _decode_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    return value


_SCALARS: dict[Any, Decoder] = {
    Decimal: _decode_amount,
    datetime: _decode_time,
    Period: Period,
    str: _decode_str,
    bool: _decode_bool,
    float: _decode_float,
    int: _decode_int,
}


def _make_decoder(tp: Any) -> Decoder:
    scalar = _SCALARS.get(tp)
    if scalar is not None:
        return scalar
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        inner_decoder = _decoder(inner)
        optional = type(None) in typing.get_args(tp)

        def union(value: Any) -> Any:
            if value is None and optional:
                return None
            return inner_decoder(value)

        return union
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])

            def sequence(value: Any) -> tuple[Any, ...]:
                if not isinstance(value, list):
                    raise TypeError("expected a list")
                return tuple([item(v) for v in value])

            return sequence
        items = [_decoder(a) for a in args]

        def fixed(value: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise TypeError("expected a list")
            if len(items) != len(value):
                raise ValueError("wrong length")
            return tuple([d(v) for d, v in zip(items, value, strict=True)])

        return fixed
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    raise TypeError(f"cannot read a {tp!r}")


def _dataclass_decoder(cls: type) -> Decoder:
    hints = typing.get_type_hints(cls)
    # Filled in on first use: a field may be of the class being made (or of one that is).
    fields: dict[str, Decoder] = {}

    def dataclass_(value: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError("expected an object")
        if not fields:
            fields.update({f.name: _decoder(hints[f.name]) for f in dataclasses.fields(cls)})
        # Fields this version does not know are left out; a missing one is a TypeError.
        return cls(**{k: fields[k](v) for k, v in value.items() if k in fields})

    return dataclass_


@dataclasses.dataclass(frozen=True)
class Saved:
    """One source as saved: its last good result and when it was polled."""

    fingerprint: str
    provider: str
    result: PollResult
    windows: tuple[Window, ...]
    last_success: float
    recorded_at: float
    earlier: tuple[tuple[PollResult, tuple[Window, ...]], ...] = ()
    up: bool = True
    """Whether the source's last poll before the save succeeded (its error is not kept)."""
    last_attempt: float | None = None


def _saved_entry(state: SourceState, print_: str) -> dict[str, Any] | None:
    if state.result is None or state.last_success is None:
        return None
    return {
        "fingerprint": print_,
        "provider": state.provider,
        "result": _encode(state.result),
        "windows": _encode(state.windows),
        "last_success": state.last_success,
        "recorded_at": state.recorded_at or state.last_success,
        "earlier": [[_encode(r), _encode(w)] for r, w in state.earlier],
        "up": state.up,
        "last_attempt": state.last_attempt,
    }


_EARLIER = tuple[tuple[PollResult, tuple[Window, ...]], ...]


def _read_entry(entry: Any) -> Saved:
    if not isinstance(entry, dict):
        raise TypeError("expected an object")
    return Saved(
        fingerprint=_decode(str, entry["fingerprint"]),
        provider=_decode(str, entry["provider"]),
        result=_decode(PollResult, entry["result"]),
        windows=_decode(tuple[Window, ...], entry["windows"]),
        last_success=_decode(float, entry["last_success"]),
        recorded_at=_decode(float, entry["recorded_at"]),
        earlier=_decode(_EARLIER, entry.get("earlier", [])),
        up=_decode(bool, entry.get("up", True)),
        last_attempt=_decode(float | None, entry.get("last_attempt")),
    )


@dataclasses.dataclass(frozen=True)
class State:
    """What a state file holds: the saved sources, and the holds of the check API."""

    sources: dict[str, Saved] = dataclasses.field(default_factory=dict)
    holds: tuple[Entry, ...] = ()


def encode_states(
    states: Iterable[SourceState],
    prints: Mapping[str, str],
    written_at: float,
    holds: Iterable[Entry] = (),
    encoded: dict[str, tuple[SourceState, str, str]] | None = None,
) -> bytes:
    """The state file's content for ``states`` (those with a good result and a fingerprint)
    and the in-memory ``holds``.

    ``encoded``, kept by the caller between calls, holds each source's JSON by its state:
    a state is immutable, so one not replaced since (not polled) is not encoded again, and
    a save after a change of the holds alone costs little more than the write.
    """
    previous = dict(encoded) if encoded is not None else {}
    kept: dict[str, tuple[SourceState, str, str]] = {}
    parts: dict[str, str] = {}
    for state in states:
        print_ = prints.get(state.name)
        if print_ is None:
            continue
        cached = previous.get(state.name)
        if cached is not None and cached[0] is state and cached[1] == print_:
            text = cached[2]
        else:
            entry = _saved_entry(state, print_)
            if entry is None:
                continue
            text = json.dumps(entry, separators=(",", ":"))
        kept[state.name] = (state, print_, text)
        parts[state.name] = f"{json.dumps(state.name)}:{text}"
    if encoded is not None:  # sources no longer saved leave it
        encoded.clear()
        encoded.update(kept)
    head = json.dumps(
        {"format": FORMAT, "version": VERSION, "written_at": written_at}, separators=(",", ":")
    )
    holds_text = json.dumps([_encode(entry) for entry in holds], separators=(",", ":"))
    # What json.dumps(document, separators=(",", ":")) writes, with the sources' JSON reused.
    sources_text = "{" + ",".join(parts.values()) + "}"
    return f'{head[:-1]},"sources":{sources_text},"holds":{holds_text}}}'.encode()


def decode_states(data: bytes) -> State:
    """Read a state file's content; StorageError (one line) if it is not a usable one."""
    if not data.strip():
        raise StorageError("the file is empty")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StorageError(f"not valid JSON (truncated or corrupt?): {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StorageError("not a budget-exporter state file")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StorageError("no format version")
    if version > VERSION:
        raise StorageError(
            f"written by a newer budget-exporter (format {version}; this one reads {VERSION})"
        )
    if version < VERSION:
        raise StorageError(f"an old format ({version}; this one reads {VERSION})")
    sources = document.get("sources")
    if not isinstance(sources, dict):
        raise StorageError("no sources in it")
    saved: dict[str, Saved] = {}
    for name, entry in sources.items():
        try:
            saved[name] = _read_entry(entry)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise StorageError(f"source {name!r} is malformed ({type(exc).__name__})") from None
    try:
        holds = _decode(tuple[Entry, ...], document.get("holds", []))
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise StorageError(f"the holds are malformed ({type(exc).__name__})") from None
    return State(saved, holds)


# -- the file ----------------------------------------------------------------------


class Storage:
    """The state file in one directory: read once at start, rewritten after polls."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self._write_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._encoded: dict[str, tuple[SourceState, str, str]] = {}
        self._failing = False
        self.writes = 0

    def encode(
        self,
        states: Iterable[SourceState],
        prints: Mapping[str, str],
        written_at: float,
        holds: Iterable[Entry] = (),
    ) -> bytes:
        """:func:`encode_states`, reusing the JSON of the sources not polled since the last
        call (a save for the holds alone does not encode thousands of sources again)."""
        with self._encode_lock:
            return encode_states(states, prints, written_at, holds, self._encoded)

    def load(self) -> State:
        """The saved state; nothing (with one warning line) if the file is unusable."""
        try:
            size = self.path.stat().st_size
            if size > MAX_BYTES:
                raise StorageError(f"larger than {MAX_BYTES} bytes")
            data = self.path.read_bytes()
            return decode_states(data)
        except FileNotFoundError:
            log.info("storage: no saved state in %s yet; starting without it", self.directory)
        except StorageError as exc:
            log.warning("storage: ignoring %s: %s; starting without saved figures", self.path, exc)
        except OSError as exc:
            log.warning(
                "storage: cannot read %s: %s; starting without saved figures",
                self.path,
                exc.strerror or exc,
            )
        return State()

    def check_writable(self) -> None:
        """Warn (one line) at start if the directory cannot take the state file; remove
        the temporary files of writes killed long ago."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied")
        except OSError as exc:
            self._fail(exc)
            return
        cutoff = time.time() - _ABANDONED_SECONDS
        for leftover in self.directory.glob(f".{FILE_NAME}.*.tmp"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    def save(self, data: bytes) -> bool:
        """Replace the state file with ``data``, atomically. False (one line logged until
        a save works again) on an error: the exporter keeps serving."""
        if len(data) > MAX_BYTES:
            return self._fail(OSError(errno.EFBIG, f"state larger than {MAX_BYTES} bytes"))
        with self._write_lock:
            # Its own name: replicas sharing a ReadWriteMany volume never write into one file.
            temporary = self.directory / f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            try:
                self._write(temporary, data)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    temporary.unlink(missing_ok=True)
                return self._fail(exc)
            self.writes += 1
            if self._failing:
                self._failing = False
                log.info("storage: saving state to %s again", self.path)
            return True

    def _write(self, temporary: Path, data: bytes) -> None:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _fail(self, exc: OSError) -> bool:
        if not self._failing:
            self._failing = True
            log.warning(
                "storage: cannot save state in %s: %s; still serving, but a restart will "
                "not find the latest figures",
                self.directory,
                exc.strerror or exc,
            )
        return False
