"""Logging in logfmt or JSON, with secrets scrubbed from every record."""

from __future__ import annotations

import json
import logging
import sys
import time

from budget_exporter.core.redaction import redactor

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}


def _fields(record: logging.LogRecord) -> dict[str, str]:
    message = record.getMessage()
    if record.exc_info:
        message = f"{message}: {logging.Formatter().formatException(record.exc_info)}"
    return {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": _LEVEL_NAMES.get(record.levelno, "error"),
        "logger": record.name,
        "msg": redactor(message),
    }


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False)


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\n\t\\'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # Library loggers (urllib3, botocore) log URLs with query strings at debug:
    # keep them at warning unless asked, and they still pass the redactor.
    for noisy in ("urllib3", "botocore", "boto3", "google", "azure"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.WARNING))
    # urllib3 warns of every retry with its internal classes in the text; the poll's own
    # error line says what failed, once. At debug level they are shown.
    if LEVELS[level] > logging.DEBUG:
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
