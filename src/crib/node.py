"""The node's pod and container machinery, composed: part of the composition root (daemon.py).

Start-up order matters: directories, then the records (SQLite), then restore (undo creations cut by a
crash, finish removals, pick up exits that happened while the daemon was down), and only then the exit
watcher and the gRPC server. Shutdown stops the watcher and touches no container: conmon owns them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crib import log
from crib.config import Config
from crib.containers import ContainerDeps, ContainerService, EventBus, ImageSource
from crib.containers.hostfacts import probe
from crib.hooks import NO_HOOKS, LifecycleHooks
from crib.metrics import Sampler, ops
from crib.network import PodNetwork
from crib.runtime import handlers
from crib.runtime.conmon import Monitor
from crib.runtime.exits import Exit, ExitWatcher
from crib.runtime.layout import Layout
from crib.runtime.runc import Runc
from crib.sandbox import SandboxDeps, SandboxService
from crib.state.db import Database
from crib.state.pending import KeyedLocks
from crib.state.records import ContainerRecord, Phase, SandboxRecord
from crib.state.store import RuntimeStore
from crib.streaming import Attachment, AttachRequest, Dialer, ExecRequest, PortForwardRequest, Process
from crib.system.cgroups import Cgroups

_log = log.get(__name__)


@dataclass(slots=True, kw_only=True)
class Node:
    layout: Layout
    store: RuntimeStore
    sandboxes: SandboxService
    containers: ContainerService
    watcher: ExitWatcher

    async def close(self) -> None:
        self.watcher.stop()
        await self.sandboxes.close()
        await self.containers.close()


class StreamBackend:
    """The node as streaming sessions see it (crib.streaming.Backend): exec and attach go to the
    containers, port forwarding to the pods."""

    def __init__(self, containers: ContainerService, sandboxes: SandboxService) -> None:
        self._containers = containers
        self._sandboxes = sandboxes

    async def exec(self, request: ExecRequest) -> Process:
        return await self._containers.exec_attached(request.container_id, list(request.cmd), tty=request.tty,
                                                    stdin=request.stdin, stdout=request.stdout,
                                                    stderr=request.stderr and not request.tty)

    async def attach(self, request: AttachRequest) -> Attachment:
        return self._containers.attach(request.container_id)

    def dialer(self, request: PortForwardRequest) -> Dialer:
        return self._sandboxes.dialer(request.sandbox_id)


def _prepare_dirs(cfg: Config, layout: Layout) -> None:
    for d in layout.fixed_dirs():
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    for d in layout.traversable_dirs():
        os.chmod(d, 0o711)
    for name in cfg.runtime.handlers:
        Path(cfg.handler_root(name)).mkdir(parents=True, exist_ok=True, mode=0o700)
    rootfs = layout.infra_rootfs
    binary = Path(cfg.runtime.infra_binary)
    if binary.is_file():
        for sub in ("proc", "dev", "sys"):
            (rootfs / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
        target = rootfs / "catatonit"
        if not target.exists() or target.stat().st_size != binary.stat().st_size:
            tmp = rootfs / ".catatonit.tmp"
            shutil.copyfile(binary, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)


async def build_node(cfg: Config, db: Database, network: PodNetwork, images: ImageSource,
                     hooks: LifecycleHooks = NO_HOOKS) -> Node:
    """Construct and restore the pod and container services; see the module note.

    hooks: what the lifecycles tell node plugins (the NRI runtime when it is on).
    """
    layout = Layout(Path(cfg.root), Path(cfg.runroot))
    _prepare_dirs(cfg, layout)
    store = RuntimeStore(db)
    runcs = {name: Runc(handler=name, path=h.path, root=cfg.handler_root(name),
                        global_args=tuple(h.runtime_args), sandboxed=h.sandboxed)
             for name, h in cfg.runtime.handlers.items()}
    monitor = Monitor(conmon=cfg.runtime.conmon, exit_dir=layout.exits, socket_dir=layout.attach,
                      log_size_max=cfg.runtime.log_size_max, create_timeout=float(cfg.runtime.create_timeout))
    cgroups, locks = Cgroups(), KeyedLocks()
    host = await probe(runcs[cfg.runtime.default_handler], cgroups)
    problem = await handlers.userns_problem(layout.root / "layers", layout.userns(".probe"), layout.runroot)
    features = {name: await handlers.probe(r, userns_problem=problem) for name, r in runcs.items()}
    deps = SandboxDeps(cfg=cfg, layout=layout, store=store, cgroups=cgroups, network=network,
                       monitor=monitor, runcs=runcs, locks=locks, host=host, features=features,
                       hooks=hooks)
    sandboxes = SandboxService(deps)
    containers = ContainerService(ContainerDeps(
        cfg=cfg, layout=layout, store=store, cgroups=cgroups, monitor=monitor, runcs=runcs, locks=locks,
        images=images, host=host, sandboxes=sandboxes, events=EventBus(),
        sampler=Sampler(cgroups=cgroups, layout=layout, max_age=float(cfg.metrics.max_age)), hooks=hooks))
    deps.containers = containers
    await containers.restore()
    await sandboxes.restore()
    ops.COUNTERS.restored += len(store.sandboxes) + len(store.containers)

    def on_exit(found: Exit) -> None:
        if found.cid in store.containers:
            containers.on_exit(found)
        elif found.cid in store.sandboxes:
            sandboxes.on_infra_exit(found.cid)

    watcher = ExitWatcher(layout.exits, on_exit)
    watcher.start()
    log.event(_log, 20, "node restored", pods=len(store.sandboxes), containers=len(store.containers))
    return Node(layout=layout, store=store, sandboxes=sandboxes, containers=containers, watcher=watcher)


class PluginAccess:
    """What node plugins (crib.nri.NodeAccess) may see of and do to the node."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def pods(self) -> Iterable[SandboxRecord]:
        return [p for p in self._node.store.sandboxes.values() if p.phase is Phase.CREATED]

    def containers(self) -> Iterable[ContainerRecord]:
        return [c for c in self._node.store.containers.values() if c.phase is Phase.CREATED]

    def spec(self, container_id: str) -> dict[str, Any] | None:
        try:
            path = self._node.layout.bundle(container_id) / "config.json"
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        await self._node.containers.update_linux(container_id, resources)

    async def evict(self, container_id: str, reason: str) -> None:
        log.event(_log, 30, "evicting container", container=container_id, reason=reason)
        await self._node.containers.stop(container_id, 0.0)


__all__ = ["Node", "PluginAccess", "StreamBackend", "build_node"]
