"""Byte streams between the download (event loop) and the unpacker (a worker thread).

A layer is unpacked while it downloads: the event loop receives chunks from the registry and writes them
into a Pipe; a worker thread reads the Pipe, tees the bytes into the content store (hashing them),
decompresses, hashes the tar stream (the diff_id) and extracts it. The Pipe bounds what is buffered, so a
slow disk slows the download instead of filling memory; when the reader fails (a hostile tar entry) the
writer learns at its next write and stops downloading.

Decompression is detected from the stream's first bytes (gzip, zstd, or a plain tar), not trusted from the
media type; registries do mislabel layers.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import typing
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from crib import lazy
from crib.errors import ResourceExhausted

if TYPE_CHECKING:
    import zstandard
else:
    zstandard = lazy.module("zstandard")  # loaded by the first zstd layer (daemon idle memory)

CHUNK = 1 << 20


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class ReaderGone(Exception):
    """The reading side of a Pipe stopped (it failed or finished early); the writer should stop too."""


class Pipe:
    """Chunks from one asyncio writer to one thread reader, with back-pressure (see the module note)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 2 << 20) -> None:
        self._loop = loop
        self._limit = limit
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._closed = False
        self._error: BaseException | None = None
        self._reader_gone = False
        self._writer_waiting = False
        self._space = asyncio.Event()
        self._space.set()

    # ------------------------------------------------------------------------------------ writer (loop)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            if self._reader_gone:
                raise ReaderGone()
            self._chunks.append(bytes(data))
            self._buffered += len(data)
            self._cond.notify()
            wait = self._buffered >= self._limit
            if wait:
                self._writer_waiting = True
                self._space.clear()
        if wait:
            await self._space.wait()
            if self._reader_gone:
                raise ReaderGone()

    def close(self) -> None:
        """End of data: the reader sees EOF after the buffered chunks."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The writer gave up: the reader raises exc at its next read."""
        with self._cond:
            self._error = exc
            self._closed = True
            self._cond.notify_all()

    # ----------------------------------------------------------------------------------- reader (thread)

    def read(self, n: int = -1, /) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if not self._chunks:
                return b""
            chunk = self._chunks.popleft()
            if 0 <= n < len(chunk):
                self._chunks.appendleft(chunk[n:])
                chunk = chunk[:n]
            self._buffered -= len(chunk)
            if self._writer_waiting and self._buffered < self._limit // 2:
                self._writer_waiting = False
                self._loop.call_soon_threadsafe(self._space.set)
            return chunk

    def reader_done(self) -> None:
        """The reader will read no more; a blocked or later write raises ReaderGone."""
        with self._cond:
            self._reader_gone = True
            self._chunks.clear()
            self._buffered = 0
        self._loop.call_soon_threadsafe(self._space.set)


class TeeReader:
    """Reads from src and hands every byte to sink (the content store writer) on the way."""

    def __init__(self, src: Reader, sink: Callable[[bytes], Any] | None,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self._src = src
        self._sink = sink
        self._on_bytes = on_bytes

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        if data:
            if self._sink is not None:
                self._sink(data)
            if self._on_bytes is not None:
                self._on_bytes(len(data))
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class HashingReader:
    """Hashes what passes through and stops a stream that grows past a limit (tar bombs)."""

    def __init__(self, src: Reader, hash_obj: Any, *, limit: int, what: str) -> None:
        self._src = src
        self.hash = hash_obj
        self.count = 0
        self._limit = limit
        self._what = what

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        if data:
            self.count += len(data)
            if self._limit > 0 and self.count > self._limit:
                raise ResourceExhausted(
                    f"{self._what} unpacks to more than {self._limit} bytes (image.max_layer_bytes); the "
                    "layer "
                    "was refused. Raise image.max_layer_bytes if the image is legitimate")
            self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _Buffered:
    """A reader with a push-back buffer, so the first bytes can be peeked at."""

    def __init__(self, src: Reader) -> None:
        self._src = src
        self._head = b""

    def peek(self, n: int) -> bytes:
        while len(self._head) < n:
            more = self._src.read(CHUNK)
            if not more:
                break
            self._head += more
        return self._head[:n]

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                out, self._head = self._head, b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._src.read(n)


class _GzipReader:
    """Streaming gzip (several members allowed, as `gzip -c a b` writes), bounded output per read."""

    def __init__(self, src: Reader, what: str) -> None:
        self._src = src
        self._what = what
        self._d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._input = b""
        self._in_member = False
        self._src_eof = False
        self._done = False

    def read(self, n: int = -1, /) -> bytes:
        size = n if n > 0 else CHUNK
        while not self._done:
            if not self._input:
                if self._src_eof:
                    if self._in_member:
                        raise ValueError(f"{self._what}: the gzip stream ends early (truncated layer)")
                    self._done = True
                    break
                data = self._src.read(CHUNK)
                if not data:
                    self._src_eof = True
                    continue
                self._input = data
            if not self._in_member:
                # Between members: zero padding after the last member is tolerated, anything else starts one.
                self._input = self._input.lstrip(b"\0")
                if not self._input:
                    continue
                self._d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                self._in_member = True
            try:
                out = self._d.decompress(self._input, size)
            except zlib.error as exc:
                raise ValueError(f"{self._what}: not a valid gzip stream: {exc}") from exc
            self._input = self._d.unconsumed_tail
            if self._d.eof:
                self._input = self._d.unused_data + self._input
                self._in_member = False
            if out:
                return out
        return b""


def decompressed(src: Reader, what: str) -> Reader:
    """A reader of src's decompressed content, the compression detected from its magic bytes."""
    buffered = _Buffered(src)
    head = buffered.peek(4)
    if head[:2] == b"\x1f\x8b":
        return _GzipReader(buffered, what)
    if head == b"\x28\xb5\x2f\xfd":
        reader: Reader = zstandard.ZstdDecompressor().stream_reader(
            typing.cast(typing.IO[bytes], buffered), read_size=CHUNK, read_across_frames=True)
        return reader
    return buffered


__all__ = ["CHUNK", "HashingReader", "Pipe", "Reader", "ReaderGone", "TeeReader", "decompressed"]
