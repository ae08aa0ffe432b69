"""Pods on a real CNI bridge network through the daemon: IPs reported, pod-to-pod traffic, DEL on stop."""

from __future__ import annotations

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed
from tests.fixtures.cri import Pod, container_config, pod_config, pull, wait_for


def test_pods_get_ips_talk_to_each_other_and_release_them_on_stop(crib_factory, bed: Testbed,
                                                                   images: img.Catalogue,
                                                                   session_tag: str) -> None:
    bed.write_conflist()
    crib = crib_factory({"network": bed.network_config()})
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    server, client = (Pod(crib, pod_config(session_tag, name)) for name in ("server", "client"))
    bed.sandbox_ids += [server.id, client.id]
    ips = []
    try:
        for pod in (server, client):
            status = pod.rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status
            assert status.network.ip, "a pod on a bridge network has an IP"
            ips.append(status.network.ip)
            hosts = (crib.runroot / "sandboxes" / pod.id / "hosts").read_text()
            assert f"{status.network.ip}\t{pod.config.hostname}" in hosts
        cid = server.run(container_config(busybox, command=["sh", "-c",
                                                            "while :; do echo pong | nc -l -p 8080; done"]))
        peer = client.run(container_config(busybox, command=["sleep", "1000"]))
        got = wait_for(lambda: client.exec(peer, "sh", "-c", f"nc {ips[0]} 8080 < /dev/null").stdout,
                       timeout=15, what="the client to reach the server pod")
        assert got == b"pong\n"
        assert cid
        server.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=server.id))
        status = server.rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=server.id)).status
        assert status.state == api.SANDBOX_NOTREADY
        assert not status.network.ip
        assert ips[0] not in "".join(bed.leaks())  # its lease went with the stop (CNI DEL)
    finally:
        server.remove()
        client.remove()
    assert not bed.leaks(ips)
