"""crib's root filesystem full (the soak's disk_fill fault, made deterministic): answers say so, and what
happened meanwhile is recorded once there is room again.

crib's root is a small tmpfs of the test's own. While it is full, writes of the state database fail:
calls answer RESOURCE_EXHAUSTED (once INTERNAL, from a raw sqlite3 error); an exit that happens then is
recorded as soon as space comes back (once it was lost, and the container showed running for good); a
StartContainer whose record could not be written is healed by kubelet's retry (once runc refused it as
"already running" forever, and crib said CREATED).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon


@pytest.fixture
def small_root(crib_factory: Callable[..., CribDaemon]) -> Iterator[CribDaemon]:
    daemon = crib_factory(start=False)
    daemon.root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(daemon.root)], check=True,
                   timeout=30)
    try:
        yield daemon.start()
    finally:
        daemon.stop()
        subprocess.run(["umount", str(daemon.root)], check=False, timeout=30)


class Filler:
    def __init__(self, root: Path) -> None:
        self.path = root / "filler"

    def fill(self) -> None:
        st = os.statvfs(self.path.parent)
        subprocess.run(["fallocate", "-l", str(st.f_bavail * st.f_frsize), str(self.path)], check=False,
                       timeout=30)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:  # whatever fallocate left, in small pieces
            while os.write(fd, b"\0" * 512):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.path.unlink(missing_ok=True)


def test_a_full_root_answers_resource_exhausted_and_loses_no_exit(small_root: CribDaemon,
                                                                 images: img.Catalogue, session_tag: str,
                                                                 tmp_path: Path) -> None:
    crib = small_root
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = Pod(crib, pod_config(session_tag, log_dir=tmp_path / "logs"))
    filler = Filler(crib.root)
    try:
        quitter = pod.run(container_config(busybox, "quitter", command=["sh", "-c", "sleep 3; exit 7"]))
        later = pod.create(container_config(busybox, "later", command=["sleep", "1000"]))
        filler.fill()
        code, message = code_of(lambda: pod.create(container_config(busybox, "refused", command=["true"])))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, message
        assert "disk is full" in message
        code, message = code_of(lambda: pod.rt.StartContainer(api.StartContainerRequest(container_id=later)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, message
        crib.wait_for_log(f"cannot record a container's exit yet; retrying container={quitter}", timeout=30)
        filler.free()
        status = pod.wait_exit(quitter, timeout=10)
        assert (status.exit_code, status.reason) == (7, "Error")
        pod.rt.StartContainer(api.StartContainerRequest(container_id=later))  # kubelet's retry heals it
        assert pod.status(later).state == api.CONTAINER_RUNNING
        crib.wait_for_log(f"container was started but its record was not written; recording it now "
                          f"container={later}")
        assert wait_for(lambda: pod.exec(later, "echo", "ok").stdout == b"ok\n")
    finally:
        filler.free()
        pod.remove()
