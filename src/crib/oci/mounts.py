"""A container's mounts: kernel filesystems, CRI bind mounts, image-volume mounts, the pod's files, image
VOLUMEs.

Design note -- the order and precedence are containerd's, because images and kubelet rely on them:

* "Supplied" mounts are, in this precedence: the CRI mounts, then the pod's /etc/hostname, /etc/hosts,
  /etc/resolv.conf and /dev/shm, then the image's VOLUMEs. A later one is dropped when an earlier one
  already mounts over the same path (kubelet's own /etc/hosts beats the pod file; a CRI volume at an
  image VOLUME path replaces the per-container directory). Two CRI mounts on one path are refused.
* The defaults (proc, /dev, devpts, shm, mqueue, sysfs, cgroup) come first, minus any a supplied mount
  replaces; a supplied /dev drops every default under /dev.
* Supplied mounts follow, sorted by depth (stable), so /a is mounted before /a/b and never shadows it.
* Bind options are "rbind", the propagation (PRIVATE -> rprivate, HOST_TO_CONTAINER -> rslave,
  BIDIRECTIONAL -> rshared), then "ro", "rro" (recursive, only where the runtime supports it and only with
  private propagation) or "rw". An rslave/rshared mount also needs the root filesystem's propagation to be
  rslave/rshared, and its host source to sit on a slave-or-shared/shared mount: the caller arranges the
  latter from mount_propagation_needs(), since making a host mount shared is a side effect.
* The pod's files are read-only when the root filesystem is; SELinux relabelling is ignored (no SELinux).
* A CRI mount naming an image (Mount.image, KEP-4639) is an image volume: the caller mounts the image
  read-only and hands in the host path to bind (ContainerInputs.mount_sources, image_sub_path already
  resolved inside the image). It must say readonly and name no host_path; it is bound "ro", "nosuid",
  "nodev" with private propagation (it is not executable-blocked: images carry binaries).
* A CRI mount with uidMappings/gidMappings (kubelet sets the pod's own for a user-namespaced pod's volumes)
  is an ID-mapped mount. runc 1.1 cannot make those, so the caller does (system/idmap.py) and hands in the
  ID-mapped mount's path in mount_sources; the builder binds that instead of host_path. The mappings must
  be the pod's (the mount is made through the pod's user namespace) and need a user-namespaced pod.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import defaults
from crib.oci.inputs import SandboxInfo
from crib.state.records import ImageConfig

_PROPAGATION = {
    api.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PropagationNeed:
    """A bind mount whose host source must propagate: "shared" (rshared) or "slave" (rslave).

    For "shared" the source's mount must be a shared mount; for "slave" shared or slave. The caller checks
    /proc/self/mountinfo and makes it so (mount --make-rshared), which the pure builder cannot.
    """

    source: str
    destination: str
    propagation: str


def clean_path(path: str) -> str:
    """An absolute path in normal form ("/a//b/../c/" -> "/a/c"), the form mounts are compared in."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _bind(source: str, destination: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": source, "options": ["rbind", *options]}


def is_image_mount(mount: api.Mount) -> bool:
    """Whether a CRI mount is an image volume (Mount.image names an image)."""
    return mount.HasField("image") and bool(mount.image.image or mount.image.image_ref)


def _image_mount(mount: api.Mount, index: int, where: str,
                 mount_sources: Mapping[int, str]) -> dict[str, Any]:
    name = mount.image.image or mount.image.image_ref
    if mount.host_path:
        raise InvalidArgument(f"{where} names both an image ({name}) and host_path {mount.host_path!r}; "
                              "an image volume has no host path: keep one of the two")
    if not mount.readonly:
        raise InvalidArgument(f"{where} mounts image {name} read-write; image volumes are read-only: set "
                              "readonly")
    source = mount_sources.get(index)
    if not source:
        raise ValueError(f"{where}: no mounted image given for image volume {name}; mount_sources must hold "
                         "every image mount")
    return _bind(source, clean_path(mount.container_path), "rprivate", "nosuid", "nodev", "ro")


