"""The gRPC server: both CRI services on a unix socket, with the request interceptor.

RPCs crib does not implement yet still get a method that answers UNIMPLEMENTED naming the RPC, so that
kubelet and crictl see a clear status instead of grpc's generic "Method not implemented!".
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc

from crib import errors
from crib._proto.runtime.v1 import api_pb2
from crib.cri.interceptors import instrumented_handlers

# 16 MiB for ExecSync output each way plus headroom; kubelet's own client allows the same.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

T = TypeVar("T", bound=type)
RUNTIME_SERVICE = "runtime.v1.RuntimeService"
IMAGE_SERVICE = "runtime.v1.ImageService"


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


def _method_handlers(servicer: Any, service_name: str) -> dict[str, grpc.RpcMethodHandler]:
    """servicer's method handlers for one CRI service, built from the service's descriptor.

    What the generated api_pb2_grpc.add_*Servicer_to_server would build, without importing that module:
    its stubs, servicer bases and experimental helpers are code a serving daemon never runs (the CLI's
    client still uses its stubs); with the lazy zstandard, idle RSS -0.35 MiB (bench/README.md, issue 13).
    """
    service = api_pb2.DESCRIPTOR.services_by_name[service_name]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request = getattr(api_pb2, method.input_type.name)
        response = getattr(api_pb2, method.output_type.name)
        if method.client_streaming:  # CRI has none; a new one must be wired here on purpose
            raise RuntimeError(f"{service_name}.{method.name} is client-streaming; crib does not serve that")
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming \
            else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=request.FromString,
                                     response_serializer=response.SerializeToString)
    return handlers


def build_server(runtime_servicer: Any, image_servicer: Any) -> grpc.aio.Server:
    """A grpc.aio server with both services registered; the caller binds and starts it.

    Every method handler is instrumented once, here, instead of by an interceptor on every call, and
    registered with grpc's core by its full name (add_registered_method_handlers: grpc matches the method
    itself rather than asking each generic handler; no per-call difference was measurable on this VM),
    with the generic handler as the fallback the generated code also installs.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    for servicer, name in ((runtime_servicer, RUNTIME_SERVICE), (image_servicer, IMAGE_SERVICE)):
        add_service(server, name, _method_handlers(servicer, name.rpartition(".")[2]))
    return server


def add_service(server: grpc.aio.Server, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    """Register one service's handlers, each instrument()ed (logged, errors mapped to statuses)."""
    wrapped = instrumented_handlers(handlers)
    server.add_registered_method_handlers(service, wrapped)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))


__all__ = ["IMAGE_SERVICE", "MAX_MESSAGE_BYTES", "RUNTIME_SERVICE", "add_service", "build_server",
           "fill_unimplemented", "implemented_rpcs"]
