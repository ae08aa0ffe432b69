"""Pinned pod namespaces through the real helper: what is created, who owns it, and what failure leaves.

Each test pins into its own temporary directory; the fixture unpins whatever is left and stops the helper,
and the leak assertions look at this test's own targets and the helper's own children only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crib.errors import DeadlineExceeded, ExternalCommandError, InvalidArgument
from crib.system import mount, ns

MAP = "0 200000 65536\n"


@pytest.fixture
def pins(tmp_path: Path) -> Iterator[Path]:
    """A directory for pin targets; everything pinned there is unpinned, the helper stopped afterwards."""
    where = tmp_path / "pins"
    where.mkdir()
    yield where
    ns.stop_helper()
    for target in where.iterdir():
        ns.unpin(target)
    assert not mount.mountpoints() & {str(p) for p in where.iterdir()}


def _request(where: Path, tag: str, *, user: bool = False, **kw: object) -> ns.PinRequest:
    extra: dict[str, object] = {"user": where / f"{tag}-user", "uid_map": MAP, "gid_map": MAP} if user else {}
    return ns.PinRequest(net=where / f"{tag}-net", ipc=where / f"{tag}-ipc", uts=where / f"{tag}-uts",
                         **extra, **kw)  # type: ignore[arg-type]


def _inside(kind: str, target: Path | None, *argv: str) -> str:
    assert target is not None
    done = subprocess.run(["nsenter", f"--{kind}={target}", *argv], capture_output=True, text=True,
                          timeout=10, check=True)
    return done.stdout


def _mounted(req: ns.PinRequest) -> list[str]:
    points = mount.mountpoints()
    return [str(p) for p in ns.targets(req) if str(p) in points]


def _host_shmmni() -> str:
    return Path("/proc/sys/kernel/shmmni").read_text().strip()


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _helper_children() -> list[str]:
    pid = ns.helper_pid()
    if pid is None:
        return []
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


async def test_pins_new_namespaces_set_up_from_inside(pins: Path) -> None:
    req = _request(pins, "a", hostname="pod-a",
                   sysctls={"net.ipv4.ip_unprivileged_port_start": "77", "kernel.shmmni": "1234"})
    ns.prepare_targets(req)
    await ns.pin(req)

    assert _mounted(req) == [str(p) for p in ns.targets(req)]
    for kind in ("net", "ipc", "uts"):
        assert ns.identity(getattr(req, kind)) != ns.identity(f"/proc/self/ns/{kind}")
        assert ns.owner(getattr(req, kind)) == ns.identity("/proc/self/ns/user")  # no user namespace asked
    assert _inside("uts", req.uts, "hostname").strip() == "pod-a"
    assert "UP" in _inside("net", req.net, "ip", "-o", "link", "show", "lo").split("<")[1]
    assert _inside("net", req.net, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").strip() == "77"
    assert _inside("ipc", req.ipc, "cat", "/proc/sys/kernel/shmmni").strip() == "1234"
    assert _host_shmmni() != "1234"
    assert _helper_children() == []


async def test_user_namespace_owns_the_others_and_maps_read_back(pins: Path) -> None:
    req = _request(pins, "u", user=True, hostname="pod-u",
                   sysctls={"net.ipv4.ping_group_range": "0 5", "kernel.shmmni": "999"})
    ns.prepare_targets(req)
    await ns.pin(req)

    assert req.user is not None
    userns = ns.identity(req.user)
    assert userns != ns.identity("/proc/self/ns/user")
    assert ns.owner(req.user) == ns.identity("/proc/self/ns/user")  # created by the host user namespace
    for kind in ("net", "ipc", "uts"):
        assert ns.owner(getattr(req, kind)) == userns, f"{kind} namespace is not owned by the pinned userns"
    maps = _inside("user", req.user, "cat", "/proc/self/uid_map", "/proc/self/gid_map").split("\n")
    assert [line.split() for line in maps if line] == [MAP.split(), MAP.split()]
    assert _inside("uts", req.uts, "hostname").strip() == "pod-u"
    assert "UP" in _inside("net", req.net, "ip", "-o", "link", "show", "lo").split("<")[1]
    # Seen from the host user namespace, the group range 0-5 inside is 200000-200005.
    group_range = _inside("net", req.net, "cat", "/proc/sys/net/ipv4/ping_group_range")
    assert group_range.split() == ["200000", "200005"]
    assert _inside("ipc", req.ipc, "cat", "/proc/sys/kernel/shmmni").strip() == "999"
    assert _helper_children() == []


async def test_pins_in_parallel_are_distinct(pins: Path) -> None:
    reqs = [_request(pins, f"p{i}", hostname=f"pod-{i}", user=i % 2 == 1) for i in range(12)]
    for req in reqs:
        ns.prepare_targets(req)
    await asyncio.gather(*(ns.pin(req) for req in reqs))
    nets = {ns.identity(req.net) for req in reqs if req.net is not None}
    assert len(nets) == len(reqs)
    assert _inside("uts", reqs[7].uts, "hostname").strip() == "pod-7"


@pytest.mark.parametrize(("kw", "says"), [
    ({"sysctls": {"net.ipv4.no_such_knob": "1"}}, "sysctl net.ipv4.no_such_knob=1"),
    ({"sysctls": {"kernel.shmmni": "not-a-number"}}, "sysctl kernel.shmmni=not-a-number"),
    ({"user": True, "uid_map": "0 200000 65536\n0 300000 1\n"}, "uid_map"),
], ids=["unknown-sysctl", "bad-sysctl-value", "overlapping-uid-map"])
async def test_failure_leaves_nothing_mounted_and_says_what(pins: Path, kw: dict[str, object],
                                                            says: str) -> None:
    fields = dict(kw)
    user = bool(fields.pop("user", False))
    req = _request(pins, "f", user=user, hostname="x")
    req = dataclasses.replace(req, **fields)  # type: ignore[arg-type]
    ns.prepare_targets(req)
    with pytest.raises(ExternalCommandError, match=says):
        await ns.pin(req)
    assert _mounted(req) == []
    assert _helper_children() == []
    # The helper survives a failed request and serves the next one.
    pid = ns.helper_pid()
    ok = _request(pins, "ok")
    ns.prepare_targets(ok)
    await ns.pin(ok)
    assert ns.helper_pid() == pid


@pytest.mark.parametrize(("kw", "says"), [
    ({"user": Path("/nonexistent/u")}, "uid_map and gid_map"),
    ({"uid_map": MAP}, "without a user namespace"),
    ({"hostname": "a\0b", "uts": Path("/nonexistent/uts")}, "NUL"),
    ({"net": Path("/nonexistent/n"), "sysctls": {"a=b": "1"}}, "contains '='"),
], ids=["user-without-maps", "maps-without-user", "nul", "equals-in-sysctl-name"])
async def test_bad_requests_are_refused_before_the_helper(kw: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        await ns.pin(ns.PinRequest(**kw))  # type: ignore[arg-type]


async def test_dead_helper_is_restarted(pins: Path) -> None:
    first = _request(pins, "d1")
    ns.prepare_targets(first)
    await ns.pin(first)
    old = ns.helper_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    await asyncio.sleep(0)
    second = _request(pins, "d2")
    ns.prepare_targets(second)
    await ns.pin(second)
    assert ns.helper_pid() not in (None, old)
    assert _mounted(second) == [str(p) for p in ns.targets(second)]


async def test_stalled_helper_is_killed_within_the_timeout(pins: Path) -> None:
    ns.start_helper()
    stalled = ns.helper_pid()
    assert stalled is not None
    os.kill(stalled, signal.SIGSTOP)
    req = _request(pins, "s", user=True)
    ns.prepare_targets(req)
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="did not answer within 1s"):
        await ns.pin(req, timeout=1.0)
    assert time.monotonic() - began < 5
    assert _mounted(req) == []
    assert not _exists(stalled)  # killed and reaped (our child: no zombie)
    again = _request(pins, "s2")
    ns.prepare_targets(again)
    await ns.pin(again)
    assert ns.helper_pid() != stalled


async def test_cancelled_request_leaves_nothing(pins: Path) -> None:
    ns.start_helper()
    stalled = ns.helper_pid()
    assert stalled is not None
    os.kill(stalled, signal.SIGSTOP)  # the request is in flight when it is cancelled
    req = _request(pins, "c")
    ns.prepare_targets(req)
    task = asyncio.create_task(ns.pin(req))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _mounted(req) == []
    assert not _exists(stalled)
    again = _request(pins, "c2")
    ns.prepare_targets(again)
    await ns.pin(again)


_OWNER = """
import asyncio, os, sys
from pathlib import Path
from crib.system import ns
req = ns.PinRequest(net=Path(sys.argv[1]), uts=Path(sys.argv[2]), hostname="survivor")
ns.prepare_targets(req)
asyncio.run(ns.pin(req))
print(ns.helper_pid(), flush=True)
sys.stdin.read()
"""


async def test_helper_exits_with_its_daemon_and_pins_survive(pins: Path) -> None:
    net, uts = pins / "r-net", pins / "r-uts"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(net), str(uts)],  # noqa: ASYNC220
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        helper = int(owner.stdout.readline())
        assert _alive(helper)
    finally:
        owner.kill()
        owner.wait()
    for _ in range(200):  # the helper sees its socket close and exits
        if not _alive(helper):
            break
        await asyncio.sleep(0.025)
    assert not _alive(helper), "the helper outlived its daemon"
    assert ns.is_pinned(net)
    assert ns.is_pinned(uts)
    assert _inside("uts", uts, "hostname").strip() == "survivor"
