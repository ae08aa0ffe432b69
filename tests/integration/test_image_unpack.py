"""Layer extraction as root: metadata kept, whiteouts converted, hostile entries refused.

The merged view is checked through a real overlayfs mount of the unpacked layers, which is what a
container's root filesystem will be.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from crib.errors import CribError
from crib.images.unpack import OPAQUE_XATTR, BrokenLayer, UnsafeLayer, unpack_tar
from tests.fixtures import images as img
from tests.fixtures.oci import FIXED_MTIME, Layer


def unpack(layer: Layer | bytes, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    data = layer if isinstance(layer, bytes) else layer.tar()
    unpack_tar(io.BytesIO(data), dest, what="layer test")
    return dest


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    mounted: list[Path] = []

    def mount(lowers_bottom_first: list[Path]) -> Path:
        target = tmp_path / f"merged{len(mounted)}"
        target.mkdir()
        lowerdir = ":".join(str(p) for p in reversed(lowers_bottom_first))
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}", str(target)],
                       check=True, capture_output=True, timeout=30)
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=False, capture_output=True, timeout=30)


def test_metadata_is_kept(tmp_path: Path) -> None:
    layer = (
        Layer()
        .dir("d", mode=0o2750, uid=5, gid=6, mtime=1_600_000_000)
        .file("d/f", b"data", mode=0o4711, uid=7, gid=8, mtime=1234)
        .symlink("d/s", "f", uid=9, gid=10)
        .symlink("d/abs", "/etc/passwd")
        .hardlink("d/h", "d/f")
        .char_device("dev/null", 1, 3, mode=0o666)
        .block_device("dev/loop9", 7, 9)
        .fifo("d/p", mode=0o620)
        .file("d/x", "x", xattrs={"user.a": "1", "trusted.overlay.redirect": "/evil"})
        .dir("t", mode=0o1777)
    )
    root = unpack(layer, tmp_path / "l")
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    d = (root / "d").lstat()
    assert (stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid) == (0o2750, 5, 6)
    assert d.st_mtime == 1_600_000_000  # set after its children were written
    f = (root / "d/f").lstat()
    assert (stat.S_IMODE(f.st_mode), f.st_uid, f.st_gid, f.st_mtime) == (0o4711, 7, 8, 1234)
    assert (root / "d/f").read_bytes() == b"data"
    s = (root / "d/s").lstat()
    assert stat.S_ISLNK(s.st_mode)
    assert (s.st_uid, s.st_gid) == (9, 10)
    assert os.readlink(root / "d/s") == "f"
    assert os.readlink(root / "d/abs") == "/etc/passwd"
    assert (root / "d/h").lstat().st_ino == f.st_ino
    assert f.st_nlink == 2
    c = (root / "dev/null").lstat()
    assert stat.S_ISCHR(c.st_mode)
    assert (os.major(c.st_rdev), os.minor(c.st_rdev), stat.S_IMODE(c.st_mode)) == (1, 3, 0o666)
    b = (root / "dev/loop9").lstat()
    assert stat.S_ISBLK(b.st_mode)
    assert (os.major(b.st_rdev), os.minor(b.st_rdev)) == (7, 9)
    p = (root / "d/p").lstat()
    assert stat.S_ISFIFO(p.st_mode)
    assert stat.S_IMODE(p.st_mode) == 0o620
    assert os.getxattr(root / "d/x", "user.a") == b"1"
    assert "trusted.overlay.redirect" not in os.listxattr(root / "d/x")  # overlayfs' own xattrs are dropped
    assert stat.S_IMODE((root / "t").stat().st_mode) == 0o1777
    assert (root / "d/x").lstat().st_mtime == FIXED_MTIME


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    root = unpack(Layer().whiteout("gone").opaque("keep").file("keep/new", "n"), tmp_path / "l")
    wh = (root / "gone").lstat()
    assert stat.S_ISCHR(wh.st_mode)
    assert wh.st_rdev == os.makedev(0, 0)
    assert os.getxattr(root / "keep", OPAQUE_XATTR) == b"y"
    assert sorted(os.listdir(root)) == ["gone", "keep"]
    assert os.listdir(root / "keep") == ["new"]


def test_a_directory_recreated_after_its_whiteout_is_opaque(tmp_path: Path) -> None:
    root = unpack(Layer().whiteout("etc/conf.d").dir("etc/conf.d").file("etc/conf.d/a", "a"), tmp_path / "l")
    assert (root / "etc/conf.d").is_dir()
    assert os.getxattr(root / "etc/conf.d", OPAQUE_XATTR) == b"y"


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    layer = Layer(parents=False)
    for name, kind, link in (("x", tarfile.DIRTYPE, ""), ("x/inner", tarfile.REGTYPE, ""),
                             ("x", tarfile.SYMTYPE, "elsewhere"), ("y", tarfile.REGTYPE, ""),
                             ("y", tarfile.DIRTYPE, "")):
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = kind, link, 0o755
        layer.raw(info, b"" if kind == tarfile.REGTYPE else None)
    root = unpack(layer, tmp_path / "l")
    assert os.readlink(root / "x") == "elsewhere"
    assert (root / "y").is_dir()


@pytest.mark.parametrize("case", list(img.HOSTILE_CASES), ids=str)
def test_hostile_layers_are_refused_and_write_nothing_outside(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside-area"
    dest = outside / "deep" / "layer"  # `../` lands in outside-area/deep
    dest.mkdir(parents=True)
    (outside / "outside").write_text("target of a hard link")
    marker_tmp = Path("/tmp") / img.HOSTILE_MARKER
    assert not marker_tmp.exists()
    with pytest.raises(UnsafeLayer) as err:
        unpack_tar(io.BytesIO(img.hostile_layer(case).tar()), dest, what="layer sha256:bad")
    message = str(err.value)
    assert "layer sha256:bad" in message
    assert {"dotdot": "../crib-hostile-escape", "absolute": "/crib-hostile-escape",
            "symlink-escape": "link/crib-hostile-escape", "symlink-relative-escape": "up/crib-hostile-escape",
            "hardlink-absolute": "/etc/passwd", "hardlink-dotdot": "../outside"}[case] in message
    assert not marker_tmp.exists()
    assert not Path("/" + img.HOSTILE_MARKER).exists()
    assert not (outside / "deep" / img.HOSTILE_MARKER).exists()
    assert sorted(p.name for p in outside.rglob("*")) == sorted(["deep", "layer", "outside", *(
        ["link"] if case == "symlink-escape" else ["up"] if case == "symlink-relative-escape" else [])])


def test_hardlink_target_must_be_in_this_layer(tmp_path: Path) -> None:
    info = tarfile.TarInfo("link")
    info.type, info.linkname = tarfile.LNKTYPE, "not/here"
    with pytest.raises(UnsafeLayer, match="not an earlier entry of this layer"):
        unpack(Layer(parents=False).raw(info), tmp_path / "l")


def test_not_a_tar_is_a_broken_layer(tmp_path: Path) -> None:
    with pytest.raises(BrokenLayer, match=r"not a tar archive|broken tar"):
        unpack(b"this is not a tar archive at all" * 40, tmp_path / "l")
    empty = unpack(b"", tmp_path / "empty")
    assert list(empty.iterdir()) == []


def test_disk_errors_name_the_entry(tmp_path: Path) -> None:
    dest = tmp_path / "l"
    dest.mkdir()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True, timeout=30)
    try:
        with pytest.raises(CribError, match=r"cannot write entry 'big': No space left"):
            unpack(Layer().file("big", b"x" * (1 << 20)), small / "l")
    finally:
        subprocess.run(["umount", str(small)], check=True, timeout=30)


def test_layers_merge_through_overlayfs(tmp_path: Path, overlay: callable) -> None:  # type: ignore[valid-type]
    from tests.fixtures.images import _layers_image_layers

    dirs = [unpack(layer, tmp_path / f"layer{i}") for i, layer in enumerate(_layers_image_layers())]
    merged = overlay(dirs)
    for path, content in img.LAYERS_EXPECTED_FILES.items():
        assert (merged / path.lstrip("/")).read_bytes() == content, path
    for path in img.LAYERS_ABSENT:
        assert not os.path.lexists(merged / path.lstrip("/")), path
    assert sorted(os.listdir(merged / "layers/opaque")) == ["from-layer-3"]
    a, b = (merged / "layers/hardlink-a").stat(), (merged / "layers/hardlink-b").stat()
    assert a.st_ino == b.st_ino
    assert stat.S_IMODE((merged / "layers/setuid").stat().st_mode) == 0o4755
    assert stat.S_ISFIFO((merged / "layers/fifo").lstat().st_mode)
    assert os.getxattr(merged / "layers/xattr", img.LAYERS_XATTR[0]) == img.LAYERS_XATTR[1]
    owned = (merged / "layers/owned").stat()
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (img.TEST_UID, img.EXTRA_GID, 0o640)
    assert stat.S_IMODE((merged / "layers/sticky").stat().st_mode) == 0o1777
    assert os.readlink(merged / "layers/symlink") == "keep.txt"
    assert (merged / "bin/busybox").read_bytes() == img.BUSYBOX_BINARY.read_bytes()
