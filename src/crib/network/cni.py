"""The CNI manager: crib's PodNetwork. Loads and watches network configs, reports NetworkReady, runs ADD/DEL.

Design notes:
- Readiness is a state, not a precondition: a reload (at start, on any change in the conf or plugin dirs,
  on a new pod CIDR) swaps in one immutable Snapshot (network/loader.py); `condition()` and `setup()`
  read it. Host-network pods never come here, so they run while the network is not ready.
- Every attachment goes through the cache (network/cache.py) before its first plugin runs, after each
  plugin, and when complete; DEL always uses the cached configuration and result, never the current
  file. An ADD that fails (or is cancelled) runs DEL at once, shielded and under its own deadline, so
  nothing of it is left; if even that DEL fails, the entry stays and the pod's teardown retries it.
- One lock per pod: the spec forbids parallel operations on one container. GC (1.1.0 plugins) runs
  exclusively of every ADD and DEL.
- Host ports are reserved (network/hostports.py) before ADD and given back once every attachment of the
  pod is deleted, so a clash is an error at RunPodSandbox instead of two DNAT rules fighting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from typing import Any

from crib import log
from crib.config import NetworkConfig
from crib.errors import FailedPrecondition, InvalidArgument, Unavailable
from crib.network import conf as conf_mod
from crib.network import defaults, hostports, invoke, results
from crib.network.cache import Attachment, ResultCache
from crib.network.chain import Chain
from crib.network.loader import ConfLoader, Snapshot
from crib.network.runtimeconf import capability_args, cni_args
from crib.network.types import PodNetworkRequest, PodNetworkStatus
from crib.network.watch import Watcher
from crib.runtime.health import NETWORK_READY, Condition

_log = log.get(__name__)

IFNAME = "eth0"
NOT_READY_REASON = "NetworkPluginNotReady"
# STATUS (1.1.0 plugins) is asked again this often, in seconds; config changes are noticed every second.
STATUS_INTERVAL = 10.0


def _is_netns(path: str) -> bool:
    """Whether path is a pinned network namespace (a file on nsfs), not a leftover plain file."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


