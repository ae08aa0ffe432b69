"""Fuzzing the layer unpacker as root: generated tar archives full of path tricks, links, devices, sparse
and unknown entry types, huge pax headers, xattrs and long names, and damaged archives.

For every input the unpacker either extracts the layer or refuses it with a CribError (UnsafeLayer,
BrokenLayer, UnpackError) naming the problem; it never raises anything else, never creates, changes or
links to anything outside the layer's directory (a sibling directory of sentinels is compared before and
after, and hard links are checked to stay inside), and never follows a symlink out of it.
Bounded by CRIB_FUZZ_EXAMPLES (default 150).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crib.errors import CribError
from crib.images.unpack import unpack_tar

EXAMPLES = int(os.environ.get("CRIB_FUZZ_EXAMPLES", "150"))
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))

NAMES = st.one_of(
    st.sampled_from(("a", "d", "d/e", "d/e/f", "x/../y", "../escape", "../../escape", "/abs", "/etc/passwd",
                     ".", "./a", "", "d/", "a//b", ".wh.a", "d/.wh.e", ".wh..wh..opq", "d/.wh..wh..opq",
                     ".wh..wh.plnk", ".wh.", ".wh...", "sym", "sym/inside", "link", "dev", "outside/x")),
    st.text(alphabet="abd/.", min_size=1, max_size=12),
    st.text(min_size=1, max_size=8),
    st.integers(100, 300).map(lambda n: "long/" + "n" * n),
)
LINK_TARGETS = st.one_of(
    st.sampled_from(("a", "d", "d/e", "../outside/sentinel", "/etc/passwd", "/", "..", "sym/inside",
                     "../../../../outside", "d/../../outside/sentinel", "", "self")),
    NAMES,
)
TYPES = st.sampled_from((tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                         tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE, b"Z",
                         tarfile.AREGTYPE))
PAX = st.dictionaries(
    st.sampled_from(("SCHILY.xattr.user.a", "SCHILY.xattr.security.capability",
                     "SCHILY.xattr.trusted.overlay.redirect", "SCHILY.xattr.trusted.overlay.opaque", "path",
                     "linkpath", "size", "uid", "mtime", "GNU.sparse.size", "comment")),
    st.one_of(st.text(max_size=20), st.sampled_from(("../../escape", "/abs", "-1", "1e400", "y")),
              st.integers(1, 200_000).map(lambda n: "v" * n)),
    max_size=3)


@st.composite
def entries(draw: Any) -> list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        info = tarfile.TarInfo(draw(NAMES))
        info.type = draw(TYPES)
        info.mode = draw(st.sampled_from((0o644, 0o755, 0o4755, 0o7777, 0o000, 0o1777)))
        info.uid = draw(st.sampled_from((0, 1000, 65534, 2**21 - 1)))
        info.gid = draw(st.sampled_from((0, 1000, 65534)))
        info.mtime = draw(st.sampled_from((0, 1_600_000_000, 2**33)))
        if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            info.linkname = draw(LINK_TARGETS)
        if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = draw(st.sampled_from(((1, 3), (1, 1), (8, 0), (0, 0),
                                                                 (4095, 255))))
        info.pax_headers = draw(PAX)
        data = draw(st.binary(max_size=64)) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE,
                                                            tarfile.CONTTYPE) else b""
        info.size = len(data)
        out.append((info, data))
    return out


def _archive(members: list[Any], fmt: int) -> bytes | None:
    buf = io.BytesIO()
    try:
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if data else None)
    except (ValueError, tarfile.TarError, OverflowError, UnicodeError):
        return None  # tarfile itself cannot write this combination
    return buf.getvalue()


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st_ = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st_.st_mode, st_.st_size, st_.st_nlink,
                                                                       st_.st_mtime_ns)
    return out


def _damage(raw: bytes, data: st.DataObject) -> bytes:
    if not raw:
        return raw
    kind = data.draw(st.integers(0, 2), label="damage")
    at = data.draw(st.integers(0, len(raw) - 1), label="at")
    if kind == 0:
        return raw[:at]
    if kind == 1:
        return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:]
    return raw[:at] + data.draw(st.binary(min_size=1, max_size=600)) + raw[at:]


@_SETTINGS
@given(data=st.data())
def test_the_unpacker_extracts_or_refuses_and_never_leaves_its_directory(tmp_path_factory: Any,
                                                                        data: st.DataObject) -> None:
    box = tmp_path_factory.mktemp("unpack")
    outside, layer = box / "outside", box / "layer"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched\n")
    (outside / "dir").mkdir()
    layer.mkdir()
    os.symlink(outside, box / "planted")  # a link next to the layer, as a careless caller might leave
    before = _snapshot(outside)
    members = data.draw(entries(), label="entries")
    raw = _archive(members, data.draw(st.sampled_from((tarfile.PAX_FORMAT, tarfile.GNU_FORMAT,
                                                       tarfile.USTAR_FORMAT)), label="format"))
    if raw is None:
        raw = data.draw(st.binary(max_size=2048), label="noise")
    if data.draw(st.booleans(), label="damaged"):
        raw = _damage(raw, data)
    try:
        message = "(extracted)"
        try:
            unpack_tar(io.BytesIO(raw), layer, what="fuzzed layer")
        except CribError as exc:
            message = str(exc)
        assert message
        assert _snapshot(outside) == before, "the unpacker changed something outside the layer"
        assert sorted(p.name for p in box.iterdir()) == ["layer", "outside", "planted"]
        inside = {(os.lstat(p).st_dev, os.lstat(p).st_ino) for p in layer.rglob("*")}
        for path in layer.rglob("*"):
            st_ = os.lstat(path)
            if stat.S_ISREG(st_.st_mode) and st_.st_nlink > 1:
                # every other name of the file is inside the layer too (no link to an outside inode)
                assert (st_.st_dev, st_.st_ino) in inside
        assert (outside / "sentinel").read_text() == "untouched\n"
        assert os.lstat(outside / "sentinel").st_nlink == 1, "a hard link to an outside file was made"
    finally:
        shutil.rmtree(box, ignore_errors=True)
