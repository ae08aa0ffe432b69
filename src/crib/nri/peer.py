"""One NRI connection: a multiplexed socket carrying a ttrpc client and a ttrpc server.

The runtime side (crib) calls the plugin's `Plugin` service on logical connection 1 and serves the
`Runtime` service on connection 2; a plugin does the opposite. Both sides are this one class, so crib's
test plugin exercises exactly the code the daemon runs.

Whatever ends the connection - the peer hanging up, a broken frame, a close() - ends all three loops and
sets `closed`; the owner learns the reason from `reason`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from google.protobuf.message import Message

from crib._proto.nri.v1alpha1 import api_pb2 as api
from crib.nri import mux, ttrpc

PACKAGE = "nri.pkg.api.v1alpha1"
RUNTIME_SERVICE = f"{PACKAGE}.Runtime"
PLUGIN_SERVICE = f"{PACKAGE}.Plugin"

Side = Literal["runtime", "plugin"]


def _message_class(service: str, method: str, *, output: bool) -> type[Message]:
    desc = api.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods_by_name[method]
    cls: type[Message] = getattr(api, (desc.output_type if output else desc.input_type).name)
    return cls


class Peer:
    """See the module note. handlers maps a method of the served service to its coroutine function."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, side: Side,
                 handlers: Mapping[str, Callable[[Any], Awaitable[Message]]]) -> None:
        self.side = side
        self._mux = mux.Mux(reader, writer)
        serve_id, call_id = ((mux.RUNTIME_SERVICE_CONN, mux.PLUGIN_SERVICE_CONN) if side == "runtime"
                             else (mux.PLUGIN_SERVICE_CONN, mux.RUNTIME_SERVICE_CONN))
        self.served = RUNTIME_SERVICE if side == "runtime" else PLUGIN_SERVICE
        self.called = PLUGIN_SERVICE if side == "runtime" else RUNTIME_SERVICE
        table = {(self.served, m): (_message_class(self.served, m, output=False), fn)
                 for m, fn in handlers.items()}
        self._client = ttrpc.Client(self._mux.open(call_id))
        self._server = ttrpc.Server(self._mux.open(serve_id), table)
        self.closed = asyncio.Event()
        self._mux.on_close(self.closed.set)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def reason(self) -> str:
        return self._mux.reason

    def start(self) -> None:
        """Start reading; a protocol error on any loop closes the whole connection."""
        for coro in (self._mux.run(), self._client.run(), self._server.run()):
            task = asyncio.ensure_future(self._guard(coro))
            self._tasks.append(task)

    async def _guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except ttrpc.ProtocolError as exc:
            self._mux.close(f"protocol error: {exc}")
        except ttrpc.Closed:
            self._mux.close("connection closed")
        except asyncio.CancelledError:
            self._mux.close("connection closed")
            raise

    async def call(self, method: str, request: Message, timeout: float) -> Any:
        """Call method of the peer's service; see ttrpc.Client.call for what it raises."""
        cls = _message_class(self.called, method, output=True)
        return await self._client.call(self.called, method, request, cls, timeout)

    def close(self, reason: str = "closed") -> None:
        self._mux.close(reason)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its loops have ended."""
        await self.closed.wait()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["PLUGIN_SERVICE", "RUNTIME_SERVICE", "Peer", "Side"]
