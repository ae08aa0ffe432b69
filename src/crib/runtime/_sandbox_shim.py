"""conmon's runtime for a sandboxed handler (gVisor): a container that joins its pod's sandbox still gets a
process conmon can wait for and its stdio. Run as a separate process; standard library only, no crib import.

conmon learns a container's exit by waiting for the process whose pid the runtime's `create` wrote (runc's
container init, which becomes conmon's child), and hands the container its stdio as the create's stdio.
gVisor runs a pod's containers inside one sandbox: the first (the pod's infra) is the sandbox process itself
and fits that model, but for each further container `runsc create` only registers it with the sandbox and
writes the sandbox's pid (a process conmon did not start), and `runsc start` is what passes the container
its stdio (those of the start command). That is why CRI-O cannot drive runsc through conmon. So crib gives
conmon this shim as its runtime:

    python -I -S _sandbox_shim.py <runtime> <runtime args...> <command> <command args...>

Every command but `create` of a container that joins a sandbox (io.kubernetes.cri.container-type
"container" in its config.json) is the runtime itself (exec). For such a `create` the shim runs the
runtime's create, makes the FIFO <bundle>/shim.start, forks a waiter, writes the waiter's pid to the pid
file and exits. The waiter, re-parented to conmon (a subreaper) and holding conmon's stdio pipes:

1. waits for one byte on shim.start: "s" = start (crib's StartContainer, runtime/conmon.py shim_start), "x"
   = the container is being removed; it also gives up when the container vanished (checked every few
   seconds), so it never outlives its container;
2. runs `<runtime> start` with conmon's pipes as stdio (the runtime's own log goes to <bundle>/shim.log),
   and writes its exit code, then the log's tail, to <bundle>/shim.started (atomically);
3. drops its copies of the pipes, runs `<runtime> wait`, and exits with the container's exit status
   (gVisor reports 128+signal for a signal, as runc would); 255 when the container never started.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

CONTAINER_TYPE = "io.kubernetes.cri.container-type"
START_FIFO = "shim.start"
STARTED = "shim.started"
LOG = "shim.log"
ALIVE_CHECK = 5.0  # seconds between two looks at a container whose start is awaited


def _option(args: list[str], name: str) -> str:
    """The value of --name VALUE or --name=VALUE (also -name, as Go's flag package accepts)."""
    for i, arg in enumerate(args):
        bare = "--" + arg.lstrip("-") if arg.startswith("-") else arg
        if bare == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if bare.startswith(f"--{name}="):
            return bare.split("=", 1)[1]
    return ""


def _joins_sandbox(bundle: str) -> bool:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as fh:
            spec = json.load(fh)
    except (OSError, ValueError):
        return False
    return (spec.get("annotations") or {}).get(CONTAINER_TYPE) == "container"


def _quiet(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)


def _exists(runtime: list[str], cid: str) -> bool:
    return _quiet([*runtime, "state", cid]).returncode == 0


def _await_start(runtime: list[str], cid: str, fifo: str) -> bool:
    """True once crib says start; False if it says remove or the container is gone."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], ALIVE_CHECK)
            if ready:
                data = os.read(fd, 1)
                if data:
                    return data == b"s"
                # a writer came and went without a byte: reopen, or select would spin on EOF
                os.close(fd)
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            elif not _exists(runtime, cid):
                return False
    finally:
        os.close(fd)


def _report(bundle: str, code: int) -> None:
    tail = b""
    try:
        with open(os.path.join(bundle, LOG), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 2048))
            tail = fh.read()
    except OSError:
        pass
    tmp = os.path.join(bundle, STARTED + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(f"{code}\n".encode() + tail)
    os.replace(tmp, os.path.join(bundle, STARTED))


def _waiter(runtime: list[str], cid: str, bundle: str) -> int:
    if not _await_start(runtime, cid, os.path.join(bundle, START_FIFO)):
        return 255
    logged = [runtime[0], f"--log={os.path.join(bundle, LOG)}", *runtime[1:]]
    code = subprocess.run([*logged, "start", cid], check=False).returncode  # conmon's stdio: the container's
    _report(bundle, code)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if code != 0:
        return 255
    done = _quiet([*runtime, "wait", cid])
    try:
        return int(json.loads(done.stdout)["exitStatus"]) if done.returncode == 0 else 255
    except (ValueError, KeyError, TypeError):
        return 255


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: _sandbox_shim.py <runtime> [runtime args] <command> [args]", file=sys.stderr)
        return 2
    runtime_path, rest = argv[1], argv[2:]
    split = next((i for i, a in enumerate(rest) if not a.startswith("-")), len(rest))
    command, args = (rest[split] if split < len(rest) else ""), rest[split + 1:]
    bundle = _option(args, "bundle") or "."
    if command != "create" or not _joins_sandbox(bundle):
        os.execv(runtime_path, [runtime_path, *rest])
    created = subprocess.run([runtime_path, *rest], check=False)
    if created.returncode != 0:
        return created.returncode
    runtime, cid = [runtime_path, *rest[:split]], args[-1]
    os.mkfifo(os.path.join(bundle, START_FIFO), 0o600)
    waiter = os.fork()
    if waiter == 0:
        os.closerange(3, 65536)
        os._exit(_waiter(runtime, cid, bundle))
    pid_file = _option(args, "pid-file")
    if pid_file:
        tmp = pid_file + ".shim"
        with open(tmp, "w") as fh:
            fh.write(str(waiter))
        os.replace(tmp, pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
