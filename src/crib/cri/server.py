"""The gRPC server: both CRI services on a unix socket, with the request interceptor.

RPCs crib does not implement yet still get a method that answers UNIMPLEMENTED naming the RPC, so that
kubelet and crictl see a clear status instead of grpc's generic "Method not implemented!".
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc

from crib import errors
from crib._proto.runtime.v1 import api_pb2, api_pb2_grpc
from crib.cri.interceptors import instrumented_service

# 16 MiB for ExecSync output each way plus headroom; kubelet's own client allows the same.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

T = TypeVar("T", bound=type)


def _unimplemented(service: str, name: str) -> Any:
    async def method(self: Any, request: Any, context: Any) -> Any:
        raise errors.Unimplemented(f"{service}.{name} is not implemented by crib yet")

    method.__name__ = name
    method.__crib_unimplemented__ = True  # type: ignore[attr-defined]
    return method


def fill_unimplemented(service_name: str) -> Any:
    """Class decorator: give every RPC of the service that the class lacks an UNIMPLEMENTED answer."""

    def decorate(cls: T) -> T:
        service = api_pb2.DESCRIPTOR.services_by_name[service_name]
        for method in service.methods:
            if method.name not in cls.__dict__:
                setattr(cls, method.name, _unimplemented(service_name, method.name))
        return cls

    return decorate


def implemented_rpcs(servicer_cls: type) -> set[str]:
    """RPC names a servicer class really implements (for the architecture test and Status info)."""
    return {name for name, value in vars(servicer_cls).items()
            if callable(value) and not getattr(value, "__crib_unimplemented__", False)}


class _Registrar:
    """Stands in for the server while the generated add_*Servicer_to_server registers a service, so that
    every method handler is instrumented once, here, instead of by an interceptor on every call."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.services: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The generated code's own generic handler: replaced by the instrumented one below."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self._server.add_generic_rpc_handlers((instrumented_service(service, handlers),))
        self.services.append(service)


def build_server(runtime_servicer: Any, image_servicer: Any) -> grpc.aio.Server:
    """A grpc.aio server with both services registered; the caller binds and starts it."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    registrar = _Registrar(server)
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(runtime_servicer, registrar)
    api_pb2_grpc.add_ImageServiceServicer_to_server(image_servicer, registrar)
    if registrar.services != ["runtime.v1.RuntimeService", "runtime.v1.ImageService"]:
        raise RuntimeError(f"the generated gRPC code registered {registrar.services}; "
                           "regenerate it (make proto)")
    return server


__all__ = ["MAX_MESSAGE_BYTES", "build_server", "fill_unimplemented", "implemented_rpcs"]
