"""The attachment cache: what DEL needs to undo an ADD, kept under `<root>/cni/results/`.

The spec makes the runtime persist the final ADD result (section 3), and DEL must receive the same
configuration, arguments and runtimeConfig that ADD did, even after a daemon restart or a change of the
conflist on disk. crib writes the entry *before* the first plugin runs (an intent: a daemon killed during
ADD still knows that DEL is owed), updates it after each plugin with the result so far (so a chain that
failed or was interrupted is undone with the most complete prevResult), and marks it complete at the end.

The file name and format are libcni's (`<network>-<containerID>-<ifname>`, kind "cniCacheV1", config as
base64), so `cnitool` and other libcni tools can read them; crib's own extra keys start with "crib".
Every write is atomic (temporary file, fsync, rename): a crash leaves the previous version or the new one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crib.system import atomic

KIND = "cniCacheV1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """One (container, network, interface) attachment as ADD started or finished it."""

    container_id: str
    network_name: str
    ifname: str
    netns: str = ""
    config: bytes = b""  # the network configuration list, as ADD used it
    cni_version: str = ""  # the version negotiated for ADD; DEL and CHECK use the same
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None  # the (partial, until complete) ADD result
    complete: bool = False

    @property
    def key(self) -> str:
        return f"{self.network_name}-{self.container_id}-{self.ifname}"


def _encode(att: Attachment) -> bytes:
    doc: dict[str, Any] = {
        "kind": KIND,
        "containerId": att.container_id,
        "config": base64.b64encode(att.config).decode(),
        "ifName": att.ifname,
        "networkName": att.network_name,
        "netns": att.netns,
        "cniArgs": [list(kv) for kv in att.cni_args],
        "capabilityArgs": att.capability_args,
        "cribCniVersion": att.cni_version,
        "cribComplete": att.complete,
    }
    if att.result is not None:
        doc["result"] = att.result
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


class CacheCorrupt(ValueError):
    """A cache file cannot be decoded."""


def _decode(data: bytes, path: str) -> Attachment:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            raise CacheCorrupt(f"{path}: not a {KIND} cache entry")
        args = tuple((str(k), str(v)) for k, v in doc.get("cniArgs") or [])
        result = doc.get("result")
        return Attachment(
            container_id=str(doc["containerId"]), network_name=str(doc["networkName"]),
            ifname=str(doc["ifName"]), netns=str(doc.get("netns", "")),
            config=base64.b64decode(doc.get("config", "")), cni_version=str(doc.get("cribCniVersion", "")),
            cni_args=args, capability_args=dict(doc.get("capabilityArgs") or {}),
            result=result if isinstance(result, dict) else None,
            # A libcni-written entry with a result is a finished ADD.
            complete=bool(doc.get("cribComplete", isinstance(result, dict))),
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        if isinstance(exc, CacheCorrupt):
            raise
        raise CacheCorrupt(f"{path}: cannot decode cache entry: {exc}") from None


class ResultCache:
    """Attachment entries in one directory; blocking file I/O (callers run it off the event loop)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, network_name: str, container_id: str, ifname: str) -> Path:
        return self.directory / f"{network_name}-{container_id}-{ifname}"

    def write(self, att: Attachment) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # fsynced: after a crash the entry is what tells the restarted daemon that DEL is owed. A write a
        # full disk refuses leaves the previous entry and no temporary file (the directory is every pod's).
        atomic.write_atomic(self.directory / att.key, _encode(att), mode=0o600, durable=True)

    def read(self, network_name: str, container_id: str, ifname: str) -> Attachment | None:
        path = self.path(network_name, container_id, ifname)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return _decode(data, str(path))

    def remove(self, att: Attachment) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / att.key).unlink()
        self._fsync_dir()

    def drop_temps(self, keep: Callable[[str], bool] = lambda container_id: False) -> list[str]:
        """Remove the temporary files of writes a killed daemon never finished, but for the containers kept
        (callers hold those containers' locks, so no write of theirs is under way); returns what went."""
        gone = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        for name in names:
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            owner = next((part for part in name.split("-") if len(part) == 64), "")
            if owner and keep(owner):
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
                gone.append(name)
        return gone

    def for_container(self, container_id: str) -> list[Attachment]:
        """Every entry of a container, whatever network it was added to (the config may have changed)."""
        needle = f"-{container_id}-"
        return [att for att in self._entries(lambda name: needle in name) if att.container_id == container_id]

    def all(self) -> list[Attachment]:
        return self._entries(lambda name: True)

    def corrupt(self, container_id: str = "") -> list[str]:
        """Paths of entries (of one container, or all) that cannot be decoded; reported, never deleted."""
        bad = []
        needle = f"-{container_id}-" if container_id else ""
        for path in self._files(lambda name: needle in name):
            try:
                _decode(path.read_bytes(), str(path))
            except (CacheCorrupt, OSError):
                bad.append(str(path))
        return bad

    def _files(self, match: Callable[[str], bool]) -> Sequence[Path]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        return [self.directory / n for n in names if not n.startswith(".") and match(n)]

    def _entries(self, match: Callable[[str], bool]) -> list[Attachment]:
        out = []
        for path in self._files(match):
            try:
                out.append(_decode(path.read_bytes(), str(path)))
            except (CacheCorrupt, FileNotFoundError):
                continue
        return out

    def _fsync_dir(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


__all__ = ["KIND", "Attachment", "CacheCorrupt", "ResultCache"]
