"""Helpers shared by the end-to-end pod network tests: a CNI bed per test, pods on a daemon, reachability.

Traffic goes only to 127.0.0.1 and to the pods' own addresses (namespaces the daemon made for the test).
"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import cri
from tests.fixtures.cni import Testbed
from tests.fixtures.daemon import CribDaemon


def daemon_on(crib_factory: Callable[..., CribDaemon], bed: Testbed, **network: Any) -> CribDaemon:
    """A daemon whose only network config is the bed's (conf dir, plugin dirs, no default conflist)."""
    return crib_factory({"network": bed.network_config(**network)})


def pod_config(tag: str, *, ports: Sequence[api.PortMapping] = (), dns: api.DNSConfig | None = None,
               host_network: bool = False) -> api.PodSandboxConfig:
    """A kubelet-like pod (tests/fixtures/cri.py) with port mappings, DNS config or the node's network."""
    config = cri.pod_config(tag)
    config.port_mappings.extend(ports)
    if dns is not None:
        config.dns_config.CopyFrom(dns)
    if host_network:
        config.linux.security_context.namespace_options.network = api.NODE
    return config


def run_pod(daemon: CribDaemon, bed: Testbed, config: api.PodSandboxConfig) -> str:
    """RunPodSandbox; the id goes on the bed's list, so the leak check looks for rules naming it."""
    request = api.RunPodSandboxRequest(config=config)
    sid = str(daemon.runtime.RunPodSandbox(request, timeout=60).pod_sandbox_id)
    bed.sandbox_ids.append(sid)
    return sid


def pod_ips(daemon: CribDaemon, sid: str) -> list[str]:
    request = api.PodSandboxStatusRequest(pod_sandbox_id=sid)
    net = daemon.runtime.PodSandboxStatus(request, timeout=10).status.network
    return [net.ip, *(p.ip for p in net.additional_ips)] if net.ip else []


def pod_state(daemon: CribDaemon, sid: str) -> int:
    return int(daemon.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid),
                                               timeout=10).status.state)


def stop_pod(daemon: CribDaemon, sid: str) -> None:
    daemon.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)


def remove_pod(daemon: CribDaemon, sid: str) -> None:
    stop_pod(daemon, sid)
    daemon.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on now (hostPorts of the tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> str:
    """GET from the test process itself (the host's network namespace); no proxy, whatever the env says."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return str(response.read().decode())


def is_pinned_netns(path: Path) -> bool:
    """Whether path is a network namespace bound to a file (nsfs), not a plain leftover file."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def cache_entries(daemon: CribDaemon) -> list[str]:
    """The names of crib's CNI result cache entries (one per attachment DEL is still owed)."""
    results = daemon.root / "cni" / "results"
    return sorted(p.name for p in results.iterdir()) if results.is_dir() else []


__all__ = ["cache_entries", "daemon_on", "free_port", "http_get", "is_pinned_netns", "pod_config",
           "pod_ips", "pod_state", "remove_pod", "run_pod", "stop_pod"]
