"""A container's calls when what lies under it breaks: a caller that gives up half-way, a damaged bundle.

- StartContainer whose caller's deadline ends after `runc start` did its work: once, the call was cancelled
  with it and the start went unrecorded (the container ran, crib said CREATED, kubelet's retry was refused
  by runc). The start now finishes and is recorded whatever happens to the caller.
- A container's config.json or runc's state file corrupt or missing (a crash, a full disk, a hand): once,
  ExecSync and UpdateContainerResources answered INTERNAL with a traceback in the log. Now each call
  answers a clear status naming the container and what to do, and the container can still be stopped and
  removed, leaving nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon, pid_alive

# A runtime whose `start` does the real thing, then takes its time to return: the caller's deadline ends
# after the container was started and before crib hears so.
_SLOW_START_RUNC = """#!/bin/bash
/usr/sbin/runc "$@"; rc=$?
for arg in "$@"; do if [ "$arg" = start ]; then sleep 3; fi; done
exit $rc
"""


def test_a_start_whose_caller_gave_up_is_recorded(crib_factory: Callable[..., CribDaemon],
                                                  images: img.Catalogue, session_tag: str,
                                                  tmp_path: Path) -> None:
    script = tmp_path / "slow-start-runc"
    script.write_text(_SLOW_START_RUNC)
    script.chmod(0o755)
    crib = crib_factory({"runtime": {"handlers": {"slow": {"path": str(script),
                                                           "root": str(tmp_path / "runc-root")}}}})
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = Pod(crib, pod_config(session_tag), handler="slow")
    try:
        cid = pod.create(container_config(busybox, command=["sleep", "1000"]))
        with pytest.raises(grpc.RpcError) as caught:
            crib.runtime.StartContainer(api.StartContainerRequest(container_id=cid), timeout=1.0)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        status = wait_for(lambda: (s := pod.status(cid)).state == api.CONTAINER_RUNNING and s, timeout=15,
                          what="the abandoned start to be recorded")
        assert status.started_at > 0
        pid = int((crib.runroot / "containers" / cid / "pidfile").read_text())
        assert pid_alive(pid)
        # kubelet's retry of the start is told the truth, not runc's "cannot start an already running
        # container"
        code, message = code_of(lambda: crib.runtime.StartContainer(
            api.StartContainerRequest(container_id=cid), timeout=30))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "is running" in message
        started = time.monotonic()
        crib.runtime.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0), timeout=30)
        assert time.monotonic() - started < 8
        assert pod.status(cid).state == api.CONTAINER_EXITED
        assert not pid_alive(pid)
    finally:
        pod.remove()


def _bundle_file(crib: CribDaemon, cid: str) -> Path:
    return crib.runroot / "containers" / cid / "config.json"


def _runc_state(crib: CribDaemon, cid: str) -> Path:
    return crib.runroot / "runc" / cid / "state.json"


DAMAGE: dict[str, Callable[[CribDaemon, str], object]] = {
    "spec-cut": lambda crib, cid: _bundle_file(crib, cid).write_text('{"ociVersion": "1.0'),
    "spec-missing": lambda crib, cid: _bundle_file(crib, cid).unlink(),
    "spec-not-a-spec": lambda crib, cid: _bundle_file(crib, cid).write_text('{"process": ["sh"]}'),
    "runc-state-cut": lambda crib, cid: _runc_state(crib, cid).write_text('{"id": '),
    "runc-state-missing": lambda crib, cid: _runc_state(crib, cid).unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_spec_or_runc_state_is_named_and_the_container_still_goes(
        crib: CribDaemon, pod: Pod, busybox: str, damage: str) -> None:
    """Once, ExecSync and UpdateContainerResources answered INTERNAL ("JSONDecodeError", "FileNotFoundError")
    for a damaged config.json; with runc's state damaged, StopContainer and RemoveContainer failed forever
    ("unexpected EOF", or "did not exit within 10s of SIGKILL ... stuck in the kernel") and the pod could not
    be removed."""
    running = pod.run(container_config(busybox, "running", command=["sleep", "1000"]))
    created = pod.create(container_config(busybox, "created", command=["sleep", "1000"]))
    pid = int((crib.runroot / "containers" / running / "pidfile").read_text())
    DAMAGE[damage](crib, running)
    DAMAGE[damage](crib, created)
    rt = crib.runtime
    refusals = [
        ("running", lambda: pod.exec(running, "echo", "hi")),
        ("running", lambda: rt.UpdateContainerResources(api.UpdateContainerResourcesRequest(
            container_id=running, linux=api.LinuxContainerResources(cpu_shares=512)), timeout=30)),
    ]
    if damage.startswith("runc-"):
        refusals.append(("created", lambda: rt.StartContainer(
            api.StartContainerRequest(container_id=created), timeout=30)))
    for name, call in refusals:
        code, message = code_of(call)
        assert code == grpc.StatusCode.FAILED_PRECONDITION, message
        assert f"container {name} (" in message
        assert "damaged" in message or "missing" in message
        assert "emove the container" in message
    assert pod.status(running).state == api.CONTAINER_RUNNING  # a refusal changes nothing
    assert pid_alive(pid)
    started = time.monotonic()
    rt.StopContainer(api.StopContainerRequest(container_id=running, timeout=1), timeout=30)
    assert time.monotonic() - started < 8  # not the 10 s SIGKILL bound waited out
    status = pod.status(running)
    assert status.state == api.CONTAINER_EXITED
    assert status.exit_code == 137
    assert not pid_alive(pid)
    for cid in (running, created):
        rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid), timeout=30)
        assert not (crib.runroot / "runc" / cid).exists()
    assert not rt.ListContainers(api.ListContainersRequest()).containers
    log = crib.log_tail(2000)
    assert "Traceback" not in log
    assert "unexpected error" not in log
    # the pod fixture removes the pod, and the daemon fixture checks nothing is left


def test_a_pod_whose_pid_namespace_holder_lost_its_runc_state_is_stopped_and_removed(
        crib: CribDaemon, busybox: str, session_tag: str) -> None:
    """The holder of a shared PID namespace is a runc container too: once, a damaged state of it made
    StopPodSandbox fail forever ("unexpected EOF") and the pod could never be removed."""
    pod = Pod(crib, pod_config(session_tag, namespace_options=api.NamespaceOption(pid=api.POD)))
    cid = pod.run(container_config(busybox, command=["sleep", "1000"],
                                   linux=api.LinuxContainerConfig(security_context=api.LinuxContainerSecurityContext(
                                       namespace_options=api.NamespaceOption(pid=api.POD)))))
    status = crib.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id, verbose=True))
    holder = int((crib.runroot / "containers" / pod.id / "pidfile").read_text())
    assert pid_alive(holder), status.info
    _runc_state(crib, pod.id).write_text("")
    pod.remove()
    assert not pid_alive(holder)
    assert not (crib.runroot / "runc" / pod.id).exists()
    assert not crib.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items
    assert cid not in {c.id for c in crib.runtime.ListContainers(api.ListContainersRequest()).containers}
