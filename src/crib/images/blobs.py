"""The content store: blobs by digest under `<root>/blobs/<algorithm>/<hex>`, shared by every image.

A blob becomes visible only complete and verified: bytes go to a temporary file under `<root>/tmp/`, are
hashed as they are written, and the file is renamed into place after its digest and size match (and after
an fsync, so a power loss cannot leave a renamed file with missing data). A daemon killed mid-download
leaves only a temporary file, which start-up removes. sha256 and sha512 are accepted; anything else is
refused before a byte is fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crib.errors import CribError
from crib.images.reference import check_digest


class ContentError(CribError):
    """Content does not match what its descriptor promised (digest or size); nothing was stored."""


def hasher(digest: str) -> Any:
    """A hashlib object for the digest's algorithm (sha256 or sha512)."""
    algorithm = check_digest(digest).split(":", 1)[0]
    return hashlib.new(algorithm)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify(digest: str, data: bytes, *, what: str) -> None:
    """Raise ContentError unless data hashes to digest."""
    h = hasher(digest)
    h.update(data)
    got = f"{digest.split(':', 1)[0]}:{h.hexdigest()}"
    if got != digest:
        raise ContentError(f"{what}: content does not match its digest {digest} (got {got}); nothing was "
                           "stored")


class BlobWriter:
    """One blob being written: hashed as it goes, committed by rename. Not thread-safe (one writer)."""

    def __init__(self, store: ContentStore, digest: str, size: int, what: str) -> None:
        self.digest = digest
        self.size = size
        self.what = what
        self.written = 0
        self._store = store
        self._hash = hasher(digest)
        self.temp = store.tmp / f"blob-{digest.replace(':', '-')[:24]}-{secrets.token_hex(4)}"
        self._fd: int | None = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        self.written += len(data)
        if self.size >= 0 and self.written > self.size:
            raise ContentError(f"{self.what}: the registry sent more than the {self.size} bytes the manifest "
                               "declares; nothing was stored")
        self._hash.update(data)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def hash_hex(self) -> str:
        """The hex digest of what was written so far."""
        return str(self._hash.copy().hexdigest())

    def commit(self) -> Path:
        """Verify size and digest, fsync, rename into place; the temporary file is gone either way.

        Raises:
            ContentError: wrong size or digest.
        """
        try:
            if self.size >= 0 and self.written != self.size:
                raise ContentError(f"{self.what}: got {self.written} bytes, the manifest declares "
                                   f"{self.size}; "
                                   "nothing was stored")
            got = f"{self.digest.split(':', 1)[0]}:{self._hash.hexdigest()}"
            if got != self.digest:
                raise ContentError(f"{self.what}: content does not match its digest {self.digest} (got "
                                   f"{got}); "
                                   "nothing was stored")
            assert self._fd is not None
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            final = self._store.path(self.digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.temp, final)
            return final
        finally:
            self.abort()

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


class ContentStore:
    """Blobs under root/blobs, temporary files under root/tmp."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs"
        self.tmp = root / "tmp"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        algorithm, _, hexpart = check_digest(digest).partition(":")
        return self.dir / algorithm / hexpart

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def writer(self, digest: str, size: int, what: str) -> BlobWriter:
        return BlobWriter(self, digest, size, what)

    def put(self, digest: str, data: bytes, *, what: str) -> None:
        """Store small content (manifests, configs) already in memory, verifying it first."""
        if self.exists(digest):
            return
        w = self.writer(digest, len(data), what)
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        w.commit()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def delete(self, digest: str) -> int:
        """Remove a blob; returns the bytes freed (0 when it was not there)."""
        path = self.path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def digests(self) -> Iterator[str]:
        """Every stored blob (files with names that are not digests are skipped, never deleted)."""
        if not self.dir.is_dir():
            return
        for algo_dir in sorted(self.dir.iterdir()):
            if not algo_dir.is_dir():
                continue
            for entry in sorted(algo_dir.iterdir()):
                digest = f"{algo_dir.name}:{entry.name}"
                try:
                    check_digest(digest)
                except CribError:
                    continue
                yield digest


__all__ = ["BlobWriter", "ContentError", "ContentStore", "digest_of", "hasher", "verify"]
