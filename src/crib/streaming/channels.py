"""Kubernetes channels over one WebSocket connection: numbered byte streams, as remote command and port
forward use them (channel.k8s.io and its v4, v5 and base64 variants).

A demultiplexer reads the connection and hands each message's data to its channel's input; an input holds
at most a few chunks, and while it is full the demultiplexer waits, so the connection stops being read
(WebSocket has no per-channel flow control: TCP brakes the client). Outputs write whole messages with the
channel prefix, waiting on the transport's backpressure. v5's CLOSE signal ([255, channel]) ends one
input; the end of the connection ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib

from crib.streaming import websocket as ws
from crib.streaming._transport import ConnectionClosed
from crib.streaming.wsconn import WebSocketConnection

INPUT_CHUNKS = 8


class ChannelInput:
    """The readable side of one channel."""

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(INPUT_CHUNKS)
        self._eof = False

    async def read(self) -> bytes:
        """The next chunk; b"" at the end (CLOSE signal or the connection's end)."""
        if self._eof and self._queue.empty():
            return b""
        chunk = await self._queue.get()
        if not chunk:
            self._eof = True
        return chunk

    async def _put(self, data: bytes) -> None:
        if data and not self._eof:
            await self._queue.put(data)

    def _end(self) -> None:
        if not self._eof:
            self._eof = True
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(b"")


class ChannelOutput:
    """The writable side of one channel."""

    def __init__(self, conn: WebSocketConnection, channel: int, *, base64_text: bool) -> None:
        self._conn = conn
        self.channel = channel
        self._base64 = base64_text

    async def write(self, data: bytes | memoryview) -> None:
        """Send data as one message on this channel.

        Raises:
            ConnectionClosed: the connection is gone.
        """
        opcode, payload = ws.channel_frame(self.channel, data, base64_text=self._base64)
        await self._conn.send(opcode, payload)

    def close(self) -> None:
        """Nothing goes on the wire: the channel protocols have no end-of-output signal from a server."""


class Channels:
    """The channels of one connection; run() demultiplexes until the connection ends.

    Args:
        close_signal: the protocol has v5's CLOSE signal.
    """

    def __init__(self, conn: WebSocketConnection, *, base64_text: bool, close_signal: bool) -> None:
        self.conn = conn
        self.base64_text = base64_text
        self.close_signal = close_signal
        self.inputs: dict[int, ChannelInput] = {}

    def input(self, channel: int) -> ChannelInput:
        return self.inputs.setdefault(channel, ChannelInput(channel))

    def output(self, channel: int) -> ChannelOutput:
        return ChannelOutput(self.conn, channel, base64_text=self.base64_text)

    async def run(self) -> None:
        """Read messages into the inputs until the connection closes; then end every input."""
        try:
            while (message := await self.conn.receive()) is not None:
                if message.opcode not in (ws.BINARY, ws.TEXT):
                    continue
                if self.close_signal and message.opcode == ws.BINARY and message.payload[:1] == b"\xff":
                    if len(message.payload) == 2 and message.payload[1] in self.inputs:
                        self.inputs[message.payload[1]]._end()
                    continue
                try:
                    channel, data = ws.split_channel(message, base64_text=self.base64_text)
                except ws.ProtocolError as exc:
                    self.conn.close_nowait(exc.code, str(exc)[:120])
                    break
                target = self.inputs.get(channel)
                if target is not None:
                    await target._put(data)
        except ConnectionClosed:
            pass
        finally:
            for target in self.inputs.values():
                target._end()


__all__ = ["ChannelInput", "ChannelOutput", "Channels"]