def _cri_mount(mount: api.Mount, index: int, *, container: str, rro_supported: bool,
               mount_sources: Mapping[int, str]) -> dict[str, Any]:
    where = f"container {container!r}: mounts[{index}]"
    if mount.image_sub_path and not is_image_mount(mount):
        raise InvalidArgument(f"{where}: image_sub_path {mount.image_sub_path!r} is set but the mount names "
                              "no image; set image or drop image_sub_path")
    if not mount.container_path.startswith("/"):
        raise InvalidArgument(f"{where}.container_path {mount.container_path!r} must be an absolute path")
    if clean_path(mount.container_path) == "/":
        raise InvalidArgument(f"{where}.container_path is \"/\": nothing can be mounted over the root "
                              "filesystem; mount a directory below it")
    if is_image_mount(mount):
        return _image_mount(mount, index, where, mount_sources)
    if not mount.host_path.startswith("/"):
        raise InvalidArgument(f"{where}.host_path {mount.host_path!r} must be an absolute path")
    source = clean_path(mount.host_path)
    if mount.uidMappings or mount.gidMappings:
        source = mount_sources.get(index, "")
        if not source:
            raise ValueError(f"{where}: no ID-mapped mount given for {mount.host_path}; mount_sources must "
                             "hold every mount of idmapped_mounts()")
    propagation = _PROPAGATION.get(mount.propagation)
    if propagation is None:
        raise InvalidArgument(f"{where}.propagation {mount.propagation} is not a known MountPropagation")
    if mount.recursive_read_only:
        if not mount.readonly:
            raise InvalidArgument(f"{where}: recursive_read_only needs readonly too")
        if not rro_supported:
            raise InvalidArgument(f"{where}: recursive read-only mounts are not supported on this host "
                                  "(they need kernel >= 5.12 and \"rro\" in the runtime); use readonly")
        if propagation != "rprivate":
            raise InvalidArgument(f"{where}: recursive_read_only needs PROPAGATION_PRIVATE")
        mode = "rro"
    else:
        mode = "ro" if mount.readonly else "rw"
    return _bind(source, clean_path(mount.container_path), propagation, mode)


def _maps(items: Any) -> tuple[tuple[int, int, int], ...]:
    return tuple((m.container_id, m.host_id, m.length) for m in items)


def idmapped_mounts(config: api.ContainerConfig, sandbox: SandboxInfo) -> tuple[int, ...]:
    """Indexes of the CRI mounts the caller must ID-map (through the pod's user namespace).

    Raises:
        InvalidArgument: mappings in a pod without its own user namespace, mappings other than the pod's,
            or mappings on an image volume.
    """
    out = []
    pod = (_maps(sandbox.uid_mappings), _maps(sandbox.gid_mappings))
    for index, mount in enumerate(config.mounts):
        if not (mount.uidMappings or mount.gidMappings):
            continue
        where = f"container {config.metadata.name!r}: mounts[{index}]"
        if not sandbox.userns_path:
            raise InvalidArgument(f"{where} asks for an ID-mapped mount, which needs a pod with its own user "
                                  "namespace; drop uidMappings/gidMappings or set hostUsers: false")
        if is_image_mount(mount):
            raise InvalidArgument(f"{where}: an image volume takes no uidMappings/gidMappings (crib maps it "
                                  "to the pod's user namespace itself)")
        if (_maps(mount.uidMappings), _maps(mount.gidMappings)) != pod:
            raise InvalidArgument(f"{where}: uidMappings/gidMappings differ from the pod's user namespace "
                                  "mappings; a volume is mapped through the pod's user namespace, so give "
                                  "the pod's mappings")
        out.append(index)
    return tuple(out)


