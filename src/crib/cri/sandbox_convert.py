"""Pod records -> CRI pod messages (the servicer's conversions, kept out of the servicer)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cri import wire
from crib.state.records import SandboxRecord

_MODE = {"pod": api.POD, "container": api.CONTAINER, "node": api.NODE, "target": api.TARGET}


def _meta(rec: SandboxRecord) -> api.PodSandboxMetadata:
    m = rec.meta
    return api.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def _state(rec: SandboxRecord) -> api.PodSandboxState:
    return api.SANDBOX_READY if rec.ready else api.SANDBOX_NOTREADY


def pod(rec: SandboxRecord) -> api.PodSandbox:
    """ListPodSandbox item."""
    return api.PodSandbox(id=rec.id, metadata=_meta(rec), state=_state(rec), created_at=rec.created_at,
                          labels=rec.labels, annotations=rec.annotations,
                          runtime_handler=rec.runtime_handler)


def status(rec: SandboxRecord) -> api.PodSandboxStatus:
    """PodSandboxStatus.status."""
    network = api.PodSandboxNetworkStatus()
    if rec.ips and rec.ready:
        network.ip = rec.ips[0]
        network.additional_ips.extend(api.PodIP(ip=ip) for ip in rec.ips[1:])
    options = api.NamespaceOption(network=_MODE[rec.network_mode], pid=_MODE[rec.pid_mode],
                                  ipc=_MODE[rec.ipc_mode], target_id=rec.pid_target)
    return api.PodSandboxStatus(
        id=rec.id, metadata=_meta(rec), state=_state(rec), created_at=rec.created_at, network=network,
        linux=api.LinuxPodSandboxStatus(namespaces=api.Namespace(options=options)),
        labels=rec.labels, annotations=rec.annotations, runtime_handler=rec.runtime_handler)


_ITEMS: wire.Cache[SandboxRecord] = wire.Cache(pod)
_STATUSES: wire.Cache[SandboxRecord] = wire.Cache(status)


def list_response(recs: list[SandboxRecord], *, complete: bool) -> bytes:
    """ListPodSandboxResponse, serialized (see cri/wire.py); complete = recs are all the pods."""
    return wire.list_reply(_ITEMS, recs, complete=complete)


def status_response(rec: SandboxRecord, timestamp: int) -> bytes:
    """PodSandboxStatusResponse without verbose info, serialized."""
    return wire.field(1, _STATUSES.get(rec.id, rec)) + wire.integer(4, timestamp)


def verbose_info(rec: SandboxRecord) -> dict[str, str]:
    """PodSandboxStatus verbose info: one JSON document under "info", as crictl inspectp expects."""
    info: dict[str, Any] = {
        "id": rec.id, "name": rec.name, "phase": rec.phase.value, "runtimeHandler": rec.runtime_handler,
        "hostname": rec.hostname, "cgroupParent": rec.cgroup_parent,
        "namespaces": {"network": rec.netns_path or "host", "ipc": rec.ipcns_path or "host",
                       "uts": rec.utsns_path or "host",
                       "pid": f"/proc/{rec.infra_pid}/ns/pid" if rec.infra_pid else rec.pid_mode},
        "infraPid": rec.infra_pid, "shm": rec.shm_path, "ips": list(rec.ips), "sysctls": rec.sysctls,
        "portMappings": [{"protocol": p.protocol, "containerPort": p.container_port, "hostPort": p.host_port,
                          "hostIp": p.host_ip} for p in rec.port_mappings],
        "createdAt": rec.created_at, "stoppedAt": rec.stopped_at,
        "resources": dataclasses.asdict(rec.resources) if rec.resources is not None else None,
    }
    return {"info": json.dumps(info, sort_keys=True)}


def state_filter(value: api.PodSandboxStateValue | None) -> bool | None:
    """ListPodSandbox's state filter as "must be ready?" (None = no filter)."""
    if value is None:
        return None
    return value.state == api.SANDBOX_READY


__all__ = ["list_response", "pod", "state_filter", "status", "status_response", "verbose_info"]
