"""Executing a network configuration list: ADD in order, DEL in reverse, CHECK, STATUS, GC (spec section 3).

For each plugin the runtime derives the request configuration from the plugin object: it inserts
`cniVersion` (the negotiated one) and `name` (the network's), `runtimeConfig` (the capability arguments the
plugin declares), `prevResult` (ADD: the previous plugin's result, none for the first; DEL and CHECK: the
cached ADD result) and drops `capabilities`. Every other key passes through unchanged.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from crib.errors import FailedPrecondition
from crib.metrics import ops
from crib.network import invoke
from crib.network.cache import Attachment
from crib.network.conf import NetworkConfigList, version_key
from crib.network.runtimeconf import runtime_config

ProgressHook = Callable[[dict[str, Any]], Awaitable[None]]


def request_conf(plugin: dict[str, Any], *, network: str, version: str, caps: dict[str, Any] | None,
                 prev_result: dict[str, Any] | None) -> dict[str, Any]:
    """The stdin configuration of one plugin call (section 3, "Deriving request configuration")."""
    conf = {k: v for k, v in plugin.items() if k != "capabilities"}
    conf["cniVersion"] = version
    conf["name"] = network
    if caps is not None:
        rc = runtime_config(plugin, caps)
        if rc:
            conf["runtimeConfig"] = rc
        else:
            conf.pop("runtimeConfig", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    else:
        conf.pop("prevResult", None)
    return conf


@contextlib.contextmanager
def _timed(operation: str, network: str) -> Iterator[None]:
    """Time one whole operation of a network (every plugin of the chain) for the metrics endpoint."""
    start = time.monotonic()
    try:
        yield
    finally:
        ops.COUNTERS.cni_call(operation, network, time.monotonic() - start)


def supports(version: str, command: str) -> bool:
    """Whether a spec version has a command: CHECK since 0.4.0, STATUS and GC since 1.1.0."""
    first = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}.get(command, "0.3.0")
    return version_key(version) >= version_key(first)


class Chain:
    """Runs the plugins of network configuration lists through a PluginExec."""

    def __init__(self, runner: invoke.PluginExec, plugin_dirs: Sequence[str], timeout: float) -> None:
        self._runner = runner
        self._dirs = list(plugin_dirs)
        self._timeout = timeout

    def plugin_path(self, ptype: str, network: str) -> str:
        path = invoke.find_plugin(ptype, self._dirs)
        if path is None:
            raise FailedPrecondition(
                f"CNI plugin {ptype!r} of network {network!r} is not in {os.pathsep.join(self._dirs)}; "
                "install it (Debian: containernetworking-plugins) or fix network.plugin_dirs")
        return path

    def _env(self, command: str, att: Attachment) -> dict[str, str]:
        return invoke.environment(command, plugin_dirs=self._dirs, container_id=att.container_id,
                                  netns=att.netns, ifname=att.ifname, args=att.cni_args)

    async def add(self, conf: NetworkConfigList, version: str, att: Attachment,
                  progress: ProgressHook | None = None) -> dict[str, Any]:
        """ADD every plugin in order, chaining results; returns the final result.

        `progress` is awaited with the result after each plugin (the caller caches it), so that an ADD that
        fails or is interrupted half-way can be undone with what it did.

        Raises:
            CNIPluginError, DeadlineExceeded, FailedPrecondition: the first failure; the rest did not run.
        """
        prev: dict[str, Any] | None = None
        with _timed("ADD", conf.name):
            for plugin in conf.plugin_objects():
                path = self.plugin_path(plugin["type"], conf.name)
                stdin = request_conf(plugin, network=conf.name, version=version, caps=att.capability_args,
                                     prev_result=prev)
                result = await invoke.invoke(self._runner, path, command="ADD", env=self._env("ADD", att),
                                             conf=stdin, network=conf.name, timeout=self._timeout)
                assert result is not None  # invoke returns the decoded object for ADD
                prev = result
                if progress is not None:
                    await progress(result)
        if prev is None:  # pragma: no cover - parse() rejects empty plugin lists
            raise FailedPrecondition(f"network {conf.name!r} has no plugins")
        return prev

    async def delete(self, conf: NetworkConfigList, version: str, att: Attachment) -> None:
        """DEL every plugin in reverse order, each with the cached ADD result as prevResult.

        Raises:
            CNIPluginError, DeadlineExceeded, FailedPrecondition: the first failure (spec: halt and report).
        """
        with _timed("DEL", conf.name):
            for plugin in reversed(conf.plugin_objects()):
                path = self.plugin_path(plugin["type"], conf.name)
                stdin = request_conf(plugin, network=conf.name, version=version, caps=att.capability_args,
                                     prev_result=att.result)
                await invoke.invoke(self._runner, path, command="DEL", env=self._env("DEL", att), conf=stdin,
                                    network=conf.name, timeout=self._timeout)

    async def check(self, conf: NetworkConfigList, version: str, att: Attachment) -> None:
        """CHECK every plugin in order with the cached result (unless config or version rule it out)."""
        if conf.disable_check or not supports(version, "CHECK") or att.result is None:
            return
        with _timed("CHECK", conf.name):
            for plugin in conf.plugin_objects():
                path = self.plugin_path(plugin["type"], conf.name)
                stdin = request_conf(plugin, network=conf.name, version=version, caps=att.capability_args,
                                     prev_result=att.result)
                await invoke.invoke(self._runner, path, command="CHECK", env=self._env("CHECK", att),
                                    conf=stdin, network=conf.name, timeout=self._timeout)

    async def status(self, conf: NetworkConfigList, version: str) -> None:
        """STATUS of every plugin (1.1.0+); raises the first plugin's error."""
        if not supports(version, "STATUS"):
            return
        env = invoke.environment("STATUS", plugin_dirs=self._dirs)
        with _timed("STATUS", conf.name):
            for plugin in conf.plugin_objects():
                path = self.plugin_path(plugin["type"], conf.name)
                stdin = request_conf(plugin, network=conf.name, version=version, caps=None, prev_result=None)
                await invoke.invoke(self._runner, path, command="STATUS", env=env, conf=stdin,
                                    network=conf.name, timeout=self._timeout)

    async def gc(self, conf: NetworkConfigList, version: str,
                 valid: Sequence[tuple[str, str]]) -> list[Exception]:
        """GC every plugin (1.1.0+) with the still-valid (containerID, ifname) pairs; returns every error."""
        if conf.disable_gc or not supports(version, "GC"):
            return []
        env = invoke.environment("GC", plugin_dirs=self._dirs)
        attachments = [{"containerID": cid, "ifname": ifname} for cid, ifname in valid]
        errors: list[Exception] = []
        with _timed("GC", conf.name):
            for plugin in conf.plugin_objects():
                stdin = request_conf(plugin, network=conf.name, version=version, caps=None, prev_result=None)
                stdin["cni.dev/valid-attachments"] = attachments
                try:
                    path = self.plugin_path(plugin["type"], conf.name)
                    await invoke.invoke(self._runner, path, command="GC", env=env, conf=stdin,
                                        network=conf.name, timeout=self._timeout)
                except Exception as exc:  # spec: continue with the next plugin, report every error
                    errors.append(exc)
        return errors


__all__ = ["Chain", "ProgressHook", "request_conf", "supports"]
