"""Image volumes (CRI Mount.image) through the daemon: contents, sub-paths, refusals, the image held."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures import leaks
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull
from tests.fixtures.daemon import CribDaemon

TARGET = "/mnt/image-volume"


@pytest.fixture
def refs(crib: CribDaemon, images: img.Catalogue) -> dict[str, str]:
    """Image name -> the image_ref PullImage returned (what kubelet puts in Mount.image.image)."""
    return {name: pull(crib, images.reference(name)) for name in (img.BUSYBOX, img.LAYERS)}


@pytest.fixture
def pod(crib: CribDaemon, session_tag: str, tmp_path: Path) -> Iterator[Pod]:
    p = Pod(crib, pod_config(session_tag, log_dir=tmp_path / "logs"))
    yield p
    p.remove()


def _config(refs: dict[str, str], volume: str = img.LAYERS, *, sub_path: str = "",
            readonly: bool = True) -> api.ContainerConfig:
    config = container_config(refs[img.BUSYBOX], command=["sleep", "1000"])
    config.mounts.append(api.Mount(container_path=TARGET, readonly=readonly, image_sub_path=sub_path,
                                   image=api.ImageSpec(image=refs[volume], user_specified_image=volume)))
    return config


def _out(pod: Pod, cid: str, *cmd: str) -> str:
    result = pod.exec(cid, *cmd)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


def test_image_is_mounted_read_only_with_its_layers_merged(pod: Pod, refs: dict[str, str]) -> None:
    cid = pod.run(_config(refs))
    for path, content in img.LAYERS_EXPECTED_FILES.items():
        assert _out(pod, cid, "cat", TARGET + path) == content.decode(), path
    listing = _out(pod, cid, "ls", "-A", f"{TARGET}/layers").split()
    assert "deleted.txt" not in listing  # whiteouts applied
    assert "removed-dir" not in listing
    assert _out(pod, cid, "ls", f"{TARGET}/layers/opaque").split() == ["from-layer-3"]
    denied = pod.exec(cid, "touch", f"{TARGET}/new")
    assert denied.exit_code != 0
    assert b"Read-only file system" in denied.stderr
    assert _out(pod, cid, f"{TARGET}/bin/busybox", "echo", "runs") == "runs\n"  # not noexec

    (mount,) = [m for m in pod.status(cid).mounts if m.container_path == TARGET]
    assert mount.image.image_ref == refs[img.LAYERS]
    assert mount.image.image == refs[img.LAYERS]
    assert mount.readonly
    assert not mount.host_path


@pytest.mark.parametrize(("sub_path", "inside", "expected"), [
    ("etc", "passwd", img.PASSWD),
    ("layers/nested/", "deep/file.txt", img.LAYERS_EXPECTED_FILES["/layers/nested/deep/file.txt"].decode()),
    # an absolute symlink in the image resolves inside the image, never on the host
    ("layers/abs-symlink", "", img.IMAGE_HOSTNAME + "\n"),
], ids=["directory", "nested-directory", "symlink-to-file"])
def test_sub_path(pod: Pod, refs: dict[str, str], sub_path: str, inside: str, expected: str) -> None:
    cid = pod.run(_config(refs, sub_path=sub_path))
    path = f"{TARGET}/{inside}" if inside else TARGET
    assert _out(pod, cid, "cat", path) == expected
    if sub_path == "etc":
        assert pod.exec(cid, "ls", f"{TARGET}/etc/passwd").exit_code != 0
    (mount,) = [m for m in pod.status(cid).mounts if m.container_path == TARGET]
    assert mount.image_sub_path == sub_path


@pytest.mark.parametrize(("change", "code", "message"), [
    (lambda c: setattr(c.mounts[0], "readonly", False), grpc.StatusCode.INVALID_ARGUMENT,
     "image volumes are read-only"),
    (lambda c: setattr(c.mounts[0], "image_sub_path", "not-existing"), grpc.StatusCode.NOT_FOUND,
     "'not-existing' does not exist in image"),
    (lambda c: setattr(c.mounts[0], "image_sub_path", "../etc"), grpc.StatusCode.INVALID_ARGUMENT,
     "without '..'"),
    (lambda c: c.mounts[0].image.CopyFrom(api.ImageSpec(image="sha256:" + "0" * 64)),
     grpc.StatusCode.NOT_FOUND, "not present on the node; pull it first"),
    (lambda c: setattr(c.mounts[0], "host_path", "/srv"), grpc.StatusCode.INVALID_ARGUMENT,
     "names both an image"),
], ids=["read-write", "missing-sub-path", "dotdot-sub-path", "missing-image", "with-host-path"])
def test_refusals_leave_nothing(crib: CribDaemon, pod: Pod, refs: dict[str, str], change,
                                code: grpc.StatusCode, message: str) -> None:
    config = _config(refs)
    change(config)
    got, text = code_of(lambda: pod.create(config))
    assert got == code, text
    assert message in text
    assert pod.rt.ListContainers(api.ListContainersRequest()).containers == []
    assert leaks.mounts_under(crib.runroot / "containers") == []


def test_image_is_held_while_a_container_mounts_it(crib: CribDaemon, pod: Pod, refs: dict[str, str]) -> None:
    cid = pod.run(_config(refs))
    volume = api.RemoveImageRequest(image=api.ImageSpec(image=refs[img.LAYERS]))
    got, text = code_of(lambda: crib.images.RemoveImage(volume))
    assert got == grpc.StatusCode.FAILED_PRECONDITION
    assert cid in text
    pod.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0))
    got, _ = code_of(lambda: crib.images.RemoveImage(volume))  # an exited container still holds it
    assert got == grpc.StatusCode.FAILED_PRECONDITION
    assert leaks.mounts_under(crib.runroot / "containers" / cid / "image-volumes")

    pod.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    assert leaks.mounts_under(crib.runroot / "containers") == []
    crib.images.RemoveImage(volume)
    status = crib.images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=refs[img.LAYERS])))
    assert not status.HasField("image")


def test_image_volume_survives_a_daemon_restart_and_goes_with_the_pod(crib: CribDaemon, pod: Pod,
                                                                      refs: dict[str, str]) -> None:
    cid = pod.run(_config(refs, volume=img.BUSYBOX, sub_path="etc"))
    crib.restart()
    assert _out(pod, cid, "cat", f"{TARGET}/passwd") == img.PASSWD
    pod.remove()
    assert leaks.mounts_under(crib.runroot) == []
    crib.images.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=refs[img.LAYERS])))
