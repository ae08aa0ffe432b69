"""Durations and points in time as crictl spells them on its command line.

crictl's flags are Go `time.Duration`s (`2s`, `1m30s`, `500ms`); crib also takes a plain number of seconds,
which is what a crictl.yaml `timeout` holds. `logs --since` takes a duration back from now, an RFC 3339 time
(local time when it has no zone, as crictl's timetype does) or a Unix timestamp with optional nanoseconds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from crib.cli.errors import CliError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


class BadTime(CliError, ValueError):
    """The text is neither a duration nor a time; the message says what is accepted."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (`1m30s`) or a plain number of seconds (`10`, `2.5`).

    Raises:
        BadTime: anything else.
    """
    s = text.strip()
    if _NUMBER.fullmatch(s):
        return float(s)
    return _go_duration(text, s)


def _go_duration(text: str, s: str) -> float:
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise BadTime(f"{text!r} is not a duration: use seconds (10) or Go's form (2s, 1m30s, 500ms)")
    return sign * total


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The point in time `--since` names, timezone-aware.

    Raises:
        BadTime: none of the accepted forms.
    """
    now = now or datetime.now(UTC)
    s = text.strip()
    if _NUMBER.fullmatch(s):  # a Unix timestamp, as in crictl (a duration needs its unit)
        whole, _, frac = s.partition(".")
        micros = int((frac + "000000")[:6])
        return datetime.fromtimestamp(int(whole or 0), UTC) + timedelta(microseconds=micros)
    try:
        return now - timedelta(seconds=_go_duration(text, s))
    except BadTime:
        pass
    try:
        parsed = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise BadTime(f"--since {text!r}: use a duration (42m), an RFC 3339 time (2013-01-02T13:23:37Z) "
                      "or a Unix timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time, as crictl reads a time without a zone
    return parsed


def parse_rfc3339(text: str) -> datetime:
    """A CRI log timestamp (nanoseconds, `Z` or an offset) as an aware datetime (microsecond precision).

    Raises:
        ValueError: not a timestamp.
    """
    head, dot, rest = text.partition(".")
    if dot:
        digits = 0
        while digits < len(rest) and rest[digits].isdigit():
            digits += 1
        frac, zone = rest[:digits], rest[digits:]
        text = f"{head}.{(frac + '000000')[:6]}{zone}"
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no zone")
    return parsed


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: what crictl prints in CREATED columns ("5 minutes")."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


__all__ = ["BadTime", "human_duration", "parse_duration", "parse_rfc3339", "parse_since"]
