"""Containers on a real daemon with real runc and conmon: lifecycle, exit codes, stop, exec, logs, stats."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon


@pytest.fixture
def busybox(crib: CribDaemon, images: img.Catalogue) -> str:
    reference = images.reference(img.BUSYBOX)
    pull(crib, reference)
    return reference


@pytest.fixture
def pod(crib: CribDaemon, session_tag: str, tmp_path: Path) -> Iterator[Pod]:
    p = Pod(crib, pod_config(session_tag, log_dir=tmp_path / "logs"))
    yield p
    p.remove()


def _log(pod: Pod, cid: str) -> Path:
    return Path(pod.status(cid).log_path)


def test_container_lifecycle(pod: Pod, busybox: str) -> None:
    cid = pod.create(container_config(busybox, "web", command=["sh", "-c", "echo hello; exec sleep 1000"],
                                      labels={"tier": "web"}))
    st = pod.status(cid)
    assert st.state == api.CONTAINER_CREATED
    assert st.metadata.name == "web"
    assert st.image.image == busybox
    assert st.image_id.startswith("sha256:")
    assert st.log_path == os.path.join(pod.config.log_directory, "web.log")
    code, message = code_of(lambda: pod.exec(cid, "true"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not started" in message
    pod.rt.StartContainer(api.StartContainerRequest(container_id=cid))
    st = pod.status(cid)
    assert st.state == api.CONTAINER_RUNNING
    assert st.started_at >= st.created_at
    code, _ = code_of(lambda: pod.rt.StartContainer(api.StartContainerRequest(container_id=cid)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    out = pod.exec(cid, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.stdout, out.stderr, out.exit_code) == (b"out\n", b"err\n", 3)
    by_label = api.ContainerFilter(label_selector={"tier": "web"})
    listed = pod.rt.ListContainers(api.ListContainersRequest(filter=by_label)).containers
    assert [c.id for c in listed] == [cid]
    running = api.ContainerFilter(state=api.ContainerStateValue(state=api.CONTAINER_RUNNING),
                                  pod_sandbox_id=pod.id[:12])
    assert len(pod.rt.ListContainers(api.ListContainersRequest(filter=running)).containers) == 1
    verbose = pod.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True))
    assert '"pid"' in verbose.info["info"]
    assert '"runtimeSpec"' in verbose.info["info"]

    pod.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=1))  # sleep as PID 1 ignores TERM
    st = pod.status(cid)
    assert st.state == api.CONTAINER_EXITED
    assert (st.exit_code, st.reason) == (137, "Error")
    assert st.finished_at >= st.started_at
    pod.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=1))
    assert " stdout F hello\n" in _log(pod, cid).read_text()
    for _ in range(2):
        pod.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    code, _ = code_of(lambda: pod.status(cid))
    assert code == grpc.StatusCode.NOT_FOUND
    pod.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=1))


@pytest.mark.parametrize(("script", "code", "reason"), [
    ("exit 0", 0, "Completed"), ("exit 7", 7, "Error"), ("kill -USR1 $$", 128 + 10, "Error"),
], ids=["zero", "seven", "signal"])
def test_exit_codes(crib: CribDaemon, session_tag: str, busybox: str, script: str, code: int,
                    reason: str) -> None:
    # In a pod-wide PID namespace the shell is not PID 1, so a signal it sends itself is not ignored.
    shared = Pod(crib, pod_config(session_tag, namespace_options=api.NamespaceOption(pid=api.POD)))
    config = container_config(busybox, command=["sh", "-c", script])
    config.linux.security_context.namespace_options.pid = api.POD
    cid = shared.run(config)
    st = shared.wait_exit(cid)
    assert (st.exit_code, st.reason) == (code, reason)
    shared.remove()


def test_oom_kill_is_reported_as_oomkilled(pod: Pod, busybox: str) -> None:
    config = container_config(busybox, command=["tail", "/dev/zero"])  # buffers an endless line
    config.linux.resources.memory_limit_in_bytes = 32 * 1024 * 1024
    cid = pod.run(config)
    st = pod.wait_exit(cid, timeout=60)
    assert (st.exit_code, st.reason) == (137, "OOMKilled")
    assert st.resources.linux.memory_limit_in_bytes == 32 * 1024 * 1024


def test_stop_honours_the_grace_period_and_kills_a_process_ignoring_sigterm(pod: Pod, busybox: str) -> None:
    loop = "while :; do sleep 0.1; done"
    polite = pod.run(container_config(busybox, command=["sh", "-c", f'trap "echo bye; exit 0" TERM; {loop}']))
    stubborn = pod.run(container_config(busybox, command=["sh", "-c", f'trap "" TERM; {loop}']))
    time.sleep(0.3)  # let both shells install their traps
    started = time.monotonic()
    pod.rt.StopContainer(api.StopContainerRequest(container_id=polite, timeout=30))
    assert time.monotonic() - started < 5
    assert (pod.status(polite).exit_code, pod.status(polite).reason) == (0, "Completed")
    assert "stdout F bye" in _log(pod, polite).read_text()
    started = time.monotonic()
    pod.rt.StopContainer(api.StopContainerRequest(container_id=stubborn, timeout=2))
    assert 2 <= time.monotonic() - started < 10
    assert pod.status(stubborn).exit_code == 137


def test_exec_sync_timeout_kills_the_command(pod: Pod, busybox: str) -> None:
    cid = pod.run(container_config(busybox, command=["sleep", "1000"]))
    started = time.monotonic()
    code, message = code_of(lambda: pod.exec(cid, "sh", "-c", 'trap "" TERM; sleep 600', timeout=1))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not finish within 1s" in message
    assert time.monotonic() - started < 10
    # Gone at once, not even a zombie (critest checks with pgrep right after the call).
    rows = [line.split() for line in pod.exec(cid, "ps", "-o", "pid,comm").stdout.decode().splitlines()[1:]]
    assert [pid for pid, comm in rows if comm == "sleep"] == ["1"]
    big = pod.exec(cid, "sh", "-c", "yes | head -c 3000000")
    assert len(big.stdout) == 3000000
    assert big.exit_code == 0
    code, message = code_of(lambda: pod.exec(cid, "/no/such/binary"))
    assert code == grpc.StatusCode.UNKNOWN
    assert "/no/such/binary" in message


def test_long_lines_are_split_into_partial_entries_and_reopen_follows_rotation(pod: Pod,
                                                                               busybox: str) -> None:
    script = ("head -c 20000 /dev/zero | tr '\\0' x; echo; i=0; "
              "while :; do i=$((i+1)); echo tick $i; sleep 0.1; done")
    cid = pod.run(container_config(busybox, command=["sh", "-c", script]))
    log = _log(pod, cid)
    wait_for(lambda: "tick 2" in log.read_text(), what="ticks in the log")
    entries = [line.split(" ", 3) for line in log.read_text().split("\n")[:-1]]
    end = next(i for i, e in enumerate(entries) if e[2] == "F")  # the 20000-byte line ends here
    long_line = entries[:end + 1]
    assert len(long_line) >= 3  # conmon reads 8 KiB at a time: at least two partial entries before it
    assert {e[2] for e in long_line[:-1]} == {"P"}
    assert "".join(e[3] for e in long_line) == "x" * 20000
    assert {e[1] for e in long_line} == {"stdout"}
    assert all(e[0].startswith("20") and "T" in e[0] for e in entries)
    rotated = log.with_name(log.name + ".1")
    log.rename(rotated)
    pod.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid))
    assert log.exists()  # the call returns once conmon has reopened the file
    wait_for(lambda: "tick" in log.read_text(), what="the reopened log to fill")
    pod.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0))
    code, _ = code_of(lambda: pod.rt.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=cid)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_stats_report_usage(pod: Pod, busybox: str) -> None:
    script = "head -c 5000000 /dev/urandom > /blob; exec sleep 1000"
    cid = pod.run(container_config(busybox, command=["sh", "-c", script]))
    wait_for(lambda: pod.exec(cid, "sh", "-c", "test -s /blob && wc -c < /blob").stdout.strip() == b"5000000")
    stats = pod.rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
    assert stats.attributes.id == cid
    assert stats.cpu.usage_core_nano_seconds.value > 0
    assert stats.cpu.timestamp > 0
    assert stats.memory.working_set_bytes.value > 0
    assert stats.memory.usage_bytes.value > 0
    assert stats.writable_layer.used_bytes.value >= 5000000
    assert stats.writable_layer.inodes_used.value >= 1
    listed = pod.rt.ListContainerStats(api.ListContainerStatsRequest(
        filter=api.ContainerStatsFilter(pod_sandbox_id=pod.id))).stats
    assert [s.attributes.id for s in listed] == [cid]
    pstats = pod.rt.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=pod.id)).stats
    assert pstats.attributes.id == pod.id
    assert pstats.linux.cpu.usage_core_nano_seconds.value > 0
    assert pstats.linux.memory.working_set_bytes.value > 0
    assert pstats.linux.process.process_count.value >= 1
    assert [c.attributes.id for c in pstats.linux.containers] == [cid]
    assert len(pod.rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest()).stats) == 1


def test_update_container_resources(pod: Pod, busybox: str) -> None:
    config = container_config(busybox, command=["sleep", "1000"])
    config.linux.resources.cpu_shares = 512
    cid = pod.run(config)

    def spec_shares() -> int:  # crictl inspect's view: the verbose reply is cached (container_convert.py)
        info = pod.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info
        return int(json.loads(info["info"])["runtimeSpec"]["linux"]["resources"]["cpu"]["shares"])

    assert spec_shares() == 512
    pod.rt.UpdateContainerResources(api.UpdateContainerResourcesRequest(
        container_id=cid, linux=api.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=64 << 20)))
    cgroup = pod.status(cid).resources.linux
    assert (cgroup.cpu_shares, cgroup.memory_limit_in_bytes) == (256, 64 << 20)
    assert spec_shares() == 256
    path = wait_for(lambda: next((line.split(":", 2)[2] for line in
                                  Path(f"/proc/{_pid(pod, cid)}/cgroup").read_text().splitlines()
                                  if ":memory:" in line), None))
    assert Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    code, _ = code_of(lambda: pod.rt.UpdateContainerResources(api.UpdateContainerResourcesRequest(
        container_id=cid, linux=api.LinuxContainerResources(cpu_shares=-5))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def _pid(pod: Pod, cid: str) -> int:
    import json

    info = pod.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])


def test_runtime_errors_reach_the_caller(pod: Pod, busybox: str) -> None:
    code, message = code_of(lambda: pod.create(container_config(busybox, command=["/no/such/binary"])))
    assert code == grpc.StatusCode.UNKNOWN
    assert "/no/such/binary" in message
    unknown_user = container_config(busybox, command=["true"])
    unknown_user.linux.security_context.run_as_username = "nosuchuser"
    code, message = code_of(lambda: pod.create(unknown_user))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "nosuchuser" in message
    code, message = code_of(lambda: pod.create(container_config("127.0.0.1:1/missing:latest")))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "pull it first" in message
    assert not pod.rt.ListContainers(api.ListContainersRequest()).containers


def test_container_events_stream(pod: Pod, busybox: str) -> None:
    events: list[api.ContainerEventResponse] = []
    stream = pod.rt.GetContainerEvents(api.GetEventsRequest())
    ready = threading.Event()

    def consume() -> None:
        ready.set()
        for event in stream:
            events.append(event)
            if event.container_event_type == api.CONTAINER_DELETED_EVENT:
                return

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    ready.wait()
    time.sleep(0.3)  # the server registers the subscriber when the stream's first read arrives
    cid = pod.run(container_config(busybox, command=["sh", "-c", "exit 0"]))
    pod.wait_exit(cid)
    pod.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    reader.join(20)
    stream.cancel()
    kinds = [e.container_event_type for e in events if e.container_id == cid]
    assert kinds == [api.CONTAINER_CREATED_EVENT, api.CONTAINER_STARTED_EVENT, api.CONTAINER_STOPPED_EVENT,
                     api.CONTAINER_DELETED_EVENT]
    assert events[0].pod_sandbox_status.id == pod.id
    assert events[2].containers_statuses[0].state == api.CONTAINER_EXITED


def test_image_volumes_get_a_directory_of_their_own(crib: CribDaemon, pod: Pod,
                                                     images: img.Catalogue) -> None:
    reference = images.reference(img.CONFIG)
    pull(crib, reference)
    cid = pod.run(container_config(reference, command=["sh", "-c", "echo v > /data/f; exec sleep 1000"]))
    wait_for(lambda: pod.exec(cid, "cat", "/data/f").stdout == b"v\n", what="the volume write")
    out = pod.exec(cid, "sh", "-c", "echo $CRIB_TEST; pwd")
    assert out.stdout == b"config\n/srv/work\n"


def test_runtime_handlers_have_their_own_runc_root(crib_factory, images: img.Catalogue, session_tag: str,
                                                   tmp_path: Path) -> None:
    alt_root = tmp_path / "alt-runc"
    crib = crib_factory({"runtime": {"handlers": {"alt": {"path": "/usr/sbin/runc", "root": str(alt_root)}}}})
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = Pod(crib, pod_config(session_tag), handler="alt")
    try:
        cid = pod.run(container_config(busybox, command=["sleep", "1000"]))
        assert (alt_root / cid / "state.json").exists()
        assert not (crib.runroot / "runc" / cid).exists()
        assert pod.status(cid).state == api.CONTAINER_RUNNING
        status = crib.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status
        assert status.runtime_handler == "alt"
    finally:
        pod.remove()
    assert not list(alt_root.iterdir())


# A runtime that does a real `runc create` and then forgets the container, as a runc killed in the middle
# of create does: its `runc init` is left waiting in the container's cgroup with no runc state to find it.
_FORGETFUL_RUNC = """#!/bin/bash
/usr/sbin/runc "$@"; rc=$?
root=/run/runc
for arg in "$@"; do case "$arg" in --root=*) root="${arg#--root=}";; esac; done
for arg in "$@"; do if [ "$arg" = create ]; then
  rm -rf "$root/${@: -1}"; echo "runc was killed in the middle of create (simulated)" >&2; exit 137
