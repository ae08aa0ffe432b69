"""Pre-installed NRI plugins: found in plugin_path, started by crib over a socket pair.

A plugin is an executable file named `<two-digit index>-<name>`; its configuration, if any, is
`<index>-<name>.conf` or else `<name>.conf` in plugin_config_path and reaches it in Configure. crib starts
it with one end of a connected socket pair and, as containerd does, an environment of exactly
NRI_PLUGIN_NAME, NRI_PLUGIN_IDX and NRI_PLUGIN_SOCKET (the inherited descriptor's number). It then joins
like any plugin, bounded by registration_timeout. A launched plugin lives as long as the daemon or its
connection: either ending kills and reaps it; what it printed is logged when it goes.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crib import log, proc
from crib.errors import CribError

if TYPE_CHECKING:
    from crib.nri.plugins import Plugins

_log = log.get(__name__)
_FILE = re.compile(r"^([0-9]{2})-([A-Za-z0-9_.+-]+)$")
LIFETIME = 10 * 365 * 24 * 3600.0  # proc needs a bound; a launched plugin lives as long as the daemon
OUTPUT_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Found:
    path: Path
    idx: str
    name: str
    config: str


def discover(plugin_path: str, config_path: str) -> list[Found]:
    """The executables in plugin_path with a valid name, in index order (others are logged and skipped)."""
    directory = Path(plugin_path)
    if not directory.is_dir():
        return []
    found = []
    for entry in sorted(directory.iterdir()):
        if not entry.is_file() or not os.access(entry, os.X_OK):
            continue
        match = _FILE.match(entry.name)
        if match is None:
            log.event(_log, 30, "NRI plugin file skipped: its name is not <two-digit index>-<name>",
                      path=str(entry))
            continue
        idx, name = match.groups()
        config = ""
        for candidate in (Path(config_path) / f"{idx}-{name}.conf", Path(config_path) / f"{name}.conf"):
            if candidate.is_file():
                config = candidate.read_text()
                break
        found.append(Found(path=entry, idx=idx, name=name, config=config))
    return found


async def start(plugins: Plugins, found: Found) -> None:
    """Start one pre-installed plugin and let it join; a failure is logged, never raised."""
    from crib.nri.plugins import Launched

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = {"NRI_PLUGIN_NAME": found.name, "NRI_PLUGIN_IDX": found.idx,
               "NRI_PLUGIN_SOCKET": str(theirs.fileno())}
        try:
            child = await proc.start([str(found.path)], env=env, pass_fds=(theirs.fileno(),))
        except CribError as exc:
            ours.close()
            log.event(_log, 40, "NRI plugin could not be started", plugin=found.path.name, error=str(exc))
            return
    finally:
        theirs.close()
    reaper = asyncio.ensure_future(_reap(child, found.path.name))
    _reapers.add(reaper)
    reaper.add_done_callback(_reapers.discard)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    launched = Launched(name=found.name, idx=found.idx, config=found.config, child=child)
    if await plugins.connect(reader, writer, launched) is None:
        await child.kill()


_reapers: set[asyncio.Task[None]] = set()


async def _reap(child: proc.Child, name: str) -> None:
    """Drain the plugin's output while it runs; log how it ended."""
    result = await child.finish(timeout=LIFETIME, check=False, output_limit=OUTPUT_LIMIT,
                                drain_after_exit=1.0)
    log.event(_log, 30, "NRI plugin process exited", plugin=name, code=result.returncode,
              output=proc.tail(result.stderr or result.stdout) or None)


__all__ = ["Found", "discover", "start"]
