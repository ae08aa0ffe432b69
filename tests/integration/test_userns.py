"""User-namespaced pods (hostUsers: false) through the daemon: maps, ownership through ID-mapped mounts,
the pod's files, volumes, exec, stats, sysctls, a hostPort, a shared PID namespace, a restart, refusals."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.streaming import client
from crib.system import ns
from tests.fixtures import images as img
from tests.fixtures import leaks
from tests.fixtures.cni import Testbed
from tests.fixtures.cri import Pod, attach_line, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon
from tests.integration.net_helpers import daemon_on, free_port, http_get

HOST_UID = 200000  # the pod's root on the host: ids 0..65535 map to 200000..265535
HOST_GID = 300000  # gids map elsewhere, to tell them apart
LENGTH = 65536
SLEEP = ["sleep", "1000"]


def userns_option(uid: int = HOST_UID, gid: int = HOST_GID, **modes: int) -> api.NamespaceOption:
    return api.NamespaceOption(pid=modes.pop("pid", api.CONTAINER), userns_options=api.UserNamespace(
        mode=api.POD, uids=[api.IDMapping(container_id=0, host_id=uid, length=LENGTH)],
        gids=[api.IDMapping(container_id=0, host_id=gid, length=LENGTH)]), **modes)


def userns_pod(daemon: CribDaemon, tag: str, log_dir: Path, **kw: object) -> Pod:
    config = pod_config(tag, log_dir=log_dir, namespace_options=userns_option())
    for key, value in kw.items():
        if key == "ports":
            config.port_mappings.extend(value)  # type: ignore[arg-type]
        elif key == "sysctls":
            config.linux.sysctls.update(value)  # type: ignore[arg-type]
        elif key == "pid":
            config.linux.security_context.namespace_options.pid = value  # type: ignore[assignment]
    return Pod(daemon, config)


def in_pod(pod: Pod, image: str, command: list[str] | None = None, **kw: object) -> api.ContainerConfig:
    """A container as kubelet sends it in a user-namespaced pod: the pod's namespace options repeated."""
    config = container_config(image, command=command or SLEEP, **kw)  # type: ignore[arg-type]
    config.linux.security_context.namespace_options.CopyFrom(pod.config.linux.security_context.namespace_options)
    return config


def out(pod: Pod, cid: str, *cmd: str) -> str:
    done = pod.exec(cid, *cmd)
    assert done.exit_code == 0, done.stderr.decode()
    return done.stdout.decode()


def reachable(path: Path) -> None:
    """Make path's directories searchable by others (o+x): a user-namespaced pod's root, an unprivileged
    host uid, must reach the daemon's runroot by name, and pytest makes its temporary directories 0700."""
    for d in (path, *path.parents):
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(d, mode | stat.S_IXOTH)


@pytest.fixture
def crib(crib_factory: Callable[..., CribDaemon], tmp_path: Path) -> CribDaemon:
    reachable(tmp_path)
    return crib_factory()


@pytest.fixture
def busybox(crib: CribDaemon, images: img.Catalogue) -> str:
    return pull(crib, images.reference(img.BUSYBOX))


@pytest.fixture
def pod(crib: CribDaemon, session_tag: str, tmp_path: Path) -> Iterator[Pod]:
    p = userns_pod(crib, session_tag, tmp_path / "logs")
    yield p
    p.remove()


def test_status_reports_user_namespaces(crib: CribDaemon) -> None:
    status = crib.runtime.Status(api.StatusRequest(verbose=True))
    assert [h.features.user_namespaces for h in status.runtime_handlers] == [True, True]
    assert '"userNamespaces": true' in status.info["runtimeHandlerFeatures"]


