"""Structured logging: one line per event, as text (key=value) or JSON.

The daemon logs through the standard logging module so that libraries' warnings land in the same stream.
Structured fields travel in `extra={"fields": {...}}`; `event()` is the short way to write that.
Secrets never go through here: callers pass references and ids, not credentials.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

_ROOT = "crib"


def get(name: str) -> logging.Logger:
    """Return the logger for a crib module (pass __name__)."""
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log msg with structured fields attached."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields}, stacklevel=2)


def _timestamp(created: float) -> str:
    secs = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{int((created - secs) * 1000):03d}Z"


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <message> key=value ...`, quoting values that contain spaces."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record.created), record.levelname, record.getMessage()]
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        parts.extend(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        doc.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger for the daemon: one handler on stderr."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger(_ROOT).setLevel(getattr(logging, level.upper()))


__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "TextFormatter", "event", "get", "setup"]
