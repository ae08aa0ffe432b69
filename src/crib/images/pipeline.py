"""From descriptors to committed content: the part of a pull that registries and imports share.

For each layer: if `layers/<chain id>` exists there is nothing to do; else, if its blob is in the content
store, it is unpacked from there; else it is downloaded and unpacked at the same time (streams.py), the
blob teed into the content store. Per chain id the work runs once however many pulls want it
(SingleFlight); per blob digest a lock makes a second chain that needs the same blob wait and unpack from
the stored copy. A semaphore bounds concurrent layer jobs (image.max_concurrent_downloads), and they run in
a dedicated thread pool of the same size so that waiting readers never starve other work.

Everything a pull touches is leased until its record is written, so a concurrent garbage collection never
removes it; on failure the pull's own unreferenced leftovers are collected at once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from crib import lazy, log
from crib.errors import CribError
from crib.images.blobs import BlobWriter, ContentError, ContentStore, hasher, verify
from crib.images.layers import LayerStore
from crib.images.manifest import Descriptor
from crib.images.progress import PullProgress, SingleFlight, Transfer
from crib.images.sources import BlobSource
from crib.images.store import ImageStore
from crib.images.streams import HashingReader, Pipe, Reader, ReaderGone, TeeReader, decompressed
from crib.images.unpack import BrokenLayer, UnpackStats, remove_tree, unpack_tar

if TYPE_CHECKING:
    import zstandard
else:
    zstandard = lazy.module("zstandard")  # loaded by the first zstd layer (daemon idle memory)

_log = log.get(__name__)

MAX_CONFIG_BYTES = 8 << 20


class Pipeline:
    """Shared state of every pull and import; see the module note."""

    def __init__(self, *, content: ContentStore, layers: LayerStore, store: ImageStore, concurrency: int,
                 max_layer_bytes: int) -> None:
        self.content = content
        self.layers = layers
        self.store = store
        self.max_layer_bytes = max_layer_bytes
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency),
                                                           thread_name_prefix="crib-unpack")
        self._layer_flights: SingleFlight[str, None] = SingleFlight()
        self._config_flights: SingleFlight[str, None] = SingleFlight()
        self._transfers: dict[str, Transfer] = {}
        self._blob_locks: dict[str, asyncio.Lock] = {}
        self._blob_lock_users: collections.Counter[str] = collections.Counter()
        self.leases: collections.Counter[str] = collections.Counter()
        self.gc_lock = threading.Lock()  # see gc.sweep
        self.on_failure: Callable[[list[str]], Awaitable[object]] | None = None

    async def cleanup(self, keys: list[str]) -> None:
        """After a failed pull: remove what it stored that nothing else needs (never raises)."""
        if self.on_failure is None or not keys:
            return
        try:
            await self.on_failure(keys)
        except Exception:
            _log.exception("cleaning up after a failed pull")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------------------------------- leases

    @contextlib.contextmanager
    def lease(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold digests and chain ids against garbage collection for the block's duration."""
        held = list(dict.fromkeys(keys))
        with self.gc_lock:
            self.leases.update(held)
        try:
            yield
        finally:
            with self.gc_lock:
                self.leases.subtract(held)
                for key in held:
                    if self.leases[key] <= 0:
                        del self.leases[key]

    # -------------------------------------------------------------------------------------- small blobs

    async def store_small(self, digest: str, data: bytes, what: str) -> None:
        """Verify and store a manifest or config (fsync and rename off the event loop)."""
        if not self.content.exists(digest):
            await asyncio.to_thread(self.content.put, digest, data, what=what)

    async def read_config(self, source: BlobSource, desc: Descriptor, what: str) -> bytes:
        """The config blob, from the store or fetched once (however many pulls ask) and stored."""
        if not self.content.exists(desc.digest):
            await self._config_flights.run(desc.digest, lambda: self._fetch_config(source, desc, what))
        return await asyncio.to_thread(self.content.read, desc.digest)

    async def _fetch_config(self, source: BlobSource, desc: Descriptor, what: str) -> None:
        if self.content.exists(desc.digest):
            return
        if desc.size > MAX_CONFIG_BYTES:
            raise ContentError(f"{what}: the image config is {desc.size} bytes, more than crib accepts "
                               f"({MAX_CONFIG_BYTES})")
        data = await source.read_small(desc, desc.size, what)
        verify(desc.digest, data, what=f"{what}: config {desc.digest}")
        if len(data) != desc.size:
            raise ContentError(f"{what}: config {desc.digest} is {len(data)} bytes, the manifest says "
                               f"{desc.size}")
        await self.store_small(desc.digest, data, f"{what}: config")

    # ------------------------------------------------------------------------------------------- layers

    async def ensure_layer(self, source: BlobSource, desc: Descriptor, diff_id: str, chain_id: str,
                           progress: PullProgress, what: str) -> None:
        """Make layers/<chain id> exist (see the module note)."""
        transfer = self._transfers.get(chain_id)
        if transfer is None:
            transfer = self._transfers[chain_id] = Transfer(digest=desc.digest, size=desc.size)
        progress.watch(transfer)
        if self.layers.exists(chain_id):
            transfer.finish()
            self._transfers.pop(chain_id, None)
            return
        await self._layer_flights.run(
            chain_id, lambda: self._make_layer(source, desc, diff_id, chain_id, what))
        transfer.finish()

    async def _make_layer(self, source: BlobSource, desc: Descriptor, diff_id: str, chain_id: str,
                          what: str) -> None:
        transfer = self._transfers.setdefault(chain_id, Transfer(digest=desc.digest, size=desc.size))
        layer_what = f"{what}: layer {desc.digest}"
        try:
            async with self._slots:
                transfer.start()
                if self.layers.exists(chain_id):
                    return
                work = await asyncio.to_thread(self.layers.workdir, chain_id)
                try:
                    stats = await self._fill(source, desc, diff_id, work, transfer, layer_what)
                    await asyncio.to_thread(self.layers.commit, work, chain_id)
                except BaseException:
                    await asyncio.shield(asyncio.to_thread(remove_tree, work))
                    raise
                self.store.set_layer_usage(chain_id, stats.inodes, stats.disk_bytes)
                transfer.finish()
        finally:
            if self._transfers.get(chain_id) is transfer:
                del self._transfers[chain_id]

    async def _fill(self, source: BlobSource, desc: Descriptor, diff_id: str, work: Path, transfer: Transfer,
                    what: str) -> UnpackStats:
        lock = self._blob_locks.setdefault(desc.digest, asyncio.Lock())
        self._blob_lock_users[desc.digest] += 1
        try:
            async with lock:
                if not self.content.exists(desc.digest):
                    return await self._stream(source, desc, diff_id, work, transfer, what)
        finally:
            self._blob_lock_users[desc.digest] -= 1
            if self._blob_lock_users[desc.digest] <= 0:
                del self._blob_lock_users[desc.digest]
                self._blob_locks.pop(desc.digest, None)
        # The blob is stored (by an earlier pull, or by another chain a moment ago): unpack from the file.
        path = self.content.path(desc.digest)

        def from_file() -> UnpackStats:
            with path.open("rb") as fh:
                return self._unpack(TeeReader(fh, None, transfer.add), work, diff_id, None, what)

        transfer.done = 0
        return await self._in_pool(from_file)

    async def _stream(self, source: BlobSource, desc: Descriptor, diff_id: str, work: Path,
                      transfer: Transfer, what: str) -> UnpackStats:
        loop = asyncio.get_running_loop()
        pipe = Pipe(loop)
        writer = await asyncio.to_thread(self.content.writer, desc.digest, desc.size, what)

        def consume() -> UnpackStats:
            try:
                return self._unpack(TeeReader(pipe, writer.write), work, diff_id, writer, what)
            finally:
                pipe.reader_done()

        future = loop.run_in_executor(self._pool, consume)
        try:
            try:
                await source.fetch(desc, pipe.write, transfer.add, what)
                pipe.close()
            except ReaderGone:
                pass  # the unpacker stopped first; its own error (awaited below) says why
            except BaseException as exc:
                pipe.fail(_Aborted(f"{what}: download failed: {exc}"))
                await _settle(future)
                raise
            try:
                stats = await asyncio.shield(future)
            except asyncio.CancelledError:
                pipe.fail(_Aborted(f"{what}: cancelled"))
                await _settle(future)
                raise
            await asyncio.to_thread(writer.commit)
            return stats
        finally:
            await asyncio.shield(asyncio.to_thread(writer.abort))

    async def _in_pool(self, fn: Callable[[], UnpackStats]) -> UnpackStats:
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await _settle(future)  # the thread cannot be interrupted: it must finish before cleanup
            raise

    def _unpack(self, src: Reader, work: Path, diff_id: str, writer: BlobWriter | None,
                what: str) -> UnpackStats:
        """Worker thread: decompress, hash, extract, then check both digests."""
        started = time.monotonic()
        tee = src if isinstance(src, TeeReader) else TeeReader(src, None)
        try:
            tar_stream = HashingReader(decompressed(tee, what), hasher(diff_id), limit=self.max_layer_bytes,
                                       what=what)
            stats = unpack_tar(tar_stream, work, what=what)
            tar_stream.drain()
            tee.drain()
        except (ValueError, zstandard.ZstdError) as exc:  # a broken compression stream
            if writer is not None:
                # A wrong blob explains a broken stream best: read the rest of it, then compare digests.
                with contextlib.suppress(Exception):
                    tee.drain()
                self._check_blob(writer)
            raise BrokenLayer(str(exc)) from exc
        if writer is not None:
            self._check_blob(writer)
        got = f"{diff_id.split(':', 1)[0]}:{tar_stream.hash.hexdigest()}"
        if got != diff_id:
            raise ContentError(f"{what}: the uncompressed layer hashes to {got}, the image config says "
                               f"{diff_id}; "
                               "nothing was stored")
        _log.debug("%s unpacked: %d entries, %d bytes in %.2fs", what, stats.entries, tar_stream.count,
                   time.monotonic() - started)
        return stats

    @staticmethod
    def _check_blob(writer: BlobWriter) -> None:
        if writer.written != writer.size:
            return  # incomplete: the download's own error is the one to report
        got = f"{writer.digest.split(':', 1)[0]}:{writer.hash_hex()}"
        if got != writer.digest:
            raise ContentError(f"{writer.what}: the downloaded content does not match its digest (got "
                               f"{got}); "
                               "nothing was stored")


class _Aborted(CribError):
    """Handed to the unpacker when the download failed, so that it stops reading."""


async def _settle(future: asyncio.Future[UnpackStats]) -> None:
    """Wait for a worker thread's future whatever happens to us (it cannot be interrupted)."""
    while not future.done():
        with contextlib.suppress(BaseException):
            await asyncio.shield(future)
    if not future.cancelled():
        future.exception()

__all__ = ["MAX_CONFIG_BYTES", "Pipeline"]
