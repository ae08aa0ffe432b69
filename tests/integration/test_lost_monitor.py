"""A container's conmon killed (kill -9, as the OOM killer or an admin might): crib follows the truth.

Once, crib kept reporting CONTAINER_RUNNING for a container whose conmon was gone, and StopContainer,
StopPodSandbox and RemovePodSandbox failed forever waiting for an exit file no one would write. Now the
container is reconciled from runc's state: reported exited with an unknown exit code (255, reason
"Unknown") within a bound, and stop and remove make progress whether the container died with its monitor
(a writer to its stdout gets SIGPIPE) or outlived it (a sleeper does).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon, pid_alive

TALKER = ["sh", "-c", "while echo tick; do sleep 0.1; done"]  # echo fails once nobody reads its output
STOP_BOUND = 8.0  # runtime.stop_timeout is 10 s: a stop that waited for the lost exit file would take longer


def _pids(crib: CribDaemon, cid: str) -> tuple[int, int]:
    bundle = crib.runroot / "containers" / cid
    return int((bundle / "conmon.pid").read_text()), int((bundle / "pidfile").read_text())


def _kill_monitor(crib: CribDaemon, cid: str) -> int:
    monitor, pid = _pids(crib, cid)
    os.kill(monitor, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{monitor}/cmdline").exists()
             or not Path(f"/proc/{monitor}/cmdline").read_bytes(), what="conmon to die")
    return pid


def _assert_unknown_exit(status: api.ContainerStatus) -> None:
    assert status.state == api.CONTAINER_EXITED
    assert (status.exit_code, status.reason) == (255, "Unknown")
    assert "monitor (conmon)" in status.message
    assert status.finished_at > 0


@pytest.fixture
def busybox(crib: CribDaemon, images: img.Catalogue) -> str:
    reference = images.reference(img.BUSYBOX)
    pull(crib, reference)
    return reference


@pytest.fixture
def pod(crib: CribDaemon, session_tag: str, tmp_path: Path) -> Pod:
    return Pod(crib, pod_config(session_tag, log_dir=tmp_path / "logs"))


def test_a_container_that_dies_with_its_monitor_is_reported_exited(crib: CribDaemon, pod: Pod,
                                                                   busybox: str) -> None:
    try:
        # Writes to stdout all the time, and stops when the pipe to its dead monitor breaks.
        talker = pod.run(container_config(busybox, "talker", command=TALKER))
        pid = _kill_monitor(crib, talker)
        _assert_unknown_exit(pod.wait_exit(talker, timeout=10))
        assert not pid_alive(pid) or not Path(f"/proc/{pid}/cmdline").read_bytes()
        started = time.monotonic()
        pod.rt.StopContainer(api.StopContainerRequest(container_id=talker, timeout=5), timeout=30)
        pod.rt.RemoveContainer(api.RemoveContainerRequest(container_id=talker), timeout=30)
        assert time.monotonic() - started < STOP_BOUND
    finally:
        pod.remove()


def test_a_container_that_outlives_its_monitor_can_be_stopped(crib: CribDaemon, pod: Pod,
                                                              busybox: str) -> None:
    try:
        sleeper = pod.run(container_config(busybox, "sleeper", command=["sleep", "1000"]))
        pid = _kill_monitor(crib, sleeper)
        # The container lives on, and crib says so: runc reports it running.
        assert pid_alive(pid)
        assert pod.status(sleeper).state == api.CONTAINER_RUNNING
        started = time.monotonic()
        pod.rt.StopContainer(api.StopContainerRequest(container_id=sleeper, timeout=2), timeout=30)
        assert time.monotonic() - started < STOP_BOUND
        _assert_unknown_exit(pod.status(sleeper))
        # And when it is killed behind crib's back, that is seen too, without a stop.
        other = pod.run(container_config(busybox, "other", command=["sleep", "1000"]))
        pid = _kill_monitor(crib, other)
        crib.wait_for_log(f"container outlives its monitor (conmon): its output is no longer logged and its "
                          f"exit status will be unknown container={other}")
        os.kill(pid, signal.SIGKILL)
        _assert_unknown_exit(pod.wait_exit(other, timeout=10))
    finally:
        started = time.monotonic()
        pod.remove()
        assert time.monotonic() - started < STOP_BOUND


def test_a_monitor_killed_while_the_daemon_is_down_is_reconciled_at_restart(crib: CribDaemon, pod: Pod,
                                                                             busybox: str) -> None:
    try:
        talker = pod.run(container_config(busybox, "talker", command=TALKER))
        sleeper = pod.run(container_config(busybox, "sleeper", command=["sleep", "1000"]))
        crib.kill()
        talker_pid = _kill_monitor(crib, talker)
        sleeper_pid = _kill_monitor(crib, sleeper)
        wait_for(lambda: not pid_alive(talker_pid) or not Path(f"/proc/{talker_pid}/cmdline").read_bytes(),
                 what="the talker to end on its broken pipe")
        crib.start()
        _assert_unknown_exit(pod.status(talker))
        assert pod.status(sleeper).state == api.CONTAINER_RUNNING  # runc says so, and it is true
        os.kill(sleeper_pid, signal.SIGKILL)
        _assert_unknown_exit(pod.wait_exit(sleeper, timeout=10))
    finally:
        pod.remove()
