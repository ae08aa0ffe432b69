"""The CRI services on crib's own gRPC server (cri/h2server.py), every method instrumented.

RPCs crib does not implement yet still get a method that answers UNIMPLEMENTED naming the RPC, so that
kubelet and crictl see a clear status instead of a generic "method not found".
"""

from __future__ import annotations

from typing import Any, TypeVar

from crib import errors
from crib._proto.runtime.v1 import api_pb2
from crib.cri.h2server import Method, Server
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


# The calls kubelet polls, answered from memory: started from the frame that completed the request
# (h2server.Method.eager). Their handlers must not use asyncio.timeout() or current_task() before their
# first await; test_h2server's eager tests and the integration suite hold them to that.
EAGER = frozenset({"Version", "PodSandboxStatus", "ContainerStatus", "ListPodSandbox", "ListContainers",
                   "ImageStatus", "ListImages"})


def _methods(servicer: Any, service_name: str) -> dict[str, Method]:
    """servicer's methods for one CRI service, with their codecs, built from the service's descriptor
    (what generated grpc code would register, without importing grpc)."""
    service = api_pb2.DESCRIPTOR.services_by_name[service_name]
    methods: dict[str, Method] = {}
    for method in service.methods:
        request = getattr(api_pb2, method.input_type.name)
        response = getattr(api_pb2, method.output_type.name)
        if method.client_streaming:  # CRI has none; a new one must be wired here on purpose
            raise RuntimeError(f"{service_name}.{method.name} is client-streaming; crib does not serve that")
        methods[method.name] = Method(handler=getattr(servicer, method.name), deserialize=request.FromString,
                                      serialize=response.SerializeToString, streaming=method.server_streaming,
                                      eager=method.name in EAGER)
    return methods


def build_server(runtime_servicer: Any, image_servicer: Any) -> Server:
    """A server with both CRI services registered; the caller starts it on the socket."""
    server = Server(max_message=MAX_MESSAGE_BYTES)
    for servicer, name in ((runtime_servicer, RUNTIME_SERVICE), (image_servicer, IMAGE_SERVICE)):
        add_service(server, name, _methods(servicer, name.rpartition(".")[2]))
    return server


def add_service(server: Server, service: str, handlers: dict[str, Method]) -> None:
    """Register one service's methods, each instrument()ed (logged, errors mapped to statuses)."""
    server.add_service(service, instrumented_handlers(handlers))


__all__ = ["IMAGE_SERVICE", "MAX_MESSAGE_BYTES", "RUNTIME_SERVICE", "add_service", "build_server",
           "fill_unimplemented", "implemented_rpcs"]
