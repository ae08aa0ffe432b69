"""One load of the CNI configuration: every file read, validated against the plugins, the default chosen.

The outcome is an immutable `Snapshot`; the manager swaps it in whole, so readers (Status, RunPodSandbox)
never see a half-done reload. A snapshot with no default network carries the message NetworkReady shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from crib.config import NetworkConfig
from crib.network import conf as conf_mod
from crib.network import invoke
from crib.network.chain import Chain


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkInfo:
    """One config file as the last load saw it (shown in Status info)."""

    path: str
    name: str = ""
    cni_version: str = ""  # the negotiated version; empty when the file is unusable
    plugins: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The outcome of a load. Ready when there is a default network and `message` is empty."""

    default: conf_mod.NetworkConfigList | None = None
    version: str = ""
    networks: tuple[NetworkInfo, ...] = ()
    message: str = "CNI configuration not loaded yet"
    loaded_at: float = 0.0

    @property
    def ready(self) -> bool:
        return self.default is not None and not self.message


class ConfLoader:
    """Loads the conf dirs; remembers each plugin binary's VERSION answer until the binary changes."""

    def __init__(self, cfg: NetworkConfig, runner: invoke.PluginExec, chain: Chain, timeout: float) -> None:
        self._cfg = cfg
        self._runner = runner
        self._chain = chain
        self._timeout = timeout
        self._versions: dict[tuple[str, int, int], tuple[str, ...]] = {}

    async def load(self) -> Snapshot:
        files = await asyncio.to_thread(conf_mod.conf_files, self._cfg.conf_dirs)
        parsed = await asyncio.to_thread(conf_mod.load_files, files)
        infos: list[NetworkInfo] = []
        usable: list[tuple[conf_mod.NetworkConfigList, str]] = []
        for item in parsed:
            if item.conf is None:
                infos.append(NetworkInfo(path=item.path, error=item.error))
                continue
            try:
                version = await self._validate(item.conf)
            except conf_mod.ConfInvalid as exc:
                infos.append(NetworkInfo(path=item.path, name=item.conf.name, plugins=item.conf.types,
                                         error=str(exc)))
                continue
            infos.append(NetworkInfo(path=item.path, name=item.conf.name, cni_version=version,
                                     plugins=item.conf.types))
            usable.append((item.conf, version))
        snapshot = Snapshot(networks=tuple(infos), loaded_at=time.time())
        return await self._choose(snapshot, files, usable)

    async def _choose(self, snapshot: Snapshot, files: Sequence[str],
                      usable: list[tuple[conf_mod.NetworkConfigList, str]]) -> Snapshot:
        dirs = ", ".join(self._cfg.conf_dirs)
        problems = "; ".join(i.error for i in snapshot.networks if i.error)
        wanted = self._cfg.default_network
        chosen = [(c, v) for c, v in usable if c.name == wanted] if wanted else usable
        if not chosen:
            if wanted:
                names = ", ".join(sorted({c.name for c, _ in usable})) or "none"
                msg = (f"network.default_network is {wanted!r} but no valid CNI config in {dirs} has that "
                       f"name (valid networks: {names})" + (f"; {problems}" if problems else ""))
            elif not files:
                msg = f"no CNI network config found in {dirs}; add a .conflist there"
                if not self._cfg.write_default_conflist:
                    msg += " (network.write_default_conflist is off, so crib writes none)"
            else:
                msg = f"no valid CNI network config in {dirs}: {problems}"
            return dataclasses.replace(snapshot, message=msg)
        default, version = chosen[0]
        try:
            await self._chain.status(default, version)
        except Exception as exc:
            # STATUS failing makes the node NotReady, but ADD is still tried (spec: STATUS is informational).
            return dataclasses.replace(snapshot, default=default, version=version,
                            message=f"network {default.name!r} ({default.source}) reports not ready: {exc}")
        return dataclasses.replace(snapshot, default=default, version=version, message="")

    async def _validate(self, conf: conf_mod.NetworkConfigList) -> str:
        """Every plugin present and executable, and a version all of them speak; returns that version."""
        versions: dict[str, tuple[str, ...]] = {}
        for ptype in conf.types:
            path = invoke.find_plugin(ptype, self._cfg.plugin_dirs)
            if path is None:
                raise conf_mod.ConfInvalid(
                    f"{conf.source}: CNI plugin {ptype!r} not found in "
                    f"{os.pathsep.join(self._cfg.plugin_dirs)}; install it or fix network.plugin_dirs")
            versions[ptype] = await self._plugin_versions(path, conf.source)
        return conf_mod.negotiate(conf, versions)

    async def _plugin_versions(self, path: str, source: str) -> tuple[str, ...]:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise conf_mod.ConfInvalid(f"{source}: CNI plugin {path}: {exc.strerror}") from None
        key = (path, st.st_mtime_ns, st.st_size)
        if key not in self._versions:
            try:
                self._versions[key] = await invoke.plugin_versions(self._runner, path, timeout=self._timeout)
            except Exception as exc:
                raise conf_mod.ConfInvalid(
                    f"{source}: CNI plugin {path} does not answer VERSION: {exc}") from exc
        return self._versions[key]


__all__ = ["ConfLoader", "NetworkInfo", "Snapshot"]