fi; done
exit $rc
"""


def test_a_runc_killed_mid_create_leaves_no_process_or_cgroup(crib_factory, images: img.Catalogue,
                                                              session_tag: str, tmp_path: Path) -> None:
    """Once, the orphaned `runc init` kept the container's cgroup, and with it the pod's, busy: the pod's
    removal then waited out its cgroup bound in every hierarchy (50 s) and left the cgroups behind."""
    script = tmp_path / "forgetful-runc"
    script.write_text(_FORGETFUL_RUNC)
    script.chmod(0o755)
    crib = crib_factory({"runtime": {"handlers": {"forgetful": {"path": str(script),
                                                                "root": str(tmp_path / "runc-root")}}}})
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    config = pod_config(session_tag)
    pod = Pod(crib, config, handler="forgetful")
    try:
        cut = container_config(busybox, "cut", command=["sleep", "100"])
        code, message = code_of(lambda: pod.create(cut))
        assert code == grpc.StatusCode.UNKNOWN
        assert "killed in the middle of create" in message
        leaf = Path("/sys/fs/cgroup/memory") / config.linux.cgroup_parent.strip("/")
        assert [p.name for p in leaf.iterdir() if p.is_dir()] == []  # the container's cgroup is gone
        assert (leaf / "cgroup.procs").read_text() == ""
    finally:
        started = time.monotonic()
        pod.remove()
        assert time.monotonic() - started < 5  # no cgroup bound waited out