class _Gate:
    """Many shared holders (ADD/DEL of different pods) or one exclusive holder (GC)."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
            self._exclusive = True
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class CNIManager:
    """Pod networking through CNI plugins; see the module note."""

    def __init__(self, cfg: NetworkConfig, *, root: str, runner: invoke.PluginExec | None = None,
                 watch_interval: float = 1.0, is_netns: Callable[[str], bool] = _is_netns,
                 host_ports: hostports.HostPorts | None = None) -> None:
        """Args:
            cfg: the [network] configuration.
            root: crib's persistent root (cache in <root>/cni/results, default leases in <root>/cni/networks).
            runner: how plugins are executed (a fake in unit tests).
            watch_interval: seconds between looks at the conf and plugin dirs.
            is_netns: whether a path is a pinned network namespace (a fake in unit tests, which have no root).
            host_ports: the host-port reservations (one binding no sockets in unit tests).
        """
        self._cfg = cfg
        self._is_netns = is_netns
        self._timeout = float(cfg.plugin_timeout)
        runner = runner or invoke.ProcExec()
        self._chain = Chain(runner, cfg.plugin_dirs, self._timeout)
        self._loader = ConfLoader(cfg, runner, self._chain, self._timeout)
        self._cache = ResultCache(Path(root) / "cni" / "results")
        self._data_dir = str(Path(root) / "cni" / "networks")
        self._snapshot = Snapshot()
        self._reload_lock = asyncio.Lock()
        self._pod_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._gate = _Gate()
        self.host_ports = host_ports or hostports.HostPorts()
        self._background: set[asyncio.Task[Any]] = set()
        self._pod_cidr = ""
        self._default_written = ""
        self._last_reload = 0.0
        self._watcher = Watcher([*cfg.conf_dirs, *cfg.plugin_dirs], self.reload, interval=watch_interval,
                                on_tick=self._status_tick)

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Write the default conflist if the node has none (and config allows), load, start watching."""
        try:
            await self._ensure_default(rewrite=False)
        except OSError as exc:  # an unwritable conf dir leaves the network not ready, it does not stop crib
            log.event(_log, 30, "cannot write the default CNI network config", path=str(self._default_path()),
                      error=str(exc))
        self._watcher.mark_seen()
        await self.reload()
        await self._hold_cached_ports()
        self._watcher.start()

    async def stop(self) -> None:
        await self._watcher.stop()
        self.host_ports.close()

    async def _hold_cached_ports(self) -> None:
        """After a restart: take again the host ports of the attachments that are up (see hostports.py)."""
        for att in await asyncio.to_thread(self._cache.all):
            wanted = hostports.from_capability(att.capability_args.get("portMappings") or [])
            if not att.complete or not wanted:
                continue
            try:
                self.host_ports.reserve(att.container_id, wanted)
            except Exception as exc:
                log.event(_log, 30, "cannot hold a running pod's host ports again after the restart; its "
                          "DNAT rules stay, but another process may take the port", sandbox=att.container_id,
                          error=str(exc))

    # ------------------------------------------------------------------------------------ readiness

    def condition(self) -> Condition:
        snap = self._snapshot
        if not snap.ready:
            return Condition(type=NETWORK_READY, status=False, reason=NOT_READY_REASON, message=snap.message)
        return Condition(type=NETWORK_READY, status=True)

    def status_info(self) -> dict[str, str]:
        """Verbose Status info: the loaded networks and the last load's outcome, each value JSON."""
        snap = self._snapshot
        cniconfig = {
            "pluginDirs": list(self._cfg.plugin_dirs),
            "pluginConfDirs": list(self._cfg.conf_dirs),
            "defaultNetwork": snap.default.name if snap.default else None,
            "defaultNetworkFile": snap.default.source if snap.default else None,
            "cniVersion": snap.version or None,
            "interface": IFNAME,
            "podCIDR": self._pod_cidr or None,
            "defaultConflistWritten": self._default_written or None,
            "networks": [dataclasses.asdict(n) for n in snap.networks],
            "loadedAt": snap.loaded_at,
        }
        return {"cniconfig": json.dumps(cniconfig), "lastCNILoadStatus": json.dumps(snap.message or "OK")}

    async def reload(self) -> None:
        """Re-read every config file, validate it against the plugins, and choose the default network."""
        async with self._reload_lock:
            before = self._snapshot
            try:
                after = await self._loader.load()
            except Exception as exc:  # e.g. an unreadable conf dir: a state to report, not a crash
                after = Snapshot(message=f"cannot load the CNI config: {exc}", loaded_at=time.time())
            self._snapshot = after
            self._last_reload = time.monotonic()
        if after.ready and (not before.ready or before.default != after.default):
            assert after.default is not None
            log.event(_log, 20, "CNI network ready", network=after.default.name, file=after.default.source,
                      cni_version=after.version, plugins=",".join(after.default.types))
        elif not after.ready and (before.ready or before.message != after.message):
            log.event(_log, 30, "CNI network not ready", reason=after.message)

    async def _status_tick(self) -> None:
        """Ask STATUS again now and then, for plugins that have it (1.1.0)."""
        snap = self._snapshot
        if snap.default is None or time.monotonic() - self._last_reload < STATUS_INTERVAL:
            return
        if conf_mod.version_key(snap.version) >= conf_mod.version_key("1.1.0"):
            await self.reload()

    # ------------------------------------------------------------------------------ default network

    def _default_path(self) -> Path:
        return Path(self._cfg.conf_dirs[0]) / defaults.FILE_NAME

    async def _ensure_default(self, *, rewrite: bool) -> None:
        """Write crib's conflist when the node has no config, or rewrite crib's own file (new pod CIDR)."""
        if not self._cfg.write_default_conflist or not self._cfg.conf_dirs:
            return
        path = self._default_path()
        existing = await asyncio.to_thread(conf_mod.conf_files, self._cfg.conf_dirs)
        owned = await asyncio.to_thread(defaults.owned_pod_cidr, path)
        if owned is not None:
            self._default_written = str(path)
            self._pod_cidr = self._pod_cidr or owned
        if existing and (owned is None or not rewrite):
            return
        subnets = self._pod_cidr or self._cfg.default_subnet
        doc = defaults.render(subnets=subnets, bridge=self._cfg.default_bridge, data_dir=self._data_dir,
                              extra_plugins=self._cfg.default_extra_plugins, pod_cidr=self._pod_cidr)
        if await asyncio.to_thread(defaults.write, path, doc):
            log.event(_log, 20, "wrote the default CNI network config", path=str(path), subnet=subnets,
                      bridge=self._cfg.default_bridge)
        self._default_written = str(path)

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        """kubelet's pod CIDR (UpdateRuntimeConfig): the subnet of crib's own default network from now on.

        A config that is not crib's is left alone (the operator's network decides addresses); the CIDR is
        still recorded and shown in Status info.

        Raises:
            InvalidArgument: not a subnet, or more than one per family.
        """
        pod_cidr = ",".join(part.strip() for part in pod_cidr.split(",") if part.strip())
        if not pod_cidr:
            return
        try:
            defaults.parse_subnets(pod_cidr)
        except ValueError as exc:
            raise InvalidArgument(f"pod_cidr {pod_cidr!r}: {exc}") from None
        if pod_cidr == self._pod_cidr:
            return
        self._pod_cidr = pod_cidr
        log.event(_log, 20, "pod CIDR updated", pod_cidr=pod_cidr)
        await self._ensure_default(rewrite=True)
        await self.reload()
        self._watcher.mark_seen()

    # --------------------------------------------------------------------------------- attachments

    @contextlib.asynccontextmanager
    async def _pod(self, sandbox_id: str) -> AsyncIterator[None]:
        """Hold the pod's lock (and keep GC out); the lock is forgotten when nobody holds or awaits it."""
        lock, users = self._pod_locks.get(sandbox_id, (asyncio.Lock(), 0))
        self._pod_locks[sandbox_id] = (lock, users + 1)
        try:
            async with self._gate.shared(), lock:
                yield
        finally:
            lock, users = self._pod_locks[sandbox_id]
            if users == 1:
                del self._pod_locks[sandbox_id]
            else:
                self._pod_locks[sandbox_id] = (lock, users - 1)

    async def setup(self, request: PodNetworkRequest) -> PodNetworkStatus:
        """CNI ADD of the pod to the default network; on failure DEL already ran.

        Raises:
            Unavailable: no usable network config (NetworkReady is false; the message says why).
            FailedPrecondition: the pod's network namespace is not there, or a plugin binary is missing.
            InvalidArgument: port mappings or bandwidth annotations are malformed.
            CNIPluginError, DeadlineExceeded: a plugin failed; its code, message and stderr are included.
        """
        snap = self._snapshot
        if snap.default is None:
            raise Unavailable(f"{NOT_READY_REASON}: {snap.message}")
        if not self._is_netns(request.netns_path):
            raise FailedPrecondition(f"pod {request.sandbox_id}: {request.netns_path!r} is not a pinned "
                                     "network namespace")
        conf = snap.default
        att = Attachment(container_id=request.sandbox_id, network_name=conf.name, ifname=IFNAME,
                         netns=request.netns_path, config=conf.raw, cni_version=snap.version,
                         cni_args=cni_args(request), capability_args=capability_args(request))
        async with self._pod(request.sandbox_id):
            self.host_ports.reserve(request.sandbox_id, request.port_mappings)
            try:
                for stale in await asyncio.to_thread(self._cache.for_container, request.sandbox_id):
                    await self._delete(stale)  # never ADD twice without a DEL in between (spec section 2)
                result = await self._add(conf, att)
            except BaseException:
                await self._release_ports_if_down(request.sandbox_id)
                raise
        ips = results.pod_ips(results.parse(result), IFNAME)
        log.event(_log, 20, "pod network up", sandbox=request.sandbox_id, network=conf.name,
                  ips=",".join(ips))
        return PodNetworkStatus(ips=ips, network_name=conf.name, interface=IFNAME)

    async def _add(self, conf: conf_mod.NetworkConfigList, att: Attachment) -> dict[str, Any]:
        current = att
        await asyncio.to_thread(self._cache.write, current)  # the intent: DEL is owed from here on

        async def progress(result: dict[str, Any]) -> None:
            nonlocal current
            current = dataclasses.replace(current, result=result)
            await asyncio.to_thread(self._cache.write, current)

        try:
            result = await self._chain.add(conf, att.cni_version, att, progress)
            try:
                results.parse(result)
            except results.ResultInvalid as exc:  # a result crib cannot read is a failed ADD
                raise invoke.CNIPluginError(f"network {conf.name!r}: the ADD result cannot be used: {exc}",
                                            plugin=conf.types[-1], command="ADD") from exc
        except BaseException as exc:
            undo = asyncio.get_running_loop().create_task(self._undo(current))
            self._background.add(undo)  # a cancelled caller must not let the undo be collected half-way
            undo.add_done_callback(self._background.discard)
            note = await asyncio.shield(undo)
            if isinstance(exc, Exception) and exc.args and isinstance(exc.args[0], str):
                exc.args = (exc.args[0] + note, *exc.args[1:])
            raise
        await asyncio.to_thread(self._cache.write, dataclasses.replace(current, result=result, complete=True))
        return result

    async def _undo(self, att: Attachment) -> str:
        """DEL a failed ADD under its own deadline; returns a note for the ADD's error message."""
        budget = self._timeout * (len(conf_mod.from_cached(att.config).plugins) + 1)
        try:
            async with asyncio.timeout(budget):
                await self._delete(att)
        except Exception as exc:
            log.event(_log, 40, "DEL after a failed ADD failed; the pod's teardown retries it",
                      sandbox=att.container_id, network=att.network_name, error=str(exc))
            return f"; undoing it with DEL failed too ({exc}); the pod's teardown retries it"
        return "; the partial attachment was removed (DEL ran)"

    async def _delete(self, att: Attachment) -> None:
        conf = conf_mod.from_cached(att.config)
        version = att.cni_version or conf.candidate_versions()[0]
        # DEL without a namespace still releases addresses and host-side state (spec: CNI_NETNS is optional).
        netns = att.netns if att.netns and self._is_netns(att.netns) else ""
        await self._chain.delete(conf, version, dataclasses.replace(att, netns=netns))
        await asyncio.to_thread(self._cache.remove, att)

    async def teardown(self, request: PodNetworkRequest) -> None:
        """CNI DEL of every attachment the pod has, with the cached config and result; idempotent.

        Raises:
            CNIPluginError, DeadlineExceeded, FailedPrecondition: a plugin failed; the entry stays cached and
                the next teardown retries it.
        """
        async with self._pod(request.sandbox_id):
            for att in await asyncio.to_thread(self._cache.for_container, request.sandbox_id):
                await self._delete(att)
                log.event(_log, 20, "pod network down", sandbox=request.sandbox_id, network=att.network_name)
            await asyncio.to_thread(self._cache.drop_temps, lambda owner: owner != request.sandbox_id)
            for path in await asyncio.to_thread(self._cache.corrupt, request.sandbox_id):
                # Written atomically by crib, so only tampering or a broken disk gets here; without the entry
                # there is no config to DEL with, so say so loudly rather than guess.
                log.event(_log, 40, "unreadable CNI cache entry: this pod's network cannot be torn down; "
                          "inspect the file, then run DEL by hand or remove it", sandbox=request.sandbox_id,
                          path=path)
            await self._release_ports_if_down(request.sandbox_id)

    async def _release_ports_if_down(self, sandbox_id: str) -> None:
        """Give back a pod's host ports once no attachment of it is left (a failed DEL keeps them: its DNAT
        rules may still be there)."""
        if not await asyncio.to_thread(self._cache.for_container, sandbox_id):
            self.host_ports.release(sandbox_id)

    async def check(self, request: PodNetworkRequest) -> None:
        """CNI CHECK of the pod's attachments (where the config and its version allow it).

        Raises:
            FailedPrecondition: the pod's ADD never completed.
            CNIPluginError: a plugin found the attachment broken.
        """
        async with self._pod(request.sandbox_id):
            for att in await asyncio.to_thread(self._cache.for_container, request.sandbox_id):
                if not att.complete:
                    raise FailedPrecondition(f"pod {request.sandbox_id}: its ADD to network "
                                             f"{att.network_name!r} never completed")
                await self._chain.check(conf_mod.from_cached(att.config), att.cni_version, att)

    def attachments(self) -> list[Attachment]:
        """Every cached attachment (blocking read; for tools and tests)."""
        return self._cache.all()

    async def reconcile(self, live_sandbox_ids: Collection[str]) -> list[str]:
        """After a restart: DEL every cached attachment of a pod that no longer exists, then GC (1.1.0).

        Returns the sandbox ids whose DEL failed (they stay cached and are retried next time).
        """
        failed: list[str] = []
        async with self._gate.exclusive():
            for att in await asyncio.to_thread(self._cache.all):
                if att.container_id in live_sandbox_ids:
                    continue
                try:
                    await self._delete(att)
                    await self._release_ports_if_down(att.container_id)
                    log.event(_log, 20, "removed the network attachment of a pod that is gone",
                              sandbox=att.container_id, network=att.network_name)
                except Exception as exc:
                    failed.append(att.container_id)
                    log.event(_log, 40, "cannot remove a stale network attachment", sandbox=att.container_id,
                              network=att.network_name, error=str(exc))
            for path in await asyncio.to_thread(self._cache.corrupt):
                log.event(_log, 40, "unreadable CNI cache entry left alone; inspect and remove it", path=path)
            # Under the exclusive gate no write is under way: a temporary file is one a killed daemon left.
            await asyncio.to_thread(self._cache.drop_temps)
            snap = self._snapshot
            if snap.default is not None:
                valid = [(a.container_id, a.ifname) for a in await asyncio.to_thread(self._cache.all)
                         if a.network_name == snap.default.name]
                for problem in await self._chain.gc(snap.default, snap.version, valid):
                    log.event(_log, 30, "CNI GC reported an error", network=snap.default.name,
                              error=str(problem))
        return failed


__all__ = ["IFNAME", "NOT_READY_REASON", "CNIManager"]
