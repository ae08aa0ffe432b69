"""Where blobs come from: a registry repository, or files on this node (offline import).

The pull pipeline asks a BlobSource for a blob and streams it into the unpacker; it does not care whether
the bytes cross the network. Both implementations report received bytes as they go (progress, stall
detection) and leave digest verification to the pipeline.
"""

from __future__ import annotations

import asyncio
import tarfile
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path

from crib.images.manifest import Descriptor
from crib.images.registry import RegistrySession
from crib.images.streams import CHUNK

Write = Callable[[bytes], Awaitable[None]]
OnBytes = Callable[[int], None]


class BlobSource(typing.Protocol):
    """A place blobs can be read from."""

    def __str__(self) -> str: ...

    async def fetch(self, desc: Descriptor, write: Write, on_bytes: OnBytes, what: str) -> None:
        """Stream the blob's bytes into write (exactly desc.size of them, unverified)."""
        ...

    async def read_small(self, desc: Descriptor, limit: int, what: str) -> bytes:
        """A small blob (config, manifest) in memory, unverified."""
        ...


class RegistrySource:
    """Blobs of one repository on one registry endpoint."""

    def __init__(self, session: RegistrySession) -> None:
        self.session = session

    def __str__(self) -> str:
        return str(self.session)

    async def fetch(self, desc: Descriptor, write: Write, on_bytes: OnBytes, what: str) -> None:
        await self.session.fetch_blob(desc.digest, desc.size, write, what, on_bytes)

    async def read_small(self, desc: Descriptor, limit: int, what: str) -> bytes:
        return await self.session.blob(desc.digest, limit, what)


async def _pump(fh: typing.IO[bytes], write: Write, on_bytes: OnBytes) -> None:
    """Copy a local file into the pull pipeline in chunks, reading off the event loop."""
    while True:
        data = await asyncio.to_thread(fh.read, CHUNK)
        if not data:
            return
        on_bytes(len(data))
        await write(data)


class FileSource:
    """Blobs as files: an OCI layout directory (`blobs/<alg>/<hex>`) or explicit paths (docker-archive)."""

    def __init__(self, describe: str, locate: Callable[[str], Path]) -> None:
        self._describe = describe
        self._locate = locate

    def __str__(self) -> str:
        return self._describe

    async def fetch(self, desc: Descriptor, write: Write, on_bytes: OnBytes, what: str) -> None:
        fh = await asyncio.to_thread(open, self._locate(desc.digest), "rb")
        try:
            await _pump(fh, write, on_bytes)
        finally:
            fh.close()

    async def read_small(self, desc: Descriptor, limit: int, what: str) -> bytes:
        return await asyncio.to_thread(self._locate(desc.digest).read_bytes)


class TarMemberSource:
    """Blobs stored as members of a tar archive (a docker-archive or an OCI layout tar), read in place."""

    def __init__(self, describe: str, archive: Path, members: dict[str, str]) -> None:
        self._describe = describe
        self._archive = archive
        self._members = members  # digest -> member name

    def __str__(self) -> str:
        return self._describe

    def _open(self, digest: str) -> tuple[tarfile.TarFile, typing.IO[bytes]]:
        tar = tarfile.open(self._archive, "r:")  # noqa: SIM115 - closed by the caller with the member
        try:
            member = tar.extractfile(self._members[digest])
        except KeyError:
            tar.close()
            raise
        if member is None:
            tar.close()
            raise FileNotFoundError(f"{self._members[digest]} is not a file in {self._archive}")
        return tar, member

    async def fetch(self, desc: Descriptor, write: Write, on_bytes: OnBytes, what: str) -> None:
        tar, fh = await asyncio.to_thread(self._open, desc.digest)
        try:
            await _pump(fh, write, on_bytes)
        finally:
            tar.close()

    async def read_small(self, desc: Descriptor, limit: int, what: str) -> bytes:
        def read() -> bytes:
            tar, fh = self._open(desc.digest)
            with tar:
                return fh.read(limit + 1)

        return await asyncio.to_thread(read)


__all__ = ["BlobSource", "FileSource", "RegistrySource", "TarMemberSource"]
