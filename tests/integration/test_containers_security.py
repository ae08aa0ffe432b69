"""What a container may do: its user and groups, read-only root, seccomp, capabilities."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon

CAP_NET_RAW = 13
CAP_CHOWN = 0


@pytest.fixture
def pulled(crib: CribDaemon, images: img.Catalogue) -> img.Catalogue:
    for name in (img.BUSYBOX, img.USER_UID, img.USER_NAME, img.USER_NAMEGROUP):
        pull(crib, images.reference(name))
    return images


@pytest.fixture
def pod(crib: CribDaemon, session_tag: str, tmp_path: Path) -> Iterator[Pod]:
    p = Pod(crib, pod_config(session_tag, log_dir=tmp_path / "logs"))
    yield p
    p.remove()


def _id_of(pod: Pod, config: api.ContainerConfig) -> str:
    config.command[:] = ["sh", "-c", "id; exec sleep 1000"]
    cid = pod.run(config)
    return pod.exec(cid, "id").stdout.decode().strip()


@pytest.mark.parametrize(("image", "set_up", "expected"), [
    (img.USER_UID, None, "uid=1000(cribuser) gid=1000(cribgroup) groups=1000(cribgroup),2000(extra)"),
    (img.USER_NAME, None, "uid=1000(cribuser) gid=1000(cribgroup) groups=1000(cribgroup),2000(extra)"),
    (img.USER_NAMEGROUP, None, "uid=1000(cribuser) gid=2000(extra) groups=2000(extra)"),
    (img.BUSYBOX, lambda sc: sc.run_as_user.CopyFrom(api.Int64Value(value=1000)),
     "uid=1000(cribuser) gid=1000(cribgroup) groups=1000(cribgroup),2000(extra)"),
    (img.BUSYBOX, lambda sc: setattr(sc, "run_as_username", "cribuser"),
     "uid=1000(cribuser) gid=1000(cribgroup) groups=1000(cribgroup),2000(extra)"),
    (img.BUSYBOX, lambda sc: (sc.run_as_user.CopyFrom(api.Int64Value(value=1000)),
                              sc.run_as_group.CopyFrom(api.Int64Value(value=2000)),
                              sc.supplemental_groups.append(4242)),
     "uid=1000(cribuser) gid=2000(extra) groups=2000(extra),4242"),
], ids=["image-uid", "image-name", "image-name-group", "run-as-user", "run-as-username", "user-group-extra"])
def test_user_and_groups_are_resolved(pod: Pod, pulled: img.Catalogue, image: str, set_up,
                                      expected: str) -> None:
    config = container_config(pulled.reference(image))
    if set_up is not None:
        set_up(config.linux.security_context)
    got = _id_of(pod, config)
    assert got.split(" groups=")[0] == expected.split(" groups=")[0]
    assert set(got.split(" groups=")[1].split(",")) >= set(expected.split(" groups=")[1].split(","))
    status = pod.status(pod.rt.ListContainers(api.ListContainersRequest()).containers[0].id)
    assert status.user.linux.uid == 1000


def test_read_only_root_filesystem(pod: Pod, pulled: img.Catalogue) -> None:
    config = container_config(pulled.reference(img.BUSYBOX), command=["sleep", "1000"])
    config.linux.security_context.readonly_rootfs = True
    cid = pod.run(config)
    out = pod.exec(cid, "touch", "/new-file")
    assert out.exit_code != 0
    assert b"Read-only file system" in out.stderr
    assert pod.exec(cid, "touch", "/dev/shm/ok").exit_code == 0  # the pod's /dev/shm stays writable


def test_default_seccomp_profile_blocks_a_syscall(pod: Pod, pulled: img.Catalogue) -> None:
    image = pulled.reference(img.BUSYBOX)
    confined = container_config(image, command=["sleep", "1000"])
    confined.linux.security_context.seccomp.profile_type = api.SecurityProfile.RuntimeDefault
    unconfined = container_config(image, command=["sleep", "1000"])
    unconfined.linux.security_context.seccomp.profile_type = api.SecurityProfile.Unconfined
    c1, c2 = pod.run(confined), pod.run(unconfined)
    assert b"Seccomp:\t2" in pod.exec(c1, "cat", "/proc/self/status").stdout
    assert b"Seccomp:\t0" in pod.exec(c2, "cat", "/proc/self/status").stdout
    # A new user namespace needs no capability, but the default profile refuses unshare(CLONE_NEWUSER).
    blocked = pod.exec(c1, "unshare", "-U", "true")
    assert blocked.exit_code != 0
    assert b"Operation not permitted" in blocked.stderr
    assert pod.exec(c2, "unshare", "-U", "true").exit_code == 0


def _caps(pod: Pod, cid: str) -> int:
    status = pod.exec(cid, "cat", "/proc/self/status").stdout.decode()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapBnd:")), 16)


def test_dropped_capabilities_are_gone(pod: Pod, pulled: img.Catalogue) -> None:
    image = pulled.reference(img.BUSYBOX)
    default = pod.run(container_config(image, command=["sleep", "1000"]))
    dropped = container_config(image, command=["sleep", "1000"])
    dropped.linux.security_context.capabilities.drop_capabilities.extend(["NET_RAW", "CHOWN"])
    cid = pod.run(dropped)
    assert _caps(pod, default) >> CAP_NET_RAW & 1
    assert _caps(pod, default) >> CAP_CHOWN & 1
    assert not _caps(pod, cid) >> CAP_NET_RAW & 1
    assert not _caps(pod, cid) >> CAP_CHOWN & 1
    chown = pod.exec(cid, "chown", "1000", "/tmp")
    assert chown.exit_code != 0
    assert b"Operation not permitted" in chown.stderr


def test_recursive_read_only_mounts(crib: CribDaemon, pod: Pod, pulled: img.Catalogue,
                                    tmp_path: Path) -> None:
    status = crib.runtime.Status(api.StatusRequest())
    assert all(h.features.recursive_read_only_mounts for h in status.runtime_handlers)
    host = tmp_path / "host"
    (host / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "cribtest", str(host / "sub")], check=True)
    try:
        config = container_config(pulled.reference(img.BUSYBOX), command=["sleep", "1000"], mounts=[
            api.Mount(container_path="/mnt", host_path=str(host), readonly=True, recursive_read_only=True)])
        cid = pod.run(config)
        for path in ("/mnt/x", "/mnt/sub/x"):
            out = pod.exec(cid, "touch", path)
            assert out.exit_code != 0, path
            assert b"Read-only file system" in out.stderr
        pod.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    finally:
        subprocess.run(["umount", str(host / "sub")], check=True)


@pytest.mark.parametrize(("policy", "groups"), [
    (api.SupplementalGroupsPolicy.Merge, [img.TEST_GID, 4242, img.EXTRA_GID]),
    (api.SupplementalGroupsPolicy.Strict, [img.TEST_GID, 4242]),
], ids=["merge", "strict"])
def test_supplemental_groups_policy(crib: CribDaemon, pod: Pod, pulled: img.Catalogue, tmp_path: Path,
                                    policy: int, groups: list[int]) -> None:
    """The image's /etc/group lists cribuser in "extra": Merge adds it, Strict keeps only the request's."""
    assert crib.runtime.Status(api.StatusRequest()).features.supplemental_groups_policy
    config = container_config(pulled.reference(img.USER_UID),
                              command=["sh", "-c", "id -G; exec sleep 1000"])
    config.linux.security_context.supplemental_groups.append(4242)
    config.linux.security_context.supplemental_groups_policy = policy  # type: ignore[assignment]
    cid = pod.run(config)
    expected = " ".join(str(g) for g in sorted(groups))
    log = tmp_path / "logs" / config.log_path
    wait_for(lambda: log.exists() and f" F {expected}\n" in log.read_text(), what="id -G in the log")
    assert pod.exec(cid, "id", "-G").stdout.decode().split() == expected.split()
    user = pod.status(cid).user.linux
    assert (user.uid, user.gid) == (img.TEST_UID, img.TEST_GID)
    assert sorted(user.supplemental_groups) == sorted(groups)
