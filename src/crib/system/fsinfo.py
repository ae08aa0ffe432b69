"""The filesystem a path lives on: its device (as cAdvisor labels it), capacity and inodes."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class FsInfo:
    device: str  # the mount source, e.g. /dev/vda1 (or "overlay", "tmpfs" for virtual filesystems)
    capacity_bytes: int
    available_bytes: int
    inodes: int
    inodes_free: int


def device_of(path: str) -> str:
    """The source of the mount that holds path (matched by device number in /proc/self/mountinfo)."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return ""
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    found = ""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 2 and fields[2] == wanted:
                    parts = right.split()
                    found = parts[1] if len(parts) > 1 else ""
                    if fields[3] == "/":  # the filesystem's own root mount, not a bind of a subtree
                        break
    except OSError:
        return ""
    return found


def fs_info(path: str, device: str) -> FsInfo | None:
    """statvfs of path, labelled with device (computed once by the caller with device_of)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return FsInfo(device=device, capacity_bytes=st.f_blocks * st.f_frsize,
                  available_bytes=st.f_bavail * st.f_frsize, inodes=st.f_files, inodes_free=st.f_ffree)


__all__ = ["FsInfo", "device_of", "fs_info"]
