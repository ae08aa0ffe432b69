"""Unpacked layers: one directory per chain id under `<root>/layers/<hex>`, shared by every image.

The chain id names a layer together with everything below it (`chain(L0) = diff_id(L0)`,
`chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln))`), as containerd and the OCI spec define it. A layer
is extracted into a private directory under `<root>/tmp/` and renamed into place only when complete and
verified, so a directory under `layers/` is always a whole layer; removal renames it back into `tmp/`
first, so a half-deleted layer is never visible either.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from crib.images.unpack import remove_tree


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain id of each layer of a stack, bottom first."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


class LayerStore:
    """root/layers, with private work directories in root/tmp."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "layers"
        self.tmp = root / "tmp"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        # overlayfs lowerdirs must be traversable by the container's user: the layers dir is 0711.
        os.chmod(self.dir, 0o711)

    def path(self, chain_id: str) -> Path:
        return self.dir / chain_id.split(":", 1)[-1]

    def exists(self, chain_id: str) -> bool:
        return self.path(chain_id).is_dir()

    def workdir(self, chain_id: str) -> Path:
        """A fresh private directory to extract into."""
        return Path(tempfile.mkdtemp(prefix=f"layer-{chain_id.split(':', 1)[-1][:16]}-", dir=self.tmp))

    def commit(self, work: Path, chain_id: str) -> Path:
        """Move a finished extraction into place (a concurrent twin that won the race is kept instead)."""
        final = self.path(chain_id)
        try:
            os.rename(work, final)
        except OSError:
            if not final.is_dir():
                raise
            remove_tree(work)
        return final

    def detach(self, chain_id: str) -> Path | None:
        """Rename a layer directory out of sight (into tmp/) and return where; None if it was not there."""
        final = self.path(chain_id)
        trash = self.tmp / f"trash-{final.name[:16]}-{secrets.token_hex(4)}"
        try:
            os.rename(final, trash)
        except FileNotFoundError:
            return None
        return trash

    def chain_ids(self) -> Iterator[str]:
        if not self.dir.is_dir():
            return
        for entry in sorted(self.dir.iterdir()):
            if len(entry.name) == 64 and all(c in "0123456789abcdef" for c in entry.name):
                yield f"sha256:{entry.name}"


def clean_tmp(tmp: Path) -> int:
    """Remove everything under root/tmp (start-up: leftovers of a daemon killed mid-pull)."""
    removed = 0
    if not tmp.is_dir():
        return 0
    for entry in tmp.iterdir():
        removed += 1
        if entry.is_dir() and not entry.is_symlink():
            remove_tree(entry)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    return removed


__all__ = ["LayerStore", "chain_ids", "clean_tmp"]
