"""Container records, usage and events -> CRI messages (the servicer's conversions)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.containers import ContainerEvent, EventKind, state_of
from crib.cri import sandbox_convert, wire
from crib.state.records import ContainerRecord, MountRecord

_STATE = {"created": api.CONTAINER_CREATED, "running": api.CONTAINER_RUNNING, "exited": api.CONTAINER_EXITED}
_STATE_NAME = {api.CONTAINER_CREATED: "created", api.CONTAINER_RUNNING: "running",
               api.CONTAINER_EXITED: "exited", api.CONTAINER_UNKNOWN: "unknown"}
_EVENT = {EventKind.CREATED: api.CONTAINER_CREATED_EVENT, EventKind.STARTED: api.CONTAINER_STARTED_EVENT,
          EventKind.STOPPED: api.CONTAINER_STOPPED_EVENT, EventKind.DELETED: api.CONTAINER_DELETED_EVENT}


def state_filter(value: api.ContainerStateValue | None) -> str:
    return "" if value is None else _STATE_NAME.get(value.state, "unknown")


def _meta(rec: ContainerRecord) -> api.ContainerMetadata:
    return api.ContainerMetadata(name=rec.meta_name, attempt=rec.attempt)


def _image(rec: ContainerRecord) -> api.ImageSpec:
    return api.ImageSpec(image=rec.image, user_specified_image=rec.image)


def container(rec: ContainerRecord) -> api.Container:
    """ListContainers item."""
    return api.Container(id=rec.id, pod_sandbox_id=rec.sandbox_id, metadata=_meta(rec), image=_image(rec),
                         image_ref=rec.image_ref, state=_STATE[state_of(rec)], created_at=rec.created_at,
                         labels=rec.labels, annotations=rec.annotations, image_id=rec.image_id)


def _stop_signal(rec: ContainerRecord) -> int:
    raw = rec.stop_signal.strip().upper()
    if not raw:
        return int(api.RUNTIME_DEFAULT)
    name = raw if raw.startswith("SIG") else "SIG" + raw
    if raw.isdigit():
        try:
            name = signal.Signals(int(raw)).name
        except ValueError:
            return int(api.RUNTIME_DEFAULT)
    return int(api.Signal.Value(name)) if name in api.Signal.keys() else int(api.RUNTIME_DEFAULT)  # noqa: SIM118


def _mount(m: MountRecord) -> api.Mount:
    """A mount as ContainerStatus reports it; an image volume names its image and, as image_ref, the id
    kubelet's PullImage got (KEP-5365)."""
    out = api.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                    recursive_read_only=m.recursive_read_only, selinux_relabel=m.selinux_relabel,
                    propagation=m.propagation)  # type: ignore[arg-type]
    if m.image_id:
        out.image.CopyFrom(api.ImageSpec(image=m.image or m.image_id, image_ref=m.image_id))
        out.image_sub_path = m.image_sub_path
    return out


def status(rec: ContainerRecord) -> api.ContainerStatus:
    out = api.ContainerStatus(
        id=rec.id, metadata=_meta(rec), state=_STATE[state_of(rec)], created_at=rec.created_at,
        started_at=rec.started_at, finished_at=rec.finished_at, exit_code=rec.exit_code, image=_image(rec),
        image_ref=rec.image_ref, reason=rec.reason, message=rec.message, labels=rec.labels,
        annotations=rec.annotations, log_path=rec.log_path, image_id=rec.image_id,
        mounts=[_mount(m) for m in rec.mounts],
        user=api.ContainerUser(linux=api.LinuxContainerUser(
            uid=rec.user.uid, gid=rec.user.gid, supplemental_groups=list(rec.user.additional_gids))),
        stop_signal=_stop_signal(rec))  # type: ignore[arg-type]
    if rec.resources is not None:
        r = rec.resources
        out.resources.linux.CopyFrom(api.LinuxContainerResources(
            cpu_period=r.cpu_period, cpu_quota=r.cpu_quota, cpu_shares=r.cpu_shares,
            memory_limit_in_bytes=r.memory_limit_in_bytes, oom_score_adj=r.oom_score_adj,
            cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems, unified=r.unified,
            memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
            hugepage_limits=[api.HugepageLimit(page_size=k, limit=v) for k, v in r.hugepage_limits.items()]))
    return out


_ITEMS: wire.Cache[ContainerRecord] = wire.Cache(container)
_STATUSES: wire.Cache[ContainerRecord] = wire.Cache(status)


def list_response(recs: list[ContainerRecord], *, complete: bool) -> bytes:
    """ListContainersResponse, serialized (see cri/wire.py); complete = recs are all the containers."""
    return wire.list_reply(_ITEMS, recs, complete=complete)


def status_response(rec: ContainerRecord) -> bytes:
    """ContainerStatusResponse without verbose info, serialized."""
    return wire.field(1, _STATUSES.get(rec.id, rec))


def verbose_info(rec: ContainerRecord, bundle: Path) -> dict[str, str]:
    """ContainerStatus verbose info: {"info": JSON} with pid, sandbox and runtime spec (crictl inspect).

    The runtime spec is config.json's text as it is, not parsed and encoded again (0.2 ms of a verbose
    call, asked right after every start by critest's benchmark): crib writes that file whole
    (system/atomic.py), so it is one JSON object; anything else is left out, as a missing file is.
    """
    info: dict[str, Any] = {"pid": rec.pid, "sandboxID": rec.sandbox_id,
                            "runtimeHandler": rec.runtime_handler, "bundle": str(bundle),
                            "cgroupsPath": rec.cgroup_path, "phase": rec.phase.value,
                            "command": list(rec.command)}
    text = json.dumps(info, sort_keys=True)
    try:
        spec = (bundle / "config.json").read_text().strip()
    except (OSError, UnicodeDecodeError):
        spec = ""
    if spec.startswith("{") and spec.endswith("}"):
        text = f'{text[:-1]}, "runtimeSpec": {spec}}}'
    return {"info": text}


class VerboseStatuses:
    """Serialized verbose ContainerStatus replies, kept while the record and its config.json are the same.

    Reading and re-encoding the runtime spec was 0.25 ms of a 0.4 ms call (crictl inspect; critest's
    benchmark asks every status verbose: bench/README.md, issue 13). config.json is only ever replaced
    whole (system/atomic.py), so its inode, mtime and size say whether it changed. Few callers ask
    verbose, so few replies are kept.
    """

    def __init__(self, bundle: Callable[[str], Path]) -> None:
        self._bundle = bundle
        self._cache: wire.Cache[ContainerRecord] = wire.Cache(self._build, limit=64)

    def _build(self, rec: ContainerRecord) -> api.ContainerStatusResponse:
        return api.ContainerStatusResponse(status=status(rec), info=verbose_info(rec, self._bundle(rec.id)))

    def reply(self, rec: ContainerRecord) -> bytes:
        try:
            st = os.stat(self._bundle(rec.id) / "config.json")
            version: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            version = None
        return self._cache.get(rec.id, rec, version)


def event(e: ContainerEvent) -> api.ContainerEventResponse:
    out = api.ContainerEventResponse(container_id=e.container.id, container_event_type=_EVENT[e.kind],
                                     created_at=e.at_ns,
                                     containers_statuses=[status(c) for c in e.pod_containers])
    if e.sandbox is not None:
        out.pod_sandbox_status.CopyFrom(sandbox_convert.status(e.sandbox))
    return out


__all__ = ["VerboseStatuses", "container", "event", "list_response", "state_filter", "status",
           "status_response", "verbose_info"]
