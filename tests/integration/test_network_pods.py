"""Pod networking end to end, pods only: RunPodSandbox/StopPodSandbox/RemovePodSandbox through a crib daemon
with the real CNI plugins (containers in the pods: test_network_containers.py; failures and the leak test:
test_network_faults.py).

Every test uses a bed of its own (bridge named with the session tag, a free subnet, its own conf and lease
dirs), checks the network leak list (iptables rules, veths, host-local leases) after removing its pods, and
the crib_factory fixture checks the daemon's files, mounts and namespace pins.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures.cni import Testbed
from tests.fixtures.cri import code_of
from tests.fixtures.daemon import CribDaemon
from tests.integration.net_helpers import (
    cache_entries,
    daemon_on,
    free_port,
    is_pinned_netns,
    pod_config,
    pod_ips,
    pod_state,
    remove_pod,
    run_pod,
    stop_pod,
)


def test_stop_releases_the_network_and_remove_unpins_the_namespace(crib_factory: Callable[..., CribDaemon],
                                                                   bed: Testbed, session_tag: str) -> None:
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    ports = [api.PortMapping(protocol=api.UDP, container_port=53, host_port=free_port()),
             api.PortMapping(protocol=api.TCP, container_port=80, host_port=free_port())]
    sid = run_pod(daemon, bed, pod_config(session_tag, ports=ports))
    ips = pod_ips(daemon, sid)
    netns = daemon.runroot / "netns" / sid
    assert len(ips) == 1
    assert ipaddress.ip_address(ips[0]) in bed.subnet
    assert bed.leaks(ips), "a running pod holds a lease, a veth and port mapping rules"
    assert len(cache_entries(daemon)) == 1

    stop_pod(daemon, sid)
    # StopPodSandbox alone gives back the address, the veth and the rules (ipMasq included: bridge found
    # the addresses in the still-pinned namespace), and the namespace stays pinned until RemovePodSandbox.
    assert bed.leaks(ips) == []
    assert cache_entries(daemon) == []
    assert is_pinned_netns(netns)
    assert pod_state(daemon, sid) == api.SANDBOX_NOTREADY
    assert pod_ips(daemon, sid) == []

    stop_pod(daemon, sid)  # again: nothing left to DEL, no error
    daemon.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    assert not netns.exists()
    assert bed.leaks(ips) == []


def test_host_network_pods_run_while_the_network_is_not_ready(crib_factory: Callable[..., CribDaemon],
                                                              bed: Testbed, session_tag: str) -> None:
    daemon = daemon_on(crib_factory, bed)  # an empty conf dir: NetworkReady=false
    status = daemon.runtime.Status(api.StatusRequest(), timeout=10).status
    network = next(c for c in status.conditions if c.type == "NetworkReady")
    assert (network.status, network.reason) == (False, "NetworkPluginNotReady")
    code, details = None, ""
    try:
        run_pod(daemon, bed, pod_config(session_tag))
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith("NetworkPluginNotReady: no CNI network config found in")
    assert list((daemon.runroot / "netns").iterdir()) == []  # the failed pod's namespace went with it
    sid = run_pod(daemon, bed, pod_config(session_tag, host_network=True))
    assert pod_state(daemon, sid) == api.SANDBOX_READY
    assert pod_ips(daemon, sid) == []
    assert cache_entries(daemon) == []
    remove_pod(daemon, sid)


def test_dual_stack_pod_reports_both_families(crib_factory: Callable[..., CribDaemon], bed: Testbed,
                                              session_tag: str) -> None:
    rng = random.SystemRandom()
    v6 = ipaddress.IPv6Network(
        f"fd{rng.randrange(256):02x}:{rng.randrange(65536):x}:{rng.randrange(65536):x}::/64")
    # No gateway: it would switch on IPv6 forwarding host-wide, which a test must not do.
    bridge = bed.bridge_plugin(isGateway=False, ipMasq=False, ipam={
        "type": "host-local", "dataDir": str(bed.data_dir),
        "ranges": [[{"subnet": str(v6)}], [{"subnet": str(bed.subnet)}]]})
    bed.write_conflist([bridge, {"type": "loopback"}])
    daemon = daemon_on(crib_factory, bed)
    sid = run_pod(daemon, bed, pod_config(session_tag))
    ips = pod_ips(daemon, sid)
    assert len(ips) == 2
    assert ipaddress.ip_address(ips[0]) in bed.subnet  # IPv4 first, whatever order the ranges had
    assert ipaddress.ip_address(ips[1]) in v6
    hosts = (daemon.runroot / "sandboxes" / sid / "hosts").read_text()
    assert all(ip in hosts for ip in ips)
    remove_pod(daemon, sid)
    assert bed.leaks(ips) == []


def test_a_host_port_is_held_by_its_pod_until_stop(crib_factory: Callable[..., CribDaemon], bed: Testbed,
                                                   session_tag: str) -> None:
    """Two pods claiming one hostPort: the second is refused naming the first; a process on the node is
    refused too; the port is held across a daemon restart and given back at StopPodSandbox."""
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    port = free_port()
    mapping = [api.PortMapping(protocol=api.TCP, container_port=80, host_port=port)]
    first = run_pod(daemon, bed, pod_config(session_tag, ports=mapping))

    code, message = code_of(lambda: run_pod(daemon, bed, pod_config(session_tag, ports=mapping)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"hostPort {port}/tcp on all addresses is already held by pod {first}" in message
    with socket.socket() as squatter, pytest.raises(OSError, match="in use"):
        squatter.bind(("127.0.0.1", port))  # crib holds it against the node's processes too

    daemon.kill()  # the held socket dies with the daemon; the restarted one takes the port again
    daemon.start()
    with socket.socket() as squatter, pytest.raises(OSError, match="in use"):
        squatter.bind(("127.0.0.1", port))
    code, message = code_of(lambda: run_pod(daemon, bed, pod_config(session_tag, ports=mapping)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    stop_pod(daemon, first)
    second = run_pod(daemon, bed, pod_config(session_tag, ports=mapping))  # free again after the stop
    remove_pod(daemon, second)
    daemon.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=first), timeout=60)
    assert daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items == []
    assert bed.leaks() == []


def test_a_host_port_in_use_on_the_node_fails_the_pod_and_leaves_nothing(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str) -> None:
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        mapping = [api.PortMapping(protocol=api.TCP, container_port=80, host_port=port)]
        code, message = code_of(lambda: run_pod(daemon, bed, pod_config(session_tag, ports=mapping)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"hostPort {port}/tcp on all addresses is already in use on the node" in message
    assert daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items == []
    assert cache_entries(daemon) == []
    assert bed.leaks() == []
