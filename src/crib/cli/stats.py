"""Usage figures from the CRI stats calls, for stats, statsp and top: CPU % between two samples."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

CLEAR = "\033[2J\033[H"


def cpu_percent(before: Any, after: Any) -> float:
    """CPU % of one core between two CpuUsage readings (0 when the clock did not move)."""
    used = after.usage_core_nano_seconds.value - before.usage_core_nano_seconds.value
    elapsed = after.timestamp - before.timestamp
    if elapsed <= 0 or used < 0:
        return 0.0
    return float(used / elapsed * 100.0)


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


__all__ = ["CLEAR", "cpu_percent", "watch_loop"]
