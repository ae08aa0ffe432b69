"""A PluginExec that plays CNI plugins in memory, for unit tests of the chain and the manager.

It records every call (plugin type, command, environment, decoded stdin), answers VERSION, and on ADD
returns the prevResult unchanged or, for the first plugin, a result with one interface in the sandbox and
one address per family configured. Failures and timeouts are set per (plugin type, command).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crib.errors import DeadlineExceeded
from crib.network.invoke import Outcome


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    plugin: str
    command: str
    env: dict[str, str]
    conf: dict[str, Any]


@dataclass(slots=True, kw_only=True)
class FakePlugins:
    """See the module note. `addresses` are the CIDRs the first plugin's ADD reports."""

    versions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_versions: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
    addresses: tuple[str, ...] = ("10.99.0.5/24",)
    failures: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    timeouts: set[tuple[str, str]] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)

    def fail(self, plugin: str, command: str, *, code: int = 7, msg: str = "boom", details: str = "",
             stderr: str = "") -> None:
        body = json.dumps({"cniVersion": "1.0.0", "code": code, "msg": msg, "details": details}).encode()
        self.failures[(plugin, command)] = Outcome(returncode=1, stdout=body, stderr=stderr.encode())

    def heal(self) -> None:
        self.failures.clear()
        self.timeouts.clear()

    def commands(self, command: str | None = None) -> list[tuple[str, str]]:
        """(plugin, command) of each recorded call, optionally only one command."""
        return [(c.plugin, c.command) for c in self.calls if command is None or c.command == command]

    async def exec(self, path: str, *, env: Mapping[str, str], stdin: bytes, timeout: float) -> Outcome:
        plugin, command = os.path.basename(path), env["CNI_COMMAND"]
        conf = json.loads(stdin)
        self.calls.append(Call(plugin=plugin, command=command, env=dict(env), conf=conf))
        if (plugin, command) in self.timeouts:
            raise DeadlineExceeded(f"{plugin} did not finish within {timeout:g}s and was killed")
        if (plugin, command) in self.failures:
            return self.failures[(plugin, command)]
        if command == "VERSION":
            versions = self.versions.get(plugin, self.default_versions)
            body = {"cniVersion": conf.get("cniVersion"), "supportedVersions": list(versions)}
            return Outcome(returncode=0, stdout=json.dumps(body).encode(), stderr=b"")
        if command != "ADD":
            return Outcome(returncode=0, stdout=b"", stderr=b"")
        if "prevResult" in conf:
            result = conf["prevResult"]
        else:
            result = {
                "cniVersion": conf["cniVersion"],
                "interfaces": [{"name": plugin + "0", "mac": "02:00:00:00:00:01"},
                               {"name": env["CNI_IFNAME"], "mac": "02:00:00:00:00:02",
                                "sandbox": env["CNI_NETNS"]}],
                "ips": [{"address": a, "interface": 1} for a in self.addresses],
            }
        return Outcome(returncode=0, stdout=json.dumps(result).encode(), stderr=b"")


__all__ = ["Call", "FakePlugins"]
