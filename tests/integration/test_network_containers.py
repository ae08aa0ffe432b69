"""Containers on a real CNI bridge network: an HTTP server reached by pod IP and by hostPort on 127.0.0.1, a
second container of the same pod reaching it on 127.0.0.1 (the WordPress -> MySQL pattern of the crictl
walkthrough), the pod's DNS config read from inside a container, and the order of a pod's teardown.

The server is busybox `httpd` from the test image (tests/fixtures/images.py); clients are busybox `wget` in
containers (ExecSync) and urllib in the test process. Traffic goes only to 127.0.0.1 and to the test's pods.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed
from tests.fixtures.cri import Pod, container_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon
from tests.integration.net_helpers import (
    cache_entries,
    daemon_on,
    free_port,
    http_get,
    is_pinned_netns,
    pod_config,
    pod_ips,
)

PAGE = "served by the web container"
HTTPD = ["sh", "-c", f"mkdir -p /www && echo '{PAGE}' > /www/index.html && exec httpd -f -p 8080 -h /www"]
SLEEP = ["sleep", "1000"]


def _wget(pod: Pod, cid: str, url: str) -> str:
    """The body busybox wget fetches inside container cid ("" if it failed)."""
    done = pod.exec(cid, "wget", "-q", "-O", "-", url, timeout=10)
    return done.stdout.decode() if done.exit_code == 0 else ""


def _pod(daemon: CribDaemon, bed: Testbed, config: api.PodSandboxConfig) -> Pod:
    pod = Pod(daemon, config)
    bed.sandbox_ids.append(pod.id)
    return pod


@pytest.fixture
def busybox(images: img.Catalogue) -> str:
    return images.reference(img.BUSYBOX)


@pytest.mark.parametrize("host_ip", ["", "127.0.0.1"], ids=["any-host-ip", "host-ip-127.0.0.1"])
def test_a_container_serves_http_by_pod_ip_host_port_and_localhost(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str, busybox: str,
        host_ip: str) -> None:
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    pull(daemon, busybox)
    host_port = free_port()
    web = _pod(daemon, bed, pod_config(session_tag, ports=[
        api.PortMapping(protocol=api.TCP, container_port=8080, host_port=host_port, host_ip=host_ip)]))
    client = _pod(daemon, bed, pod_config(session_tag))
    ips: list[str] = []
    try:
        server = web.run(container_config(busybox, "httpd", command=HTTPD))
        # The WordPress -> MySQL pattern: a second container of the same pod, on the pod's loopback.
        sidecar = web.run(container_config(busybox, "sidecar", command=SLEEP))
        got = wait_for(lambda: _wget(web, sidecar, "http://127.0.0.1:8080/"), timeout=15,
                       what="httpd to answer on the pod's 127.0.0.1")
        assert got == PAGE + "\n"
        assert web.status(server).state == api.CONTAINER_RUNNING

        (web_ip,) = pod_ips(daemon, web.id)
        (client_ip,) = pod_ips(daemon, client.id)
        ips = [web_ip, client_ip]
        assert web_ip != client_ip
        peer = client.run(container_config(busybox, "client", command=SLEEP))
        assert _wget(client, peer, f"http://{web_ip}:8080/") == PAGE + "\n"  # pod to pod over the bridge
        assert http_get(f"http://{web_ip}:8080/") == PAGE + "\n"  # the node to the pod
        assert http_get(f"http://127.0.0.1:{host_port}/") == PAGE + "\n"  # hostPort on the node's loopback
    finally:
        web.remove()
        client.remove()
    assert bed.leaks(ips) == []
    assert cache_entries(daemon) == []


def test_the_pods_dns_config_hostname_and_ip_are_what_a_container_sees(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str, busybox: str) -> None:
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    pull(daemon, busybox)
    dns = api.DNSConfig(servers=["10.96.0.10", "fd00:96::a"],
                        searches=["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                        options=["ndots:5", "timeout:2"])
    pod = _pod(daemon, bed, pod_config(session_tag, dns=dns))
    ips: list[str] = []
    try:
        cid = pod.run(container_config(busybox, command=SLEEP))
        ips = pod_ips(daemon, pod.id)
        resolv = pod.exec(cid, "cat", "/etc/resolv.conf").stdout.decode()
        assert resolv == ("nameserver 10.96.0.10\nnameserver fd00:96::a\n"
                          "search ns1.svc.cluster.local svc.cluster.local cluster.local\n"
                          "options ndots:5 timeout:2\n")
        hostname = pod.config.hostname
        assert pod.exec(cid, "hostname").stdout.decode() == hostname + "\n"
        hosts = pod.exec(cid, "cat", "/etc/hosts").stdout.decode()
        assert f"{ips[0]}\t{hostname}\n" in hosts
        assert "127.0.0.1\tlocalhost\n" in hosts
        # The container is in the pod's network namespace: eth0 carries the IP the pod reports.
        assert f"inet {ips[0]}/" in pod.exec(cid, "ip", "-4", "addr", "show", "eth0").stdout.decode()
    finally:
        pod.remove()
    assert bed.leaks(ips) == []


def test_stop_stops_the_containers_then_releases_the_network_and_keeps_the_namespace(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str, busybox: str) -> None:
    """StopPodSandbox: containers stopped, CNI DEL, netns still pinned; RemovePodSandbox: then unpinned."""
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    pull(daemon, busybox)
    pod = _pod(daemon, bed, pod_config(session_tag, ports=[
        api.PortMapping(protocol=api.TCP, container_port=8080, host_port=free_port())]))
    netns = daemon.runroot / "netns" / pod.id
    cid = pod.run(container_config(busybox, command=HTTPD))
    ips = pod_ips(daemon, pod.id)
    try:
        pod.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
        assert pod.status(cid).state == api.CONTAINER_EXITED
        assert bed.leaks(ips) == []
        assert cache_entries(daemon) == []
        assert is_pinned_netns(netns)
        # A stopped container can still be inspected, and the pod's namespace is still the one it had.
        status = pod.rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status
        assert status.state == api.SANDBOX_NOTREADY
    finally:
        pod.remove()
    assert not netns.exists()
    assert bed.leaks(ips) == []
