"""The container process: argv, environment and working directory, and the process.json of an exec.

Arguments follow the Kubernetes rules (the same as Docker's for ENTRYPOINT/CMD):

    CRI command | CRI args | result
    ------------+----------+------------------------------
    -           | -        | image ENTRYPOINT + image CMD
    -           | given    | image ENTRYPOINT + CRI args
    given       | -        | CRI command            (the image's CMD is dropped too)
    given       | given    | CRI command + CRI args

An ENTRYPOINT of [""] counts as none (Docker writes that for `ENTRYPOINT []`). An empty result is the
request's error. The environment is built as containerd builds it: PATH (default), TERM=xterm for a tty,
HOSTNAME, then the image's ENV, then the CRI envs; a later value of a key replaces the earlier one in place.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import defaults
from crib.state.records import ImageConfig

# What runc exec needs from the container's process to run another one exactly like it.
_EXEC_KEYS = ("user", "env", "cwd", "capabilities", "noNewPrivileges", "apparmorProfile", "selinuxLabel",
              "rlimits")


def process_args(config: api.ContainerConfig, image: ImageConfig, *, container: str) -> list[str]:
    """process.args by the Kubernetes rules (see the module note).

    Raises:
        InvalidArgument: nothing to run.
    """
    command, args = list(config.command), list(config.args)
    if not command:
        entrypoint = list(image.entrypoint)
        command = [] if entrypoint == [""] else entrypoint
        if not args:
            args = list(image.cmd)
    argv = command + args
    if not argv:
        raise InvalidArgument(f"container {container!r}: nothing to run: the image has no ENTRYPOINT or CMD; "
                              "set command or args")
    if not argv[0]:
        raise InvalidArgument(f"container {container!r}: the program to run (command[0]) is empty")
    return argv


class _Env:
    """An ordered environment where setting a key again replaces its earlier entry in place."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries: list[str] = []
        self.index: dict[str, int] = {}
        for entry in entries:
            key, sep, _ = entry.partition("=")
            if sep:
                self.set(key, entry)

    def set(self, key: str, entry: str) -> None:
        if key in self.index:
            self.entries[self.index[key]] = entry
        else:
            self.index[key] = len(self.entries)
            self.entries.append(entry)


def _value(raw: bytes | str) -> str:
    # KeyValue.value is bytes on the wire; JSON cannot carry invalid UTF-8, so it is replaced (what Go's
    # encoder in containerd and CRI-O does to the same bytes).
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


def process_env(
    config: api.ContainerConfig, image: ImageConfig, *, hostname: str, container: str,
) -> list[str]:
    """process.env (see the module note).

    Raises:
        InvalidArgument: a CRI env with an empty key, a key holding "=", or a NUL byte.
    """
    env = _Env()
    env.set("PATH", "PATH=" + defaults.DEFAULT_PATH)
    if config.tty:
        env.set("TERM", "TERM=xterm")
    env.set("HOSTNAME", "HOSTNAME=" + hostname)
    for entry in image.env:
        key, sep, _ = entry.partition("=")
        if sep and key:
            env.set(key, entry)
    for index, kv in enumerate(config.envs):
        value = _value(kv.value)
        if not kv.key or "=" in kv.key or "\0" in kv.key or "\0" in value:
            raise InvalidArgument(f"container {container!r}: envs[{index}] key {kv.key!r} is not a valid "
                                  "variable name (empty, or holding '=' or NUL), or its value holds NUL")
        env.set(kv.key, f"{kv.key}={value}")
    return env.entries


def working_dir(config: api.ContainerConfig, image: ImageConfig, *, container: str) -> str:
    """process.cwd: the CRI working_dir, else the image's WORKDIR, else "/".

    Raises:
        InvalidArgument: a relative CRI working_dir (runc needs an absolute one).
    """
    if config.working_dir:
        if not config.working_dir.startswith("/"):
            raise InvalidArgument(f"container {container!r}: working_dir {config.working_dir!r} must be an "
                                  "absolute path")
        return config.working_dir
    if image.working_dir:
        # Docker resolves a relative WORKDIR against "/"; old images carry such values.
        return image.working_dir if image.working_dir.startswith("/") else "/" + image.working_dir
    return "/"


def exec_process(
    spec: Mapping[str, Any], cmd: Sequence[str], *, tty: bool, env_extra: Iterable[str] = (),
) -> dict[str, Any]:
    """The process.json for `runc exec --process`: the container's process identity running `cmd`.

    The user, environment, working directory, capabilities, no_new_privs, AppArmor/SELinux labels and
    rlimits are the container's, so an exec'd command is confined exactly like the container's own process.

    Args:
        spec: the container's config.json document (as build_container_spec returned it).
        cmd: the command and its arguments.
        tty: allocate a terminal (adds TERM=xterm when the environment has no TERM).
        env_extra: "KEY=value" entries added to (or replacing in) the container's environment.

    Raises:
        InvalidArgument: an empty command.
    """
    if not cmd or not cmd[0]:
        raise InvalidArgument("exec: the command is empty; give the program to run")
    base = spec["process"]
    process: dict[str, Any] = {"terminal": tty}
    for key in _EXEC_KEYS:
        if key in base:
            process[key] = copy.deepcopy(base[key])
    env = _Env(process.get("env", ()))
    for entry in env_extra:
        key, sep, _ = entry.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"exec: environment entry {entry!r} is not KEY=value")
        env.set(key, entry)
    if tty and "TERM" not in env.index:
        env.set("TERM", "TERM=xterm")
    process["env"] = env.entries
    process["args"] = list(cmd)
    process.setdefault("cwd", "/")
    return process


__all__ = ["exec_process", "process_args", "process_env", "working_dir"]
