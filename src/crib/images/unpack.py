"""Extract one layer tar into its own directory, as an overlayfs lower layer, without ever leaving it.

Design note (security). A layer comes from the network and is hostile until proven otherwise. The rules:

* Names are checked before anything is touched: an absolute name, a `..` component or a NUL byte fails the
  layer with an error naming the entry. Nothing is silently rewritten.
* Every path is opened component by component from a directory fd of the layer root with O_NOFOLLOW: a
  parent that is a symlink (even one pointing inside the layer) fails the layer, so no entry can be
  written through a link planted earlier in the same tar. The final component is created with O_EXCL /
  mknod / symlink(2) relative to that parent fd, after removing what was there, so it is never followed.
* A hard link's target is resolved by the same walk inside the layer and must be a non-directory entry
  of this layer; absolute or `..` targets are refused.
* `trusted.overlay.*` xattrs in the tar are dropped: they would steer overlayfs (redirects, metacopy).
* The tar stream's size is bounded by the caller (HashingReader) against `image.max_layer_bytes`.

OCI whiteouts become overlayfs ones: `.wh.<name>` -> a character device 0:0 named `<name>`;
`.wh..wh..opq` -> the xattr trusted.overlay.opaque=y on its directory (other `.wh..wh.` names are aufs
bookkeeping and are skipped). A directory created where this layer had just whited out a name is made
opaque, which is what "delete the lower directory, create a new one" means. Ownership, modes (setuid and
sticky bits included: chown comes before chmod), mtimes (directories last, since their children change
them), xattrs, hard links, symlinks, devices and fifos are kept. Layers are independent directories, so a
hard link must point into the same layer; lower layers are never consulted (and can be unpacked in
parallel).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crib import lazy, log
from crib.errors import CribError, PermissionDenied
from crib.images.streams import CHUNK, Reader

if TYPE_CHECKING:
    import tarfile
else:
    tarfile = lazy.module("tarfile")  # loaded by the first unpack (daemon idle memory)

_log = log.get(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX_PREFIX = "SCHILY.xattr."
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FD_CACHE = 64
_BLOCK = 4096


class UnsafeLayer(PermissionDenied):
    """A layer entry would write outside its directory: policy forbids it, the pull fails."""


class BrokenLayer(CribError):
    """A layer is not a readable (compressed) tar archive."""


class UnpackError(CribError):
    """The node could not write a layer (disk full, read-only, ...); the message names the entry."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnpackStats:
    """What a layer occupies on disk (approximately, in 4 KiB blocks), for ImageFsInfo."""

    entries: int
    inodes: int
    disk_bytes: int


def _clean(name: str, entry: str, what: str, kind: str = "entry") -> list[str]:
    """The components of a layer-relative name; refuses absolute names, `..` and NUL bytes."""
    if "\0" in name:
        raise UnsafeLayer(f"{what}: {kind} {entry!r} contains a NUL byte; the layer was refused")
    if name.startswith("/"):
        raise UnsafeLayer(f"{what}: {kind} {entry!r} is an absolute path; a layer entry must stay inside "
                          "the image, the layer was refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"{what}: {kind} {entry!r} contains '..' and would leave the image; the layer "
                          "was refused")
    return parts


