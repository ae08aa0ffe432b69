"""A RuntimeClass handler for gVisor (Debian's runsc, --platform=ptrace) through the daemon: pods under the
sandbox kernel through their whole lifecycle, and the refusals that go with a sandboxed handler."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.streaming import client
from tests.fixtures import images as img
from tests.fixtures import leaks
from tests.fixtures.cri import Pod, attach_line, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon

RUNSC = shutil.which("runsc") or "/usr/bin/runsc"  # Debian package runsc, in the Makefile's DEBS
# Debian's runsc (2022) cannot use its own network stack on this kernel (it takes a namespaced
# net.core.rmem_default for the root network namespace), so the sandbox uses the pod's through the host's.
HANDLER = {"path": RUNSC, "runtime_args": ["--platform=ptrace", "--network=host"], "sandboxed": True}
# A port below 1024 (the sandbox binds it unprivileged in the pod's namespace); nc, since busybox httpd's
# replies get lost on gVisor's host network stack.
SERVER = ["sh", "-c", "while true; do echo served | nc -l -p 80; done"]


@pytest.fixture
def crib(crib_factory: Callable[..., CribDaemon]) -> CribDaemon:
    return crib_factory({"runtime": {"handlers": {"runsc": HANDLER}}})


@pytest.fixture
def busybox(crib: CribDaemon, images: img.Catalogue) -> str:
    return pull(crib, images.reference(img.BUSYBOX))


@pytest.fixture
def pod(crib: CribDaemon, session_tag: str, tmp_path: Path) -> Iterator[Pod]:
    p = Pod(crib, pod_config(session_tag, log_dir=tmp_path / "logs"), handler="runsc")
    yield p
    p.remove()


def _sandbox_processes(crib: CribDaemon) -> list[str]:
    return leaks.processes_mentioning(f"--root={crib.runroot}/runsc")


def test_a_pod_under_gvisor(crib: CribDaemon, pod: Pod, busybox: str, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "kernel.log"
    first = pod.run(container_config(busybox, "kernel", log_path="kernel.log",
                                     command=["sh", "-c", "dmesg; echo ready; exec sleep 1000"]))
    wait_for(lambda: log.exists() and " F ready\n" in log.read_text(), what="the container's log")
    assert "Starting gVisor" in log.read_text()  # the sandbox kernel's messages, not the node's
    assert pod.exec(first, "dmesg").stdout.startswith(b"[   0.000000] Starting gVisor")
    assert pod.status(first).state == api.CONTAINER_RUNNING

    # A second container joins the same sandbox and the pod's network: it reaches the first on 127.0.0.1.
    web = pod.run(container_config(busybox, "web", command=SERVER))
    fetched = wait_for(lambda: pod.exec(first, "sh", "-c", "nc -w 3 127.0.0.1 80 </dev/null").stdout,
                       timeout=20, what="the web container on the pod's loopback")
    assert fetched == b"served\n"

    # Stats come from the sandbox (`runsc events --stats`), for the container and within the pod's.
    stats = pod.rt.ContainerStats(api.ContainerStatsRequest(container_id=web)).stats
    assert stats.memory.working_set_bytes.value > 0
    assert stats.cpu.usage_core_nano_seconds.value > 0
    pod_stats = pod.rt.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=pod.id)).stats
    assert {c.attributes.id for c in pod_stats.linux.containers} == {first, web}

    # ExecSync with a deadline kills the command inside the sandbox.
    got, _ = code_of(lambda: pod.rt.ExecSync(api.ExecSyncRequest(container_id=first, cmd=["sleep", "60"],
                                                                 timeout=1), timeout=30))
    assert got == grpc.StatusCode.DEADLINE_EXCEEDED
    assert b"sleep 60" not in pod.exec(first, "ps", "-o", "args").stdout

    # A restart of the daemon: the containers keep running and are still driven.
    crib.restart()
    assert pod.exec(web, "echo", "after restart").stdout == b"after restart\n"

    # Stop: the stop signal inside the sandbox; the exit status as runc would report it.
    pod.rt.StopContainer(api.StopContainerRequest(container_id=web, timeout=10))
    assert pod.wait_exit(web).exit_code == 128 + 15
    done = pod.run(container_config(busybox, "done", command=["sh", "-c", "echo bye; exit 3"]))
    assert pod.wait_exit(done).exit_code == 3
    assert (tmp_path / "logs" / pod.status(done).log_path.rsplit("/", 1)[-1]).read_text().endswith(" F bye\n")

    # kubelet's restart of a container: a new attempt in the same sandbox.
    again = container_config(busybox, "web", command=SERVER)
    again.metadata.attempt = 1
    restarted = pod.run(again)
    assert pod.status(restarted).state == api.CONTAINER_RUNNING

    # A container created and never started goes away with the pod, its shim too.
    pod.create(container_config(busybox, "idle", command=["sleep", "1000"]))
    pod.remove()
    assert _sandbox_processes(crib) == []
    assert leaks.mounts_under(crib.runroot) == []


def test_status_and_refusals(crib: CribDaemon, session_tag: str) -> None:
    status = crib.runtime.Status(api.StatusRequest(verbose=True))
    runsc = next(h for h in status.runtime_handlers if h.name == "runsc")
    assert not runsc.features.user_namespaces
    assert not runsc.features.recursive_read_only_mounts
    reasons = json.loads(status.info["runtimeHandlerFeatures"])
    assert "sandboxed runtime" in reasons["runsc"]["userNamespacesReason"]

    host_network = pod_config(session_tag, namespace_options=api.NamespaceOption(network=api.NODE))
    got, text = code_of(lambda: crib.runtime.RunPodSandbox(
        api.RunPodSandboxRequest(config=host_network, runtime_handler="runsc")))
    assert got == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot use the host network namespace" in text

    got, text = code_of(lambda: crib.runtime.RunPodSandbox(
        api.RunPodSandboxRequest(config=pod_config(session_tag), runtime_handler="kata")))
    assert got == grpc.StatusCode.INVALID_ARGUMENT
    assert "runtime handler 'kata' is not configured; known handlers: runc, runsc" in text
    assert crib.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    assert _sandbox_processes(crib) == []


async def test_exec_and_attach_in_the_sandbox(pod: Pod, busybox: str) -> None:
    """Streaming sessions reach a container in the sandbox: `runsc exec` for Exec, conmon's attach socket
    (the shim handed the container conmon's pipes at start) for Attach."""
    cid = pod.run(container_config(busybox, "reader", stdin=True, stdin_once=True, command=[
        "sh", "-c", "read x; echo got $x; exec sleep 1000"]))
    url = pod.rt.Exec(api.ExecRequest(container_id=cid, cmd=["sh", "-c", "cat; dmesg | head -1; exit 7"],
                                      stdin=True, stdout=True, stderr=True)).url
    async with await client.RemoteCommand.connect(url, stdin=True) as rc:
        await rc.write(b"through exec\n")
        await rc.close_stdin()
        out, _, code = await rc.collect()
    assert (out.split(b"\n")[0], code) == (b"through exec", 7)
    assert b"Starting gVisor" in out
    url = pod.rt.Attach(api.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)).url
    async with await client.RemoteCommand.connect(url, stdin=True) as rc:
        assert await attach_line(rc, b"hello\n") == b"got hello\n"
