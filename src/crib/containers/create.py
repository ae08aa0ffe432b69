"""CreateContainer, step by step (see sandbox/create.py for the discipline):

    resolve image (and image volumes) -> record CREATING (reserves the name) -> writable layer dirs ->
    overlay rootfs -> image volumes mounted read-only -> passwd/group, VOLUME dirs, devices -> config.json
    (crib.oci, then plugins' adjustments: NRI) -> conmon + runc create (conmon placed in the pod's cgroup
    first) -> record CREATED

A failure anywhere runs the undos in reverse and leaves nothing: no mount, no directory, no conmon, no
runc state, no row. Each step ends with a failpoint so that the tests can prove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from crib import failpoints, log, oci
from crib.containers import idmapped, imagevols
from crib.containers import inputs as gather
from crib.containers.deps import ContainerDeps
from crib.errors import FailedPrecondition
from crib.hooks import ContainerStep
from crib.rootfs import overlay
from crib.rootfs.overlay import Rootfs
from crib.runtime import conmon, exits
from crib.sandbox.info import pod_root, sandbox_info
from crib.state.records import (
    ContainerRecord,
    ImageRecord,
    MountRecord,
    Phase,
    ResourcesRecord,
    SandboxRecord,
    UserRecord,
)
from crib.state.undo import Undo
from crib.system import mount

_log = log.get(__name__)


def reserved_name(config: Any, sandbox_id: str) -> str:
    """The unique key of a container within the node: name_sandbox_attempt."""
    return f"{config.metadata.name}_{sandbox_id}_{config.metadata.attempt}"


def log_path(sandbox: SandboxRecord, config: Any) -> str:
    """The container's log file: the pod's log_directory joined with its log_path ("" = no log)."""
    if not config.log_path or not sandbox.log_directory:
        return ""
    return os.path.normpath(os.path.join(sandbox.log_directory, config.log_path.lstrip("/")))


def resources_record(res: Any, applied: dict[str, Any]) -> ResourcesRecord:
    """LinuxContainerResources as applied (oom_score_adj after clamping) for ContainerStatus."""
    return ResourcesRecord(
        cpu_period=res.cpu_period, cpu_quota=res.cpu_quota, cpu_shares=res.cpu_shares,
        memory_limit_in_bytes=res.memory_limit_in_bytes,
        memory_swap_limit_in_bytes=res.memory_swap_limit_in_bytes,
        oom_score_adj=int(applied.get("oomScoreAdj", res.oom_score_adj)),
        cpuset_cpus=res.cpuset_cpus, cpuset_mems=res.cpuset_mems,
        hugepage_limits={h.page_size: h.limit for h in res.hugepage_limits}, unified=dict(res.unified))


def _mount_record(m: Any, volume: ImageRecord | None) -> MountRecord:
    return MountRecord(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                       recursive_read_only=m.recursive_read_only, selinux_relabel=m.selinux_relabel,
                       propagation=m.propagation, image=m.image.image if volume else "",
                       image_id=volume.id if volume else "",
                       image_sub_path=m.image_sub_path if volume else "")


def initial_record(cid: str, name: str, sandbox: SandboxRecord, config: Any, image: ImageRecord,
                   volumes: dict[int, ImageRecord] | None = None) -> ContainerRecord:
    """The CREATING record; volumes are the images of the image mounts, by mount index."""
    volumes = volumes or {}
    return ContainerRecord(
        id=cid, name=name, sandbox_id=sandbox.id, meta_name=config.metadata.name,
        attempt=config.metadata.attempt, phase=Phase.CREATING, created_at=time.time_ns(),
        labels=dict(config.labels), annotations=dict(config.annotations),
        image=config.image.user_specified_image or config.image.image, image_id=image.id,
        image_ref=image.repo_digests[0] if image.repo_digests else image.id,
        runtime_handler=sandbox.runtime_handler, log_path=log_path(sandbox, config),
        mounts=tuple(_mount_record(m, volumes.get(i)) for i, m in enumerate(config.mounts)),
        stop_signal=image.config.stop_signal, tty=config.tty, stdin=config.stdin,
        stdin_once=config.stdin_once)


async def create(deps: ContainerDeps, rec: ContainerRecord, sandbox: SandboxRecord, config: Any,
                 sandbox_config: Any, image: ImageRecord,
                 volumes: dict[int, ImageRecord] | None = None) -> ContainerRecord:
    """Carry out CreateContainer for the CREATING record rec; returns the CREATED record.

    volumes: the images of config's image mounts by mount index (imagevols.resolve).
    """
    lay, cid = deps.layout, rec.id
    fs = Rootfs(data=lay.container_data(cid), target=lay.bundle(cid) / "rootfs")
    runc = deps.runcs[sandbox.runtime_handler]
    async with Undo(f"container {config.metadata.name}") as undo:
        deps.store.put_container(rec)
        undo.push("record", lambda: deps.store.delete_container(cid))
        failpoints.hit("container.record")

        layers = deps.images.layer_dirs(image)
        bundle = lay.bundle(cid)
        undo.push("bundle", lambda: shutil.rmtree(bundle, ignore_errors=True))
        undo.push("rootfs", lambda: overlay.remove(fs))
        overlay.prepare(fs)
        failpoints.hit("container.dirs")

        mapping = _idmapping(sandbox)
        await asyncio.to_thread(overlay.mount_rootfs, fs, layers, mapping)
        failpoints.hit("container.rootfs")

        info = sandbox_info(deps.layout, sandbox)
        undo.push("image volumes", lambda: imagevols.unmount_all(bundle))
        undo.push("ID-mapped volumes", lambda: idmapped.unmount_all(bundle))
        sources = await asyncio.to_thread(imagevols.mount_all, deps.images, bundle, config, volumes or {},
                                          mapping)
        sources.update(await asyncio.to_thread(idmapped.mount_all, bundle, config, info))
        failpoints.hit("container.image_volumes")

        spec = await asyncio.to_thread(_build_spec, deps, rec, info, config, sandbox_config, image, fs,
                                       sources)
        undo.push("plugins", functools.partial(deps.hooks.container, ContainerStep.REMOVE, rec))
        spec = await deps.hooks.adjust(rec, spec)  # still CREATING: not listed, not found by status
        _check_propagation(spec, config.metadata.name)
        (bundle / "config.json").write_text(json.dumps(spec))
        failpoints.hit("container.spec")

        if rec.log_path:
            Path(rec.log_path).parent.mkdir(parents=True, exist_ok=True)
        launch = conmon.Launch(cid=cid, name=config.metadata.name, bundle=bundle, log_path=rec.log_path,
                               runc=runc, terminal=config.tty, stdin=config.stdin,
                               stdin_once=config.stdin_once)
        cgroup = spec["linux"].get("cgroupsPath", "")
        undo.push("runtime", lambda: delete_runtime(deps, cid, runc, bundle, cgroup))
        created = await conmon.create(deps.monitor, launch, lambda pid: _place(deps, sandbox, pid))
        failpoints.hit("container.conmon")

        current = deps.store.sandboxes.get(sandbox.id)
        if current is None or not current.ready:
            raise FailedPrecondition(f"pod sandbox {sandbox.id} was stopped while container "
                                     f"{config.metadata.name!r} was being created")
        proc = spec["process"]
        user = proc.get("user", {})
        rec = deps.store.put_container(dataclasses.replace(
            rec, phase=Phase.CREATED, pid=created.pid, cgroup_path=spec["linux"].get("cgroupsPath", ""),
            user=UserRecord(uid=user.get("uid", 0), gid=user.get("gid", 0),
                            additional_gids=tuple(user.get("additionalGids", ()))),
            command=tuple(proc.get("args", ())),
            resources=resources_record(config.linux.resources, proc) if config.linux.HasField("resources")
            else None))
        undo.commit()
    return rec


def _idmapping(sandbox: SandboxRecord) -> overlay.IdMapping | None:
    """How a user-namespaced pod's container sees image files (None for a pod without a user namespace)."""
    root = pod_root(sandbox)
    if root is None:
        return None
    return overlay.IdMapping(userns=sandbox.userns_path, root_uid=root[0], root_gid=root[1])