class _Extractor:
    """State of one extraction: the root fd, a small cache of parent-directory fds, deferred mtimes."""

    def __init__(self, dest: Path, what: str) -> None:
        self.what = what
        self.root = os.open(dest, _DIR_FLAGS)
        self._fds: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._dir_times: list[tuple[tuple[str, ...], str, int]] = []
        self._whiteouts: set[tuple[str, ...]] = set()
        self.entries = 0
        self.inodes = 1
        self.disk = _BLOCK

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        os.close(self.root)

    # ------------------------------------------------------------------------------------------- walking

    def _forget(self) -> None:
        """Drop cached directory fds (a directory was removed or replaced)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def dir_fd(self, parts: tuple[str, ...], entry: str, *, create: bool) -> int:
        """fd of the directory at parts, walked without following symlinks (cached; do not close it)."""
        if not parts:
            return self.root
        fd = self._fds.get(parts)
        if fd is not None:
            self._fds.move_to_end(parts)
            return fd
        parent = self.dir_fd(parts[:-1], entry, create=create)
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(name, 0o755, dir_fd=parent)
            self.inodes += 1
            self.disk += _BLOCK
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            where = "/".join(parts)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeLayer(f"{self.what}: entry {entry!r} goes through {where!r}, which is a symlink "
                                  "in "
                                  "this layer; writing through it could leave the image, the layer was "
                                  "refused") from None
            raise UnsafeLayer(f"{self.what}: entry {entry!r} needs {where!r} to be a directory, but the "
                              "layer "
                              "made it something else") from None
        self._fds[parts] = fd
        if len(self._fds) > _FD_CACHE:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def _remove(self, parent: int, name: str, keep_dir: bool) -> bool:
        """Remove what is at name (unless it is a directory and keep_dir); True when a directory stays."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self._forget()
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)
        return False

    # ------------------------------------------------------------------------------------------ metadata

    def _xattrs(self, member: tarfile.TarInfo) -> dict[str, bytes]:
        out = {}
        for key, value in member.pax_headers.items():
            if not key.startswith(_XATTR_PAX_PREFIX):
                continue
            name = key[len(_XATTR_PAX_PREFIX):]
            if name.startswith("trusted.overlay."):
                continue  # see the module note
            out[name] = value.encode("utf-8", "surrogateescape")
        return out

    def _set_xattrs(self, target: int | str, member: tarfile.TarInfo) -> None:
        for name, value in self._xattrs(member).items():
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                _log.warning("%s: entry %r: xattr %s not supported here, skipped", self.what, member.name,
                             name)

    @staticmethod
    def _mtime_ns(member: tarfile.TarInfo) -> int:
        return int(float(member.mtime) * 1_000_000_000)

    # ------------------------------------------------------------------------------------------- entries

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.entries += 1
        parts = _clean(member.name, member.name, self.what)
        if not parts:
            self._root_entry(member)
            return
        *dirs, name = parts
        parent_parts = tuple(dirs)
        if name.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent_parts, name, member)
            return
        parent = self.dir_fd(parent_parts, member.name, create=True)
        key = (*parent_parts, name)
        if member.isdir():
            self._directory(parent, parent_parts, name, member, key)
            return
        self._remove(parent, name, keep_dir=False)
        self._whiteouts.discard(key)
        if member.isreg():
            self._file(tar, parent, name, member)
        elif member.issym():
            if "\0" in member.linkname:
                raise UnsafeLayer(f"{self.what}: symlink {member.name!r} has a NUL byte in its target")
            os.symlink(member.linkname, name, dir_fd=parent)
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
            ns = self._mtime_ns(member)
            os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)
            self.inodes += 1
        elif member.islnk():
            self._hardlink(parent, name, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._node(parent, name, member)
        else:
            _log.debug("%s: entry %r of tar type %r skipped", self.what, member.name, member.type)

    def _root_entry(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise UnsafeLayer(f"{self.what}: entry {member.name!r} names the layer root but is not a "
                              "directory")
        os.chown(self.root, member.uid, member.gid)
        os.chmod(self.root, stat.S_IMODE(member.mode))
        self._dir_times.append(((), "", self._mtime_ns(member)))

    def _whiteout(self, parent_parts: tuple[str, ...], name: str, member: tarfile.TarInfo) -> None:
        parent = self.dir_fd(parent_parts, member.name, create=True)
        if name == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if name.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk and the like)
        target = name[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise UnsafeLayer(f"{self.what}: whiteout {member.name!r} names no entry")
        self._remove(parent, target, keep_dir=False)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        self._whiteouts.add((*parent_parts, target))
        self.inodes += 1

    def _directory(self, parent: int, parent_parts: tuple[str, ...], name: str, member: tarfile.TarInfo,
                   key: tuple[str, ...]) -> None:
        replaced_whiteout = key in self._whiteouts
        if not self._remove(parent, name, keep_dir=True):
            os.mkdir(name, 0o700, dir_fd=parent)
            self.inodes += 1
            self.disk += _BLOCK
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, stat.S_IMODE(member.mode))
            self._set_xattrs(fd, member)
            if replaced_whiteout:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
                self._whiteouts.discard(key)
        finally:
            os.close(fd)
        self._dir_times.append((parent_parts, name, self._mtime_ns(member)))

    def _file(self, tar: tarfile.TarFile, parent: int, name: str, member: tarfile.TarInfo) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        try:
            src = tar.extractfile(member)
            if src is not None and member.size:
                while True:
                    data = src.read(CHUNK)
                    if not data:
                        break
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, stat.S_IMODE(member.mode))  # after chown, which clears setuid/setgid
            self._set_xattrs(fd, member)
            ns = self._mtime_ns(member)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)
        self.inodes += 1
        self.disk += -(-member.size // _BLOCK) * _BLOCK

    def _hardlink(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        target = _clean(member.linkname, member.name, self.what, kind=f"hard link target {member.linkname!r} "
                                                                      "of")
        if not target:
            raise UnsafeLayer(f"{self.what}: hard link {member.name!r} points at the layer root")
        *tdirs, tname = target
        try:
            tparent = self.dir_fd(tuple(tdirs), member.name, create=False)
            st = os.stat(tname, dir_fd=tparent, follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeLayer(f"{self.what}: hard link {member.name!r} points at {member.linkname!r}, which "
                              "is "
                              "not an earlier entry of this layer; the layer was refused") from None
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayer(f"{self.what}: hard link {member.name!r} points at the directory "
                              f"{member.linkname!r}")
        os.link(tname, name, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)

    def _node(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        mode = stat.S_IMODE(member.mode)
        if member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
        os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        # We just created this node (never a symlink), so following the final component is safe here.
        os.chmod(name, mode, dir_fd=parent)
        xattrs = self._xattrs(member)
        if xattrs:
            self._set_xattrs(f"/proc/self/fd/{parent}/{name}", member)
        ns = self._mtime_ns(member)
        os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)
        self.inodes += 1

    def finish(self) -> None:
        """Apply directory mtimes, deepest first; a directory replaced later in the tar is skipped."""
        for parts, name, ns in reversed(self._dir_times):
            try:
                if not name:
                    os.utime(self.root, ns=(ns, ns))
                    continue
                parent = self.dir_fd(parts, name, create=False)
                os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)
            except (FileNotFoundError, UnsafeLayer):
                continue


def unpack_tar(stream: Reader, dest: Path, *, what: str) -> UnpackStats:
    """Extract the tar read from stream into the existing, empty directory dest (see the module note).

    Args:
        stream: the uncompressed tar stream (the caller hashes and bounds it).
        dest: the layer's directory, private to this extraction until it is renamed into place.
        what: names the layer in errors ("layer sha256:... of docker.io/library/busybox:latest").

    Raises:
        UnsafeLayer: an entry would leave dest, or the stream is not a tar archive.
        OSError: the disk refused (full, read-only...).
    """
    os.chmod(dest, 0o755)
    ex = _Extractor(dest, what)
    try:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK)  # type: ignore[call-overload]
        except tarfile.ReadError as exc:
            if "empty file" in str(exc):
                return UnpackStats(entries=0, inodes=1, disk_bytes=_BLOCK)
            raise BrokenLayer(f"{what}: not a tar archive: {exc}") from exc
        except (tarfile.TarError, ValueError, OverflowError) as exc:  # the first header read at open
            raise BrokenLayer(f"{what}: broken tar archive: {exc}") from exc
        with tar:
            member: tarfile.TarInfo | None = None
            try:
                for member in tar:
                    ex.extract(tar, member)
            except (tarfile.TarError, ValueError, OverflowError) as exc:
                # tarfile's parser lets ValueError out for malformed pax values ("GNU.sparse.size=x")
                raise BrokenLayer(f"{what}: broken tar archive: {exc}") from exc
            except OSError as exc:
                entry = member.name if member is not None else "(start)"
                raise UnpackError(f"{what}: cannot write entry {entry!r}: {exc.strerror or exc}") from exc
        ex.finish()
    finally:
        ex.close()
    return UnpackStats(entries=ex.entries, inodes=ex.inodes, disk_bytes=ex.disk)


def remove_tree(path: Path) -> None:
    """Remove a directory tree that may hold read-only dirs and device nodes (ignore a missing one)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


__all__ = ["OPAQUE_XATTR", "BrokenLayer", "UnpackError", "UnpackStats", "UnsafeLayer", "remove_tree",
           "unpack_tar"]
