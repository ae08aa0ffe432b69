"""Container root filesystems: overlay mounts of image layers plus a per-container writable layer."""

from crib.rootfs.overlay import Rootfs

__all__ = ["Rootfs"]
