"""Typed identifiers and their generation.

NewType keeps a pod id from being passed where a container id is expected, at no run-time cost. Ids are 64
lowercase hex characters like those of containerd and CRI-O, so tools that truncate ids to 12 or 13
characters (crictl does) keep working.
"""

from __future__ import annotations

import re
import secrets
from typing import NewType

SandboxId = NewType("SandboxId", str)
ContainerId = NewType("ContainerId", str)
ImageId = NewType("ImageId", str)
ExecId = NewType("ExecId", str)

_ID_RE = re.compile(r"^[0-9a-f]{64}$")


def new_id() -> str:
    """Return a fresh random 64-hex-character id."""
    return secrets.token_hex(32)


def is_full_id(value: str) -> bool:
    """Whether value has the shape of a full id (as opposed to a prefix or a name)."""
    return bool(_ID_RE.match(value))


__all__ = ["ContainerId", "ExecId", "ImageId", "SandboxId", "is_full_id", "new_id"]
