"""Reading CRI container logs the way kubelet and crictl read them (`crib logs`).

A record is `<RFC 3339 time> <stdout|stderr> <P|F>[:more tags] <content>\\n` (conmon's k8s-file; P is a
partial line, continued by the next record); Docker's JSON lines (`{"log","stream","time"}`) are read too,
as kubelet does. `--tail N` counts records from the end of the file, like kubelet's tail. Following polls
the file (a tenth of a second), reopens it when it is rotated (a new inode, or it shrank) and stops once
the container is no longer running and the file is drained: what kubelet's follow does with fsnotify.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from crib.cli.timeparse import parse_rfc3339

POLL = 0.1
STATUS_EVERY = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    time: datetime
    stamp: str  # the time as written, normalized to RFC3339NanoFixed (nine digits; Z for UTC)
    stream: str
    partial: bool
    content: bytes  # without the record's newline; a full record's newline is added on output


def _fixed(stamp: str) -> str:
    head, dot, rest = stamp.partition(".")
    digits = ""
    zone = rest if dot else stamp[len(head):]
    if dot:
        n = 0
        while n < len(rest) and rest[n].isdigit():
            n += 1
        digits, zone = rest[:n], rest[n:]
    if zone in ("+00:00", "-00:00", "Z", ""):
        zone = "Z"
    return f"{head[:19]}.{(digits + '000000000')[:9]}{zone}"


def parse(line: bytes) -> Record:
    """One log record (CRI or Docker JSON), the trailing newline already stripped.

    Raises:
        ValueError: neither format.
    """
    if line.startswith(b"{"):
        doc = json.loads(line)
        text = str(doc.get("log", ""))
        stamp = str(doc.get("time", ""))
        return Record(time=parse_rfc3339(stamp), stamp=_fixed(stamp), stream=str(doc.get("stream", "")),
                      partial=not text.endswith("\n"), content=text.removesuffix("\n").encode())
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        raise ValueError(f"not a CRI log line: {line[:80]!r}")
    stamp = parts[0].decode()
    stream = parts[1].decode()
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"unknown stream {stream!r} in log line")
    tags = parts[2].split(b":")
    content = parts[3] if len(parts) > 3 else b""
    return Record(time=parse_rfc3339(stamp), stamp=_fixed(stamp), stream=stream, partial=tags[0] == b"P",
                  content=content)


def tail_offset(fh: BinaryIO, lines: int) -> int:
    """Where the last `lines` complete records of the file start (all of it when lines < 0).

    The newest newline ends the last complete record, so the records start after the (lines+1)-th
    newline from the end.
    """
    end = fh.seek(0, os.SEEK_END)
    if lines < 0:
        return 0
    pos, seen, block = end, 0, 65536
    while pos > 0:
        start = max(0, pos - block)
        fh.seek(start)
        chunk = fh.read(pos - start)
        i = len(chunk)
        while (i := chunk.rfind(b"\n", 0, i)) != -1:
            seen += 1
            if seen == lines + 1:
                return start + i + 1
        pos = start
    return 0


@dataclass(slots=True, kw_only=True)
class Options:
    follow: bool = False
    since: datetime | None = None
    tail: int = -1
    limit_bytes: int = -1
    timestamps: bool = False
    streams: tuple[str, ...] = ("stdout", "stderr")
    poll: float = POLL  # following: how often to look for more
    status_every: float = STATUS_EVERY  # following: how often to ask whether the container still runs


def _records(fh: BinaryIO) -> Iterator[Record | None]:
    """Complete records from the current position; None at the end of what is written so far."""
    pending = b""
    while True:
        chunk = fh.readline()
        if not chunk:
            yield None
            continue
        pending += chunk
        if not pending.endswith(b"\n"):
            continue  # a record still being written: wait for the rest
        line, pending = pending[:-1], b""
        if line:
            try:
                yield parse(line)
            except ValueError:
                continue


def read(path: str, opts: Options, write: Callable[[str, bytes], None],
         running: Callable[[], bool] = lambda: False) -> None:
    """Write the log's records (filtered per opts) through write(stream, data); follow if asked.

    Raises:
        FileNotFoundError: no log file at path.
    """
    fh = open(path, "rb")  # noqa: SIM115 - reopened on rotation
    try:
        fh.seek(tail_offset(fh, opts.tail))
        ino = os.fstat(fh.fileno()).st_ino
        budget = opts.limit_bytes
        next_check = 0.0
        records = _records(fh)
        while True:
            rec = next(records)
            if rec is None:
                if not opts.follow:
                    return
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    st = None
                if st is not None and (st.st_ino != ino or st.st_size < fh.tell()):
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115 - rotated: read the new file from its start
                    ino = os.fstat(fh.fileno()).st_ino
                    records = _records(fh)
                    continue
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + opts.status_every
                    if not running():
                        # One last look for what was written before it stopped, then end.
                        opts.follow = False
                        continue
                time.sleep(opts.poll)
                continue
            if rec.stream not in opts.streams or (opts.since is not None and rec.time < opts.since):
                continue
            data = rec.content if rec.partial else rec.content + b"\n"
            if opts.timestamps:
                data = rec.stamp.encode() + b" " + data
            if budget >= 0:
                if budget == 0:
                    return
                data = data[:budget]
                budget -= len(data)
            write(rec.stream, data)
    finally:
        fh.close()


def previous_path(path: str, attempt: int) -> str:
    """The log of the container's previous attempt: `<dir>/<attempt-1>.log`, as crictl derives it."""
    slash = path.rfind("/") + 1
    dot = path.rfind(".")
    return f"{path[:slash]}{attempt - 1}{path[dot:] if dot >= slash else ''}"


__all__ = ["Options", "Record", "parse", "previous_path", "read", "tail_offset"]
