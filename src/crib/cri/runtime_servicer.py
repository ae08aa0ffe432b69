"""RuntimeService: validate, make one domain call, convert the result."""

from __future__ import annotations

import json
from typing import Any

import grpc

from crib import __version__
from crib import config as config_mod
from crib._proto.runtime.v1 import api_pb2 as api
from crib._proto.runtime.v1 import api_pb2_grpc
from crib.config import Config
from crib.cri.server import fill_unimplemented
from crib.network import NetworkAdmin, NoNetwork
from crib.runtime import Health

# kubelet refuses any other value (kuberuntime_manager: typedVersion.Version != kubeRuntimeAPIVersion).
KUBELET_API_VERSION = "0.1.0"
RUNTIME_NAME = "crib"
RUNTIME_API_VERSION = "v1"


@fill_unimplemented("RuntimeService")
class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):  # type: ignore[misc]
    def __init__(self, *, cfg: Config, health: Health, network: NetworkAdmin | None = None) -> None:
        self._cfg = cfg
        self._health = health
        self._network: NetworkAdmin = network or NoNetwork()

    async def Version(self, request: api.VersionRequest, context: grpc.aio.ServicerContext) -> Any:
        return api.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=__version__,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    async def Status(self, request: api.StatusRequest, context: grpc.aio.ServicerContext) -> Any:
        conditions = [
            api.RuntimeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in self._health.conditions()
        ]
        handlers = [api.RuntimeHandler(name="", features=api.RuntimeHandlerFeatures())] + [
            api.RuntimeHandler(name=name, features=api.RuntimeHandlerFeatures())
            for name in sorted(self._cfg.runtime.handlers)
        ]
        info: dict[str, str] = {}
        if request.verbose:
            # crictl parses every value as JSON.
            info["config"] = json.dumps(config_mod.to_dict(self._cfg))
            info.update(self._network.status_info())
        return api.StatusResponse(
            status=api.RuntimeStatus(conditions=conditions),
            info=info,
            runtime_handlers=handlers,
            features=api.RuntimeFeatures(),
        )

    async def UpdateRuntimeConfig(self, request: api.UpdateRuntimeConfigRequest,
                                  context: grpc.aio.ServicerContext) -> Any:
        await self._network.update_pod_cidr(request.runtime_config.network_config.pod_cidr)
        return api.UpdateRuntimeConfigResponse()

    async def RuntimeConfig(self, request: api.RuntimeConfigRequest,
                            context: grpc.aio.ServicerContext) -> Any:
        driver = api.SYSTEMD if self._cfg.runtime.cgroup_driver == "systemd" else api.CGROUPFS
        return api.RuntimeConfigResponse(linux=api.LinuxRuntimeConfiguration(cgroup_driver=driver))


__all__ = ["KUBELET_API_VERSION", "RuntimeServicer"]