def _build_spec(deps: ContainerDeps, rec: ContainerRecord, info: oci.SandboxInfo, config: Any,
                sandbox_config: Any, image: ImageRecord, fs: Rootfs,
                mount_sources: dict[int, str]) -> dict[str, Any]:
    needed = oci.image_volumes_needed(config, image.config)
    inputs = oci.ContainerInputs(
        container_id=rec.id, config=config, sandbox_config=sandbox_config,
        sandbox=info, image=image.config, image_name=rec.image,
        rootfs_path=str(fs.target), host=deps.host,
        passwd=overlay.read_file(fs, "/etc/passwd"), group=overlay.read_file(fs, "/etc/group"),
        volume_dirs=gather.volume_dirs(fs, needed), mount_sources=mount_sources,
        device_nodes=gather.device_nodes(config),
        target_pid_ns=gather.target_pid_ns(config, deps.store.containers),
        load_localhost=gather.localhost_loader(deps.cfg.runtime.seccomp_profile_root),
        allowed_annotations=tuple(deps.cfg.runtime.handlers[rec.runtime_handler].allowed_annotations),
        sandboxed=deps.runcs[rec.runtime_handler].sandboxed)
    spec: dict[str, Any] = oci.build_container_spec(inputs)
    return spec


def _check_propagation(spec: dict[str, Any], name: str) -> None:
    for need in oci.mount_propagation_needs(spec):
        point, kinds = mount.propagation(need.source)
        ok = "shared" in kinds if need.propagation == "shared" else bool(kinds)
        if not ok:
            raise FailedPrecondition(
                f"container {name!r}: mount {need.source} -> {need.destination} asks for {need.propagation} "
                f"propagation, but {point} (the host mount holding it) is private; make it shared first "
                f"(mount --make-rshared {point}) or use PROPAGATION_PRIVATE")


def _place(deps: ContainerDeps, sandbox: SandboxRecord, pid: int) -> None:
    """Move conmon into the pod's cgroup before it may fork runc (v2: a leaf of its own)."""
    target = sandbox.cgroup_parent
    if deps.cgroups.v2:
        target = f"{target.rstrip('/')}/crib-conmon"
        deps.cgroups.ensure(target)
    try:
        deps.cgroups.attach(target, pid)
    except OSError as exc:
        raise FailedPrecondition(f"cannot move conmon into the pod's cgroup {target}: "
                                 f"{exc.strerror}") from exc


async def delete_runtime(deps: ContainerDeps, cid: str, runc: Any, bundle: Path, cgroup: str) -> None:
    """Undo of the conmon step, and part of removal: conmon, runc's state, whatever is left in the
    container's cgroup (a `runc init` orphaned by a runc killed mid-create, which runc has no state for),
    the exit and attach files. Idempotent."""
    conmon.shim_abort(bundle)
    conmon.kill_monitor(bundle)
    await runc.delete(cid, force=True)
    if cgroup:
        failed = await asyncio.to_thread(deps.cgroups.kill_and_remove, cgroup)
        if failed:
            log.event(_log, 30, "container cgroup not removed", container=cid, problems="; ".join(failed))
    exits.forget(deps.layout.exits, cid)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(deps.layout.attach / cid)


__all__ = ["create", "delete_runtime", "initial_record", "log_path", "reserved_name", "resources_record"]
