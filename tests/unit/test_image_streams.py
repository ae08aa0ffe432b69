"""Stream plumbing between the download and the unpacker: decompression, hashing bounds, the Pipe."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import threading

import pytest
import zstandard

from crib.errors import ResourceExhausted
from crib.images.streams import HashingReader, Pipe, ReaderGone, TeeReader, decompressed

DATA = b"".join(f"line {i:06d} of some compressible text\n".encode() for i in range(20000))


def read_all(reader: object, size: int = 7000) -> bytes:
    out = []
    while True:
        chunk = reader.read(size)  # type: ignore[attr-defined]
        if not chunk:
            return b"".join(out)
        out.append(chunk)


class Trickle(io.RawIOBase):
    """Gives at most `step` bytes per read, as a network stream does."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        return self._buf.read(self._step if n < 0 else min(n, self._step))


@pytest.mark.parametrize("blob", [
    gzip.compress(DATA),
    gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]),
    gzip.compress(DATA) + b"\0" * 512,
    zstandard.ZstdCompressor().compress(DATA),
    zstandard.ZstdCompressor().compress(DATA[:5]) + zstandard.ZstdCompressor().compress(DATA[5:]),
    DATA,
], ids=["gzip", "gzip-members", "gzip-padding", "zstd", "zstd-frames", "plain"])
def test_decompressed_detects_the_format(blob: bytes) -> None:
    tee_seen = bytearray()
    tee = TeeReader(Trickle(blob), tee_seen.extend)
    assert read_all(decompressed(tee, "layer")) == DATA
    tee.drain()
    assert bytes(tee_seen) == blob  # everything compressed passed through the tee (the blob digest)


@pytest.mark.parametrize(("blob", "message"), [
    (gzip.compress(DATA)[:-100], "ends early"),
    (gzip.compress(DATA)[:50] + b"garbage" * 20, "not a valid gzip"),
], ids=["truncated", "garbage"])
def test_broken_gzip_is_reported(blob: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_all(decompressed(Trickle(blob), "layer X"))


def test_gzip_bomb_output_is_bounded_per_read() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    reader = decompressed(io.BytesIO(bomb), "layer")
    assert len(reader.read(4096)) <= 4096
    limited = HashingReader(reader, hashlib.sha256(), limit=1 << 20, what="layer sha256:x")
    with pytest.raises(ResourceExhausted, match=r"image\.max_layer_bytes"):
        read_all(limited, 1 << 16)


def test_hashing_reader_counts_and_hashes() -> None:
    reader = HashingReader(io.BytesIO(DATA), hashlib.sha256(), limit=0, what="x")
    reader.drain()
    assert reader.count == len(DATA)
    assert reader.hash.hexdigest() == hashlib.sha256(DATA).hexdigest()


async def test_pipe_carries_bytes_with_back_pressure() -> None:
    pipe = Pipe(asyncio.get_running_loop(), limit=64 * 1024)
    received = bytearray()

    def consume() -> None:
        while chunk := pipe.read(10_000):
            received.extend(chunk)

    reader = asyncio.get_running_loop().run_in_executor(None, consume)
    for i in range(0, len(DATA), 4096):
        await pipe.write(DATA[i:i + 4096])
        assert pipe._buffered <= 64 * 1024 + 4096  # the writer waits instead of buffering everything
    pipe.close()
    await reader
    assert bytes(received) == DATA


async def test_pipe_reader_failure_stops_the_writer() -> None:
    pipe = Pipe(asyncio.get_running_loop(), limit=1024)
    started = threading.Event()

    def consume_then_fail() -> None:
        pipe.read(10)
        started.set()
        pipe.reader_done()

    reader = asyncio.get_running_loop().run_in_executor(None, consume_then_fail)
    async def write_a_lot() -> None:
        for _ in range(1000):
            await pipe.write(b"x" * 512)

    with pytest.raises(ReaderGone):
        await write_a_lot()
    await reader
    assert started.is_set()


async def test_pipe_writer_failure_reaches_the_reader() -> None:
    pipe = Pipe(asyncio.get_running_loop())
    await pipe.write(b"abc")
    pipe.fail(RuntimeError("download broke"))
    with pytest.raises(RuntimeError, match="download broke"):
        await asyncio.get_running_loop().run_in_executor(None, pipe.read, 10)
