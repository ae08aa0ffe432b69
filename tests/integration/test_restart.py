"""The daemon dies (SIGKILL) and comes back: containers never noticed; cut creations are undone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon, pid_alive


def _pid(pod: Pod, cid: str) -> int:
    info = pod.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])


def test_containers_run_on_while_the_daemon_is_down(crib: CribDaemon, images: img.Catalogue,
                                                    session_tag: str, tmp_path: Path) -> None:
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = Pod(crib, pod_config(session_tag, log_dir=tmp_path / "logs"))
    try:
        long = pod.run(container_config(busybox, "long", command=["sleep", "1000"]))
        short = pod.run(container_config(busybox, "short", command=["sh", "-c", "sleep 2; exit 3"]))
        created = pod.create(container_config(busybox, "created", command=["true"]))
        long_pid, short_pid = _pid(pod, long), _pid(pod, short)
        crib.kill()
        killed_at = time.time_ns()
        wait_for(lambda: not pid_alive(short_pid) or not Path(f"/proc/{short_pid}/cmdline").read_bytes(),
                 timeout=15, what="the short container to exit while crib is down")
        assert pid_alive(long_pid)
        crib.start()
        restarted_at = time.time_ns()

        st = pod.status(long)
        assert st.state == api.CONTAINER_RUNNING
        assert pod.exec(long, "echo", "still here").stdout == b"still here\n"
        st = pod.status(short)
        assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 3, "Error")
        assert killed_at < st.finished_at < restarted_at
        assert pod.status(created).state == api.CONTAINER_CREATED
        pod.rt.StartContainer(api.StartContainerRequest(container_id=created))
        assert pod.wait_exit(created).exit_code == 0
        pod.rt.StopContainer(api.StopContainerRequest(container_id=long, timeout=0))
        assert pod.status(long).state == api.CONTAINER_EXITED
        ready = api.PodSandboxStateValue(state=api.SANDBOX_READY)
        assert len(pod.rt.ListPodSandbox(api.ListPodSandboxRequest(
            filter=api.PodSandboxFilter(state=ready))).items) == 1
    finally:
        pod.remove()


@pytest.mark.parametrize("failpoint", ["sandbox.namespaces", "sandbox.network", "container.rootfs",
                                       "container.conmon"])
def test_a_creation_cut_by_a_crash_is_undone_on_restart(crib_factory, images: img.Catalogue, session_tag: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        failpoint: str) -> None:
    monkeypatch.setenv("CRIB_TESTING", "1")
    crib = crib_factory()
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = None if failpoint.startswith("sandbox") else Pod(crib, pod_config(session_tag))
    crib.stop()
    monkeypatch.setenv("CRIB_FAILPOINTS", f"{failpoint}:crash")
    crib.start()
    if pod is None:
        config = pod_config(session_tag)
        code, _ = code_of(lambda: crib.runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config)))
    else:
        code, _ = code_of(lambda: pod.create(container_config(busybox, command=["sleep", "100"])))
    assert code == grpc.StatusCode.UNAVAILABLE  # the daemon died mid-way
    assert crib.proc is not None
    crib.proc.wait(10)
    monkeypatch.delenv("CRIB_FAILPOINTS")
    crib.start()
    assert not crib.runtime.ListContainers(api.ListContainersRequest()).containers
    pods = crib.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items
    assert [p.id for p in pods] == ([] if pod is None else [pod.id])
    if pod is not None:
        pod.remove()
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(crib.workdir) in line]
    # The fixture's leak check covers conmon processes, cgroups and files.
