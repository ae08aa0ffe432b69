"""Running one CNI plugin binary per the spec's execution protocol (section 2).

The parameters travel in environment variables, the configuration on stdin, the result (or a JSON error
{code, msg, details}) on stdout, logs on stderr. Every call has a timeout. The environment is explicit: the
CNI variables plus PATH, which the plugins need to find iptables and friends.

Execution goes through the narrow `PluginExec` seam so that the chain logic can be unit-tested with a
hand-written fake; the real one is `ProcExec` (crib.proc.run).
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crib import proc
from crib.errors import DeadlineExceeded, ExternalCommandError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Well-known error codes of the spec (section 5, "Error").
ERROR_CODES: dict[int, str] = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid necessary environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
    50: "plugin not available",
    51: "plugin not available, existing containers may have limited connectivity",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What a plugin process left: exit code and both streams."""

    returncode: int
    stdout: bytes
    stderr: bytes


class PluginExec(typing.Protocol):
    """Runs a plugin binary; implementations bound it by `timeout` and never raise for a non-zero exit."""

    async def exec(self, path: str, *, env: Mapping[str, str], stdin: bytes, timeout: float) -> Outcome:
        """Run path with env and stdin, returning its outcome.

        Raises:
            ExternalCommandError: the binary could not be started.
            DeadlineExceeded: it ran past timeout (and was killed).
        """


class ProcExec:
    """The real PluginExec: crib.proc.run with an explicit argv, env, stdin and timeout."""

    async def exec(self, path: str, *, env: Mapping[str, str], stdin: bytes, timeout: float) -> Outcome:
        result = await proc.run([path], timeout=timeout, input=stdin, env=env, check=False)
        return Outcome(returncode=result.returncode, stdout=result.stdout, stderr=result.stderr)


class CNIPluginError(ExternalCommandError):
    """A CNI plugin failed; carries the spec's error fields and the plugin's stderr."""

    def __init__(self, message: str, *, plugin: str, command: str, code: int | None = None, msg: str = "",
                 details: str = "", returncode: int | None = None, stderr: str = "",
                 argv: list[str] | None = None) -> None:
        super().__init__(message, argv=argv, returncode=returncode, stderr=stderr)
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details


def find_plugin(ptype: str, dirs: Sequence[str]) -> str | None:
    """The first executable named ptype in dirs, or None."""
    for d in dirs:
        path = os.path.join(d, ptype)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def environment(command: str, *, plugin_dirs: Sequence[str], container_id: str = "", netns: str = "",
                ifname: str = "", args: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """The explicit environment of one plugin call (spec section 2, "Parameters")."""
    env = {"CNI_COMMAND": command, "CNI_PATH": os.pathsep.join(plugin_dirs),
           "PATH": os.environ.get("PATH") or DEFAULT_PATH}
    if command in ("ADD", "DEL", "CHECK"):
        env["CNI_CONTAINERID"] = container_id
        env["CNI_IFNAME"] = ifname
        env["CNI_NETNS"] = netns
        if args:
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in args)
    return env


def _describe(ptype: str, command: str, network: str, outcome: Outcome) -> CNIPluginError:
    stderr = proc.tail(outcome.stderr)
    code: int | None = None
    msg = details = ""
    try:
        doc = json.loads(outcome.stdout) if outcome.stdout.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if isinstance(doc, dict) and ("code" in doc or "msg" in doc):
        raw_code = doc.get("code")
        code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
        msg = str(doc.get("msg", "") or "")
        details = str(doc.get("details", "") or "")
    text = f"CNI plugin {ptype} failed {command} for network {network!r}"
    if code is not None:
        known = ERROR_CODES.get(code)
        text += f" (code {code}" + (f", {known}" if known else "") + ")"
    said = ": ".join(p for p in (msg, details) if p)
    if not said and doc is None:
        said = proc.tail(outcome.stdout)
    if said:
        text += f": {said}"
    if stderr:
        text += f" [stderr: {stderr}]"
    if not said and not stderr:
        text += f": exited with status {outcome.returncode} and printed nothing"
    return CNIPluginError(text, plugin=ptype, command=command, code=code, msg=msg, details=details,
                          returncode=outcome.returncode, stderr=stderr)


async def invoke(runner: PluginExec, path: str, *, command: str, env: Mapping[str, str],
                 conf: Mapping[str, Any], network: str, timeout: float) -> dict[str, Any] | None:
    """Run one plugin command and decode its answer.

    Returns:
        The decoded JSON object for ADD and VERSION; None for DEL, CHECK, STATUS and GC.

    Raises:
        CNIPluginError: the plugin failed (its code, msg, details and stderr are in the message).
        DeadlineExceeded: it ran past timeout.
    """
    ptype = os.path.basename(path)
    stdin = json.dumps(conf, separators=(",", ":")).encode()
    try:
        outcome = await runner.exec(path, env=env, stdin=stdin, timeout=timeout)
    except DeadlineExceeded as exc:
        raise DeadlineExceeded(f"CNI plugin {ptype} did not finish {command} for network {network!r} within "
                               f"{timeout:g}s and was killed; raise network.plugin_timeout if the node is "
                               "just slow") from exc
    if outcome.returncode != 0:
        raise _describe(ptype, command, network, outcome)
    if command not in ("ADD", "VERSION"):
        return None
    try:
        doc = json.loads(outcome.stdout)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CNIPluginError(f"CNI plugin {ptype} {command} for network {network!r} succeeded but printed no "
                             f"JSON result: {proc.tail(outcome.stdout) or '(nothing)'}", plugin=ptype,
                             command=command, returncode=0, stderr=proc.tail(outcome.stderr)) from None
    if not isinstance(doc, dict):
        raise CNIPluginError(f"CNI plugin {ptype} {command} for network {network!r} printed a JSON "
                             f"{type(doc).__name__}, not an object", plugin=ptype, command=command,
                             returncode=0)
    return doc


async def plugin_versions(runner: PluginExec, path: str, *, timeout: float) -> tuple[str, ...]:
    """The spec versions a plugin supports (the VERSION command)."""
    env = {"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH") or DEFAULT_PATH}
    doc = await invoke(runner, path, command="VERSION", env=env, conf={"cniVersion": "1.1.0"},
                       network="(version probe)", timeout=timeout)
    versions = (doc or {}).get("supportedVersions")
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise CNIPluginError(f"CNI plugin {os.path.basename(path)} answered VERSION without a list of "
                             "supportedVersions", plugin=os.path.basename(path), command="VERSION")
    return tuple(versions)


__all__ = [
    "ERROR_CODES",
    "CNIPluginError",
    "Outcome",
    "PluginExec",
    "ProcExec",
    "environment",
    "find_plugin",
    "invoke",
    "plugin_versions",
]