def test_a_user_namespaced_pod(crib: CribDaemon, pod: Pod, busybox: str, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "maps.log"
    first = pod.run(in_pod(pod, busybox, ["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                                          "echo written > /in-rootfs; exec sleep 1000"], log_path="maps.log"))
    wait_for(lambda: log.exists() and "stdout F 0\n" in log.read_text(), what="the container's output")
    lines = [line.split(" ", 3)[3].split() for line in log.read_text().splitlines()]
    assert lines[:2] == [["0", str(HOST_UID), str(LENGTH)], ["0", str(HOST_GID), str(LENGTH)]]

    sid = pod.id
    userns = crib.runroot / "userns" / sid
    # Its network, IPC and UTS namespaces belong to the pod's user namespace, not the node's.
    for kind in ("netns", "ipcns", "utsns"):
        assert ns.owner(crib.runroot / kind / sid) == ns.identity(userns), kind
    assert ns.identity(f"/proc/{_pid(pod, first)}/ns/user") == ns.identity(userns)

    # Image files (root-owned on disk) are the pod root's; what the container writes is its own.
    assert out(pod, first, "stat", "-c", "%u:%g", "/etc/passwd", "/bin", "/in-rootfs").split() == ["0:0"] * 3
    upper = crib.root / "containers" / first / "upper" / "in-rootfs"
    assert (upper.stat().st_uid, upper.stat().st_gid) == (HOST_UID, HOST_GID)
    layer_file = next((crib.root / "layers").glob("*/etc/passwd"))
    assert layer_file.stat().st_uid == 0  # the image layer itself is untouched
    out(pod, first, "sh", "-c", "echo changed >> /etc/passwd")  # copy-up of a lower file
    assert (crib.root / "containers" / first / "upper" / "etc" / "passwd").stat().st_uid == HOST_UID
    assert layer_file.read_text() == img.PASSWD

    # The pod's files are usable by its root.
    assert out(pod, first, "stat", "-c", "%u:%g", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
               "/dev/shm").split() == ["0:0"] * 4
    out(pod, first, "sh", "-c", "echo '10.0.0.1 extra' >> /etc/hosts && touch /dev/shm/x")

    # A second container shares the pod's user namespace; given CAP_NET_ADMIN, its root may change the
    # pod's network (owned by the pod's user namespace), which it could not do to the node's.
    admin = in_pod(pod, busybox)
    admin.linux.security_context.capabilities.add_capabilities.append("NET_ADMIN")
    second = pod.run(admin)
    assert out(pod, second, "cat", "/proc/self/uid_map").split() == ["0", str(HOST_UID), str(LENGTH)]
    out(pod, second, "ip", "link", "set", "dev", "lo", "mtu", "1280")
    assert "mtu 1280" in out(pod, first, "ip", "link", "show", "lo")
    stats = pod.rt.ContainerStats(api.ContainerStatsRequest(container_id=second)).stats
    assert stats.memory.working_set_bytes.value > 0


def _pid(pod: Pod, cid: str) -> int:
    info = pod.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])


def test_volumes_are_id_mapped_as_kubelet_asks(crib: CribDaemon, pod: Pod, busybox: str,
                                                tmp_path: Path) -> None:
    """kubelet gives a user-namespaced pod's volumes the pod's mappings: the pod's root sees root-owned
    files as its own and writes files the node sees as root's; a volume without mappings stays foreign."""
    mapped, plain = tmp_path / "mapped", tmp_path / "plain"
    for d in (mapped, plain):
        d.mkdir()
        (d / "secret").write_text("only root may read this\n")
        os.chmod(d / "secret", 0o600)
    maps = pod.config.linux.security_context.namespace_options.userns_options
    config = in_pod(pod, busybox, mounts=[
        api.Mount(container_path="/mapped", host_path=str(mapped), uidMappings=maps.uids,
                  gidMappings=maps.gids),
        api.Mount(container_path="/plain", host_path=str(plain))])
    cid = pod.run(config)
    assert out(pod, cid, "cat", "/mapped/secret") == "only root may read this\n"
    assert out(pod, cid, "stat", "-c", "%u:%g", "/mapped/secret") == "0:0\n"
    out(pod, cid, "sh", "-c", "echo hi > /mapped/new && mkdir /mapped/dir && chown 1000:1000 /mapped/dir")
    assert ((mapped / "new").stat().st_uid, (mapped / "new").stat().st_gid) == (0, 0)
    assert (mapped / "dir").stat().st_uid == 1000  # container uid 1000 is on-disk uid 1000, as without userns
    assert out(pod, cid, "stat", "-c", "%u", "/plain/secret") == "65534\n"  # unmapped: nobody
    assert pod.exec(cid, "cat", "/plain/secret").exit_code != 0
    assert leaks.mounts_under(crib.runroot / "containers" / cid / "idmapped")
    pod.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    assert leaks.mounts_under(crib.runroot / "containers") == []


def test_image_volume_in_a_user_namespaced_pod(crib: CribDaemon, pod: Pod, busybox: str) -> None:
    config = in_pod(pod, busybox, mounts=[api.Mount(container_path="/img", readonly=True,
                                                    image=api.ImageSpec(image=busybox))])
    cid = pod.run(config)
    assert out(pod, cid, "stat", "-c", "%u:%g", "/img/etc/passwd", "/img/root").split() == ["0:0", "0:0"]
    assert out(pod, cid, "ls", "/img/root") == ""  # 0700 root's: readable by the pod's root


def test_shared_pid_namespace_sysctls_restart(crib: CribDaemon, session_tag: str, busybox: str,
                                              tmp_path: Path) -> None:
    pod = userns_pod(crib, session_tag, tmp_path / "logs", pid=api.POD,
                     sysctls={"net.ipv4.ping_group_range": "0 1000", "kernel.shm_rmid_forced": "1"})
    try:
        cid = pod.run(in_pod(pod, busybox))
        assert out(pod, cid, "cat", "/proc/sys/net/ipv4/ping_group_range").split() == ["0", "1000"]
        assert out(pod, cid, "cat", "/proc/sys/kernel/shm_rmid_forced") == "1\n"
        procs = out(pod, cid, "ps", "-o", "pid,user,args")
        assert "catatonit -P" in procs  # the PID-namespace holder, pid 1 of the pod, runs in the userns
        assert out(pod, cid, "cat", "/proc/1/uid_map").split() == ["0", str(HOST_UID), str(LENGTH)]
        crib.restart()
        assert out(pod, cid, "id", "-u") == "0\n"
        assert pod.status(cid).state == api.CONTAINER_RUNNING
    finally:
        pod.remove()
    assert list((crib.runroot / "userns").iterdir()) == []


def test_host_port_into_a_user_namespaced_pod(crib_factory: Callable[..., CribDaemon], bed: Testbed,
                                              session_tag: str, images: img.Catalogue,
                                              tmp_path: Path) -> None:
    reachable(tmp_path)
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    busybox = pull(daemon, images.reference(img.BUSYBOX))
    port = free_port()
    pod = userns_pod(daemon, session_tag, tmp_path / "logs",
                     ports=[api.PortMapping(protocol=api.TCP, container_port=8080, host_port=port)])
    bed.sandbox_ids.append(pod.id)
    try:
        pod.run(in_pod(pod, busybox, ["sh", "-c", "mkdir /www && id -u > /www/index.html && "
                                                   "exec httpd -f -p 8080 -h /www"]))
        got = wait_for(lambda: _try_get(f"http://127.0.0.1:{port}/"), timeout=15, what="the hostPort")
        assert got == "0\n"  # served by the pod's root
    finally:
        pod.remove()
    assert bed.leaks() == []


def _try_get(url: str) -> str:
    try:
        return http_get(url, timeout=2)
    except OSError:
        return ""


@pytest.mark.parametrize(("option", "code", "message"), [
    (api.NamespaceOption(userns_options=api.UserNamespace(mode=api.POD, uids=[
        api.IDMapping(container_id=0, host_id=1000, length=100000),
        api.IDMapping(container_id=0, host_id=2000, length=100000)], gids=[
        api.IDMapping(container_id=0, host_id=1000, length=100000)])),
     grpc.StatusCode.INVALID_ARGUMENT, "uids must hold exactly one mapping"),
    (userns_option(uid=0), grpc.StatusCode.INVALID_ARGUMENT, "host id 0"),
    (api.NamespaceOption(userns_options=api.UserNamespace(mode=api.CONTAINER)),
     grpc.StatusCode.INVALID_ARGUMENT, "mode CONTAINER is not valid"),
    (userns_option(network=api.NODE), grpc.StatusCode.INVALID_ARGUMENT, "host network"),
], ids=["two-mappings", "host-root", "container-mode", "host-network"])
def test_refusals_leave_nothing(crib: CribDaemon, session_tag: str, option: api.NamespaceOption,
                                code: grpc.StatusCode, message: str) -> None:
    config = pod_config(session_tag, namespace_options=option)
    got, text = code_of(lambda: crib.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config)))
    assert got == code, text
    assert message in text
    assert list((crib.runroot / "userns").iterdir()) == []
    assert crib.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []


