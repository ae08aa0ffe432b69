"""A CRI client for the command line, usable against any runtime (crib, containerd, CRI-O).

The endpoint is chosen the way crictl chooses it, so a node's existing /etc/crictl.yaml works unchanged:
--runtime-endpoint, then $CONTAINER_RUNTIME_ENDPOINT, then runtime-endpoint in /etc/crictl.yaml, then
crib's default socket.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml

from crib._proto.runtime.v1 import api_pb2_grpc

DEFAULT_ENDPOINT = "unix:///run/crib/crib.sock"
CRICTL_CONFIG = "/etc/crictl.yaml"
ENV_ENDPOINT = "CONTAINER_RUNTIME_ENDPOINT"
ENV_IMAGE_ENDPOINT = "IMAGE_SERVICE_ENDPOINT"

R = TypeVar("R")


class ClientError(Exception):
    """A CRI call failed; the message is ready for the user."""


def normalize(endpoint: str) -> str:
    """Accept unix://PATH or a bare socket path, as crictl does."""
    if endpoint.startswith("unix://"):
        return endpoint
    if "://" in endpoint:
        raise ClientError(f"endpoint {endpoint!r}: only unix:// sockets are supported")
    return "unix://" + endpoint


def _crictl_yaml(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise ClientError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoints:
    runtime: str
    image: str
    source: str


def resolve(runtime_flag: str | None, image_flag: str | None = None,
            crictl_config: str = CRICTL_CONFIG) -> Endpoints:
    """Pick the runtime and image endpoints (see the module note for the order)."""
    conf = _crictl_yaml(crictl_config)
    if runtime_flag:
        runtime, source = runtime_flag, "--runtime-endpoint"
    elif os.environ.get(ENV_ENDPOINT):
        runtime, source = os.environ[ENV_ENDPOINT], f"${ENV_ENDPOINT}"
    elif conf.get("runtime-endpoint"):
        runtime, source = str(conf["runtime-endpoint"]), crictl_config
    else:
        runtime, source = DEFAULT_ENDPOINT, "crib's default"
    image = image_flag or os.environ.get(ENV_IMAGE_ENDPOINT) or conf.get("image-endpoint") or runtime
    return Endpoints(runtime=normalize(runtime), image=normalize(str(image)), source=source)


class Client:
    """Stubs for both services over one channel each, with a per-call timeout and readable errors."""

    def __init__(self, endpoints: Endpoints, timeout: float) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self._channel = grpc.insecure_channel(endpoints.runtime, options=opts)
        self._image_channel = (self._channel if endpoints.image == endpoints.runtime
                               else grpc.insecure_channel(endpoints.image, options=opts))
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.images = api_pb2_grpc.ImageServiceStub(self._image_channel)

    def call(self, rpc: Callable[..., R], request: Any, *, timeout: float | None = None) -> R:
        """Invoke one unary RPC; a gRPC failure becomes a ClientError naming the endpoint."""
        try:
            return rpc(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise ClientError(self._describe(exc)) from None

    def _describe(self, exc: grpc.RpcError) -> str:
        code = exc.code()
        detail = exc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return (f"cannot reach the runtime at {self.endpoints.runtime} (from {self.endpoints.source}): "
                    f"{detail}. Is the daemon running? Choose another with -r/--runtime-endpoint.")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return (f"the runtime at {self.endpoints.runtime} did not answer within {self.timeout:g}s: "
                    f"{detail}")
        return f"{code.name}: {detail}"

    def close(self) -> None:
        self._channel.close()
        if self._image_channel is not self._channel:
            self._image_channel.close()


__all__ = ["DEFAULT_ENDPOINT", "Client", "ClientError", "Endpoints", "normalize", "resolve"]