def image_volumes_needed(config: api.ContainerConfig, image: ImageConfig) -> tuple[str, ...]:
    """The image VOLUME paths (normalized, absolute) that get a per-container directory.

    A VOLUME that a CRI mount covers needs none. The caller creates one directory per path (copying the
    image's content there, as Docker does) and passes them as ContainerInputs.volume_dirs.
    """
    covered = {clean_path(m.container_path) for m in config.mounts if m.container_path.startswith("/")}
    out: list[str] = []
    for volume in image.volumes:
        path = clean_path("/" + volume)
        if path not in covered and path not in out:
            out.append(path)
    return tuple(out)


def _volume_source(volume_dirs: Mapping[str, str], path: str) -> str:
    for key, source in volume_dirs.items():
        if clean_path("/" + key) == path:
            return source
    raise ValueError(f"no directory given for image volume {path}; volume_dirs must hold every path of "
                     "image_volumes_needed()")


def container_mounts(
    *,
    config: api.ContainerConfig,
    container: str,
    sandbox: SandboxInfo,
    image: ImageConfig,
    volume_dirs: Mapping[str, str],
    privileged: bool,
    readonly_rootfs: bool,
    rro_supported: bool,
    mount_sources: Mapping[int, str] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """The container's `mounts` and the root filesystem propagation they need ("" = runc's default).

    Raises:
        InvalidArgument: a relative path, two CRI mounts on one path, an impossible read-only request, a
            writable image volume.
        ValueError: volume_dirs lacks a needed image VOLUME, or mount_sources an image or ID-mapped mount
            (caller bugs).
    """
    supplied: dict[str, dict[str, Any]] = {}
    idmapped_mounts(config, sandbox)
    for index, mount in enumerate(config.mounts):
        spec_mount = _cri_mount(mount, index, container=container, rro_supported=rro_supported,
                                mount_sources=mount_sources or {})
        if spec_mount["destination"] in supplied:
            raise InvalidArgument(f"container {container!r}: mounts[{index}] mounts over "
                                  f"{spec_mount['destination']}, which another mount uses already; keep one")
        supplied[spec_mount["destination"]] = spec_mount
    file_mode = "ro" if readonly_rootfs else "rw"
    for destination, source in (("/etc/hostname", sandbox.hostname_path), ("/etc/hosts", sandbox.hosts_path),
                                ("/etc/resolv.conf", sandbox.resolv_conf_path)):
        if source and destination not in supplied:
            supplied[destination] = _bind(source, destination, "rprivate", file_mode)
    if sandbox.shm_path and "/dev/shm" not in supplied:
        supplied["/dev/shm"] = _bind(sandbox.shm_path, "/dev/shm", "rprivate", "rw")
    for path in image_volumes_needed(config, image):
        if path not in supplied:
            supplied[path] = _bind(_volume_source(volume_dirs, path), path, "rprivate", "rw")

    mounts = [m for m in defaults.default_mounts(privileged=privileged)
              if m["destination"] not in supplied
              and not ("/dev" in supplied and m["destination"].startswith("/dev/"))]
    ordered = sorted(supplied.values(), key=lambda m: m["destination"].rstrip("/").count("/"))
    mounts.extend(ordered)
    options = {opt for m in ordered for opt in m["options"]}
    propagation = "rshared" if "rshared" in options else "rslave" if "rslave" in options else ""
    return mounts, propagation


def mount_propagation_needs(spec: Mapping[str, Any]) -> tuple[PropagationNeed, ...]:
    """The bind mounts of a built spec whose host source must be a shared or slave mount."""
    needs = []
    for mount in spec.get("mounts", ()):
        options = mount.get("options") or ()
        if mount.get("type") != "bind":
            continue
        if "rshared" in options:
            needs.append(PropagationNeed(source=mount["source"], destination=mount["destination"],
                                         propagation="shared"))
        elif "rslave" in options:
            needs.append(PropagationNeed(source=mount["source"], destination=mount["destination"],
                                         propagation="slave"))
    return tuple(needs)


__all__ = ["PropagationNeed", "clean_path", "container_mounts", "idmapped_mounts", "image_volumes_needed",
           "is_image_mount", "mount_propagation_needs"]