def test_a_handler_without_user_namespaces_refuses_them(crib_factory: Callable[..., CribDaemon],
                                                        session_tag: str, tmp_path: Path) -> None:
    reachable(tmp_path)
    daemon = crib_factory({"runtime": {"handlers": {"boxed": {"path": "/usr/sbin/runc", "sandboxed": True}}}})
    status = daemon.runtime.Status(api.StatusRequest(verbose=True))
    by_name = {h.name: h.features.user_namespaces for h in status.runtime_handlers}
    assert by_name == {"": True, "runc": True, "boxed": False}
    assert "is a sandboxed runtime" in json.loads(status.info["runtimeHandlerFeatures"])["boxed"][
        "userNamespacesReason"]
    request = api.RunPodSandboxRequest(config=pod_config(session_tag, namespace_options=userns_option()),
                                       runtime_handler="boxed")
    got, text = code_of(lambda: daemon.runtime.RunPodSandbox(request))
    assert got == grpc.StatusCode.FAILED_PRECONDITION
    assert "runtime handler 'boxed' cannot run one" in text


async def test_streaming_exec_and_attach_in_a_user_namespaced_pod(pod: Pod, busybox: str) -> None:
    cid = pod.run(in_pod(pod, busybox, ["sh", "-c", "read x; echo got $x as $(id -u); exec sleep 1000"],
                         stdin=True, stdin_once=True))
    url = pod.rt.Exec(api.ExecRequest(container_id=cid, cmd=["cat", "/proc/self/uid_map"], stdout=True,
                                      stderr=True)).url
    async with await client.RemoteCommand.connect(url) as rc:
        out, _, code = await rc.collect()
    assert (out.decode().split(), code) == (["0", str(HOST_UID), str(LENGTH)], 0)
    url = pod.rt.Attach(api.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)).url
    async with await client.RemoteCommand.connect(url, stdin=True) as rc:
        assert await attach_line(rc, b"hello\n") == b"got hello as 0\n"
