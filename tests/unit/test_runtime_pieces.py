"""Pure pieces of the runtime layer: conmon's command line, runc's messages, stop signals, events."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from crib.containers.events import ContainerEvent, EventBus, EventKind
from crib.containers.stop import stop_signal
from crib.containers.usage import runtime_stats
from crib.errors import ResourceExhausted
from crib.runtime import _sandbox_shim, conmon, handlers
from crib.runtime.runc import Runc, runtime_message
from crib.state.records import ContainerRecord

RUNC = Runc(handler="runc", path="/usr/sbin/runc", root="/run/crib/runc")
MONITOR = conmon.Monitor(conmon="/usr/bin/conmon", exit_dir=Path("/run/crib/exits"),
                         socket_dir=Path("/run/crib/attach"), log_size_max=1 << 20)


def _launch(**kw: object) -> conmon.Launch:
    base: dict[str, object] = {"cid": "c" * 64, "name": "web", "bundle": Path("/run/crib/containers/x"),
                               "log_path": "/var/log/pods/p/web/0.log", "runc": RUNC}
    base.update(kw)
    return conmon.Launch(**base)  # type: ignore[arg-type]


def test_conmon_argv_names_the_runtime_its_root_and_every_file() -> None:
    argv = conmon.argv(MONITOR, _launch())
    joined = " ".join(argv)
    assert argv[:3] == ["/usr/bin/conmon", "--api-version", "1"]
    assert "-r /usr/sbin/runc --runtime-arg --root=/run/crib/runc" in joined
    assert "--exit-dir /run/crib/exits" in joined
    assert "--socket-dir-path /run/crib/attach" in joined
    assert "-l k8s-file:/var/log/pods/p/web/0.log" in joined
    assert "--persist-dir /run/crib/containers/x" in joined
    assert "--log-size-max 1048576" in joined
    assert "-t" not in argv
    assert "-i" not in argv


@pytest.mark.parametrize(("kw", "present", "absent"), [
    ({"terminal": True}, ["-t"], ["-i"]),
    ({"stdin": True}, ["-i", "--leave-stdin-open"], ["-t"]),
    ({"stdin": True, "stdin_once": True}, ["-i"], ["--leave-stdin-open"]),
    ({"log_path": ""}, ["none:"], []),
], ids=["tty", "stdin", "stdin-once", "no-log"])
def test_conmon_argv_options(kw: dict[str, object], present: list[str], absent: list[str]) -> None:
    argv = conmon.argv(MONITOR, _launch(**kw))
    for flag in present:
        assert flag in argv
    for flag in absent:
        assert flag not in argv


def test_runc_log_lines_are_reduced_to_their_messages() -> None:
    text = ('time="2026-01-01T00:00:00Z" level=error msg="runc create failed: unable to start container '
            'process: exec: \\"/nope\\": stat /nope: no such file or directory"\n')
    assert runtime_message(text) == ('runc create failed: unable to start container process: exec: "/nope": '
                                     "stat /nope: no such file or directory")
    assert runtime_message("plain text\n") == "plain text"


@pytest.mark.parametrize(("image_signal", "expected"), [
    ("", "SIGTERM"), ("SIGUSR1", "SIGUSR1"), ("usr1", "SIGUSR1"), ("9", "SIGKILL"), ("SIGWINCH", "SIGWINCH"),
    ("SIGNOPE", "SIGTERM"), ("99", "SIGTERM"),
], ids=lambda v: str(v) or "default")
def test_stop_signal_from_the_image(image_signal: str, expected: str) -> None:
    rec = ContainerRecord(id="x", name="x", sandbox_id="s", meta_name="x", stop_signal=image_signal)
    assert stop_signal(rec) == expected


def _event(kind: EventKind = EventKind.STARTED) -> ContainerEvent:
    rec = ContainerRecord(id="x", name="x", sandbox_id="s", meta_name="x")
    return ContainerEvent(kind=kind, at_ns=1, container=rec, sandbox=None, pod_containers=(rec,))


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    got: list[list[EventKind]] = [[], []]

    async def consume(i: int) -> None:
        async for e in bus.subscribe():
            got[i].append(e.kind)
            if e.kind is EventKind.DELETED:
                return

    tasks = [asyncio.ensure_future(consume(i)) for i in range(2)]
    await asyncio.sleep(0)
    for kind in (EventKind.CREATED, EventKind.STARTED, EventKind.STOPPED, EventKind.DELETED):
        bus.publish(_event(kind))
    await asyncio.gather(*tasks)
    assert got[0] == got[1] == [EventKind.CREATED, EventKind.STARTED, EventKind.STOPPED, EventKind.DELETED]
    assert bus.subscribers == 0


async def test_a_slow_subscriber_is_cut_off_without_blocking_publish() -> None:
    bus = EventBus(queue_size=4)
    stream = bus.subscribe()
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    for _ in range(10):  # never blocks, however far behind the subscriber is
        bus.publish(_event())
    assert (await first).kind is EventKind.STARTED
    async def drain() -> None:
        while True:
            await anext(stream)

    with pytest.raises(ResourceExhausted, match="fell 4 events behind"):
        await drain()
    assert bus.subscribers == 0


RUNSC = Runc(handler="runsc", path="/usr/bin/runsc", root="/run/crib/runsc",
             global_args=("--platform=ptrace", "--network=host"), sandboxed=True)


def test_runtime_global_args_go_before_every_command() -> None:
    assert RUNSC.argv("state", "c1") == ["/usr/bin/runsc", "--root", "/run/crib/runsc", "--platform=ptrace",
                                         "--network=host", "state", "c1"]
    argv = conmon.argv(MONITOR, _launch(runc=RUNSC))
    runtime_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--runtime-arg"]
    # conmon runs the sandbox shim, which runs runsc with its root and global arguments.
    assert argv[argv.index("-r") + 1] == sys.executable
    assert runtime_args == ["-I", "-S", conmon.SANDBOX_SHIM, "/usr/bin/runsc", "--root=/run/crib/runsc",
                            "--platform=ptrace", "--network=host"]
    plain = conmon.argv(MONITOR, _launch())
    assert plain[plain.index("-r") + 1] == "/usr/sbin/runc"


@pytest.mark.parametrize(("args", "expected"), [
    (["--bundle", "/b", "--pid-file", "/p", "c1"], "/b"),
    (["--bundle=/b", "c1"], "/b"),
    (["-bundle", "/b", "c1"], "/b"),
    (["c1"], ""),
], ids=["spaced", "equals", "go-single-dash", "absent"])
def test_shim_reads_conmons_create_arguments(args: list[str], expected: str) -> None:
    assert _sandbox_shim._option(args, "bundle") == expected


@pytest.mark.parametrize(("annotations", "joins"), [
    ({"io.kubernetes.cri.container-type": "container"}, True),
    ({"io.kubernetes.cri.container-type": "sandbox"}, False),
    ({}, False),
], ids=["container", "sandbox", "none"])
def test_shim_tells_a_joining_container(tmp_path: Path, annotations: dict[str, str], joins: bool) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"annotations": annotations}))
    assert _sandbox_shim._joins_sandbox(str(tmp_path)) is joins
    assert _sandbox_shim._joins_sandbox(str(tmp_path / "missing")) is False


def test_runtime_stats_from_runsc_events() -> None:
    data = {"cpu": {"usage": {"total": 362816344}}, "pids": {"current": 2},
            "memory": {"cache": 1000, "usage": {"limit": 0, "usage": 749568, "failcnt": 0}}}
    stats = runtime_stats(data)
    assert (stats.cpu_usage_ns, stats.memory_usage, stats.memory_working_set, stats.pids_current) == (
        362816344, 749568, 748568, 2)
    empty = runtime_stats({})
    assert (empty.cpu_usage_ns, empty.memory_usage, empty.pids_current) == (None, None, None)


class _FakeFeatures(Runc):
    """A runtime whose `features` answer is given (or missing: an old runtime, runsc)."""

    async def features(self) -> dict[str, Any]:
        if self.handler == "old":
            raise RuntimeError("no such command")
        return {"mountOptions": ["rro"], "linux": {"namespaces": ["user"] if self.handler == "full" else []}}


@pytest.mark.parametrize(("handler", "sandboxed", "problem", "userns", "reason"), [
    ("full", False, "", True, ""),
    ("full", False, "kernel too old", False, "kernel too old"),
    ("bare", False, "", False, "does not list the user namespace"),
    ("old", False, "", False, "does not list the user namespace"),
    ("full", True, "", False, "is a sandboxed runtime"),
], ids=["supported", "node-problem", "runtime-without-userns", "no-features", "sandboxed"])
def test_handler_features_say_why(handler: str, sandboxed: bool, problem: str, userns: bool,
                                  reason: str) -> None:
    runc = _FakeFeatures(handler=handler, path="/usr/bin/x", root="/r", sandboxed=sandboxed)
    got = asyncio.run(handlers.probe(runc, userns_problem=problem))
    assert got.user_namespaces is userns
    assert reason in got.user_namespaces_reason
    assert bool(got.user_namespaces_reason) is not userns
    rro = handler != "old" and not sandboxed and handlers.kernel_at_least(5, 12)
    assert got.recursive_read_only_mounts is rro
