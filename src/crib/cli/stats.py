"""Usage figures from the CRI stats calls, for stats, statsp and top: CPU % between two samples."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from crib.cli import output

CLEAR = "\033[2J\033[H"


def cpu_percent(before: Any, after: Any) -> float:
    """CPU % of one core between two CpuUsage readings (0 when the clock did not move)."""
    used = after.usage_core_nano_seconds.value - before.usage_core_nano_seconds.value
    elapsed = after.timestamp - before.timestamp
    if elapsed <= 0 or used < 0:
        return 0.0
    return float(used / elapsed * 100.0)


def sampled_table(fetch: Callable[[], Sequence[Any]], wrap: Callable[[list[Any]], Any], *, fmt: str,
                  seconds: float, header: list[str], row: Callable[[Any, Any], list[Any] | None]) -> None:
    """stats/statsp: the document as read (json, yaml), or a table of two readings `seconds` apart.

    row(before, after) gives a line's cells, or None to leave the object out; objects that appeared
    between the readings are left out (no CPU % without a first reading), as in crictl.
    """
    first = sorted(fetch(), key=lambda s: s.attributes.id)
    if fmt != "table":
        output.emit(output.message_dict(wrap(first)), fmt)
        return
    old = {s.attributes.id: s for s in first}
    time.sleep(seconds)
    table = output.Table(header)
    for after in sorted(fetch(), key=lambda s: s.attributes.id):
        before = old.get(after.attributes.id)
        cells = row(before, after) if before is not None else None
        if cells is not None:
            table.add(cells)
    table.print()


def watch_loop(show: Callable[[], None], watch: bool, interval: float = 0.5) -> None:
    """Show once, or (watch) clear the screen and show again until Ctrl-C, as crictl stats -w does."""
    if not watch:
        show()
        return
    try:
        while True:
            sys.stdout.write(CLEAR)
            show()
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return


__all__ = ["CLEAR", "cpu_percent", "sampled_table", "watch_loop"]
