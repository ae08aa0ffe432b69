"""The CNI manager with the real plugins (bridge, host-local, portmap, loopback) and namespaces the tests pin.

Traffic goes only to loopback and to the namespaces these tests create. Each test has its own bridge (named
with the session tag), subnet, conf dir and lease dir; the bed's cleanup removes whatever a failing test
left, and every test asserts there was nothing to remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from crib.config import Duration, NetworkConfig
from crib.errors import DeadlineExceeded
from crib.network import CNIManager, CNIPluginError, PodNetworkRequest, PortMapping
from tests.fixtures.cni import Testbed, in_netns, rules_mentioning, unpin_netns

BUSYBOX = "/bin/busybox"  # its wget crashes with -T (1.35.0): bound calls with subprocess timeouts


@pytest.fixture
def bed(tmp_path: Path, session_tag: str) -> Iterator[Testbed]:
    testbed = Testbed(tmp_path / "cni", session_tag)
    try:
        yield testbed
    finally:
        testbed.cleanup()


def manager(bed: Testbed, **cfg: object) -> CNIManager:
    return CNIManager(NetworkConfig(**bed.network_config(**cfg)), root=str(bed.root))


def pod(bed: Testbed, netns: Path, name: str, **over: object) -> PodNetworkRequest:
    sid = os.urandom(32).hex()
    bed.sandbox_ids.append(sid)
    fields: dict[str, object] = {"sandbox_id": sid, "name": name, "namespace": "default",
                                 "uid": f"uid-{name}", "netns_path": str(netns)}
    fields.update(over)
    return PodNetworkRequest(**fields)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def httpd(netns: Path, root: Path, port: int = 80) -> Iterator[None]:
    """busybox httpd serving root inside the namespace (killed by PID afterwards)."""
    root.mkdir(exist_ok=True)
    argv = ["nsenter", f"--net={netns}", BUSYBOX, "httpd", "-f", "-p", str(port), "-h", str(root)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while "LISTEN" not in in_netns(netns, "ss", "-ltn", f"sport = :{port}").stdout:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "httpd did not start listening"
            time.sleep(0.02)
        yield
    finally:
        proc.kill()
        proc.wait()


_UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo:" + data, peer)
"""


@contextlib.contextmanager
def udp_echo(netns: Path, port: int) -> Iterator[None]:
    """A UDP echo server inside the namespace (the system python3, killed by PID afterwards)."""
    proc = subprocess.Popen(["nsenter", f"--net={netns}", "/usr/bin/python3", "-c", _UDP_ECHO, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else ""
        yield
    finally:
        proc.kill()
        proc.wait()


def udp_roundtrip(port: int, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(payload, ("127.0.0.1", port))
        return s.recv(2048)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


async def test_pods_reach_each_other_and_a_host_port_on_localhost(bed: Testbed) -> None:
    bed.write_conflist()
    m = manager(bed)
    await m.start()
    host_port, bound_port, udp_port, sctp_port = free_port(), free_port(), free_port(), free_port()
    try:
        with bed.netns("a") as ns_a, bed.netns("b") as ns_b:
            req_a = pod(bed, ns_a, "web", port_mappings=(
                PortMapping(protocol="tcp", container_port=80, host_port=host_port),
                PortMapping(protocol="tcp", container_port=80, host_port=bound_port, host_ip="127.0.0.1"),
                PortMapping(protocol="udp", container_port=5353, host_port=udp_port),
                PortMapping(protocol="sctp", container_port=9999, host_port=sctp_port)))
            req_b = pod(bed, ns_b, "client")
            a, b = await m.setup(req_a), await m.setup(req_b)
            for status in (a, b):
                assert len(status.ips) == 1
                assert ipaddress.ip_address(status.ips[0]) in bed.subnet
                assert (status.network_name, status.interface) == (bed.network, "eth0")
            assert a.ips != b.ips
            # The pod's own view: eth0 with that address, lo up.
            assert f"inet {a.ips[0]}/" in in_netns(ns_a, "ip", "-o", "-4", "addr", "show", "eth0").stdout
            assert "UP" in in_netns(ns_a, "ip", "-o", "link", "show", "lo").stdout
            www = bed.tmp / "www"
            www.mkdir()
            (www / "index.html").write_text("hello from pod a\n")
            with httpd(ns_a, www):
                got = in_netns(ns_b, BUSYBOX, "wget", "-q", "-O", "-", f"http://{a.ips[0]}/index.html")
                assert got.stdout == "hello from pod a\n"
                assert fetch(f"http://127.0.0.1:{host_port}/index.html") == "hello from pod a\n"
                assert fetch(f"http://127.0.0.1:{bound_port}/index.html") == "hello from pod a\n"
            with udp_echo(ns_a, 5353):
                assert udp_roundtrip(udp_port, b"ping") == b"echo:ping"
            dnat = [r for r in rules_mentioning([f"{a.ips[0]}:"]) if "DNAT" in r]
            assert any(f"-p sctp -m sctp --dport {sctp_port} -j DNAT --to-destination {a.ips[0]}:9999" in r
                       for r in dnat), dnat
            await m.teardown(req_a)
            await m.teardown(req_b)
            await m.teardown(req_a)  # a second DEL (RemovePodSandbox after StopPodSandbox) is a no-op
            with pytest.raises(OSError):  # noqa: PT011 - refused or reset, either proves the mapping is gone
                fetch(f"http://127.0.0.1:{host_port}/index.html")
        assert bed.leaks(a.ips + b.ips) == []
        assert m.attachments() == []
    finally:
        await m.stop()


async def test_failing_plugin_mid_chain_leaves_nothing(bed: Testbed) -> None:
    failing_portmap = {"type": "failpoint", "capabilities": {"portMappings": True},
                       "failpoint": {"delegate": "portmap", "fail": ["ADD"], "when": "after", "code": 111,
                                     "msg": "injected failure", "stderr": "failpoint stderr line"}}
    bed.write_conflist([bed.bridge_plugin(), failing_portmap, {"type": "loopback"}])
    m = manager(bed)
    await m.start()
    try:
        with bed.netns("a") as ns:
            req = pod(bed, ns, "web", port_mappings=(PortMapping(protocol="tcp", container_port=80,
                                                                 host_port=free_port()),))
            with pytest.raises(CNIPluginError) as info:
                await m.setup(req)
            text = str(info.value)
            assert "CNI plugin failpoint failed ADD for network" in text
            assert "(code 111): injected failure: failpoint failed ADD as configured" in text
            assert "[stderr: failpoint stderr line]" in text
            assert text.endswith("the partial attachment was removed (DEL ran)")
            assert info.value.code == 111
            # The delegate's DNAT rules and the bridge's veth, lease and masquerade rule were all undone.
            assert in_netns(ns, "ip", "-o", "link", "show", "eth0", check=False).returncode != 0
        assert bed.leaks() == []
        assert m.attachments() == []
    finally:
        await m.stop()


async def test_a_plugin_error_reaches_the_caller_with_its_code(bed: Testbed) -> None:
    bed.write_conflist([bed.bridge_plugin(ipam={"type": "host-local", "subnet": "10.1.2.0/31",
                                                "dataDir": str(bed.data_dir)})])
    m = manager(bed)
    await m.start()
    try:
        with bed.netns("a") as ns:
            with pytest.raises(CNIPluginError) as info:
                await m.setup(pod(bed, ns, "web"))
            assert "CNI plugin bridge failed ADD" in str(info.value)
            assert "too small to allocate from" in str(info.value)
        assert bed.leaks() == []
    finally:
        await m.stop()


async def test_teardown_uses_the_cache_after_a_restart_and_a_config_change(bed: Testbed) -> None:
    bed.write_conflist()
    first = manager(bed)
    await first.start()
    with bed.netns("a") as ns:
        req = pod(bed, ns, "web", port_mappings=(PortMapping(protocol="udp", container_port=53,
                                                             host_port=free_port()),))
        status = await first.setup(req)
        await first.stop()
        # A different network now: DEL must still undo what the old one did, with its config and result.
        bed.write_conflist([{"type": "loopback"}], name="othernet")
        second = manager(bed)
        await second.start()
        try:
            await second.teardown(req)
        finally:
            await second.stop()
    assert bed.leaks(status.ips) == []


async def test_teardown_after_the_namespace_is_gone(bed: Testbed) -> None:
    # bridge 1.1.1 can undo ipMasq only from inside the namespace, so this network does without it.
    bed.write_conflist([bed.bridge_plugin(ipMasq=False),
                        {"type": "portmap", "capabilities": {"portMappings": True}}, {"type": "loopback"}])
    m = manager(bed)
    await m.start()
    try:
        with bed.netns("a") as ns:
            req = pod(bed, ns, "web", port_mappings=(PortMapping(protocol="tcp", container_port=80,
                                                                 host_port=free_port()),))
            status = await m.setup(req)
            unpin_netns(ns)
            await m.teardown(req)
            await m.teardown(req)
        assert bed.leaks(status.ips) == []
    finally:
        await m.stop()


async def test_check_passes_then_finds_a_broken_attachment(bed: Testbed) -> None:
    bed.write_conflist()
    m = manager(bed)
    await m.start()
    try:
        with bed.netns("a") as ns:
            req = pod(bed, ns, "web")
            await m.setup(req)
            await m.check(req)
            in_netns(ns, "ip", "route", "del", "default")  # a route the result lists
            with pytest.raises(CNIPluginError, match="CNI plugin bridge failed CHECK"):
                await m.check(req)
            await m.teardown(req)
        assert bed.leaks() == []
    finally:
        await m.stop()


def _v6_ula() -> ipaddress.IPv6Network:
    rng = random.SystemRandom()
    net = ipaddress.IPv6Network(
        f"fd{rng.randrange(256):02x}:{rng.randrange(65536):x}:{rng.randrange(65536):x}::/64")
    assert not net.overlaps(ipaddress.IPv6Network("fd00::/64"))  # the host's own eth0 network
    return net


async def test_dual_stack_reports_ipv4_first_then_ipv6(bed: Testbed) -> None:
    v6 = _v6_ula()
    # No gateway: a gateway would switch on IPv6 forwarding host-wide, which a test must not do.
    bridge = bed.bridge_plugin(isGateway=False, ipMasq=False, ipam={
        "type": "host-local", "dataDir": str(bed.data_dir),
        "ranges": [[{"subnet": str(v6)}], [{"subnet": str(bed.subnet)}]]})
    bed.write_conflist([bridge, {"type": "loopback"}])
    m = manager(bed)
    await m.start()
    try:
        with bed.netns("a") as ns_a, bed.netns("b") as ns_b:
            req_a, req_b = pod(bed, ns_a, "a"), pod(bed, ns_b, "b")
            a, b = await m.setup(req_a), await m.setup(req_b)
            assert ipaddress.ip_address(a.ips[0]) in bed.subnet
            assert ipaddress.ip_address(a.ips[1]) in v6
            assert len(a.ips) == 2
            # Both families work between the pods (ping: ICMP to a namespace this test made).
            for target in b.ips:
                deadline = time.monotonic() + 10  # IPv6 duplicate address detection takes a moment
                while in_netns(ns_a, BUSYBOX, "ping", "-c", "1", "-W", "1", target, check=False).returncode:
                    assert time.monotonic() < deadline, f"{target} unreachable from pod a"
            await m.teardown(req_a)
            await m.teardown(req_b)
        assert bed.leaks(a.ips + b.ips) == []
    finally:
        await m.stop()


async def test_many_pods_in_parallel(bed: Testbed) -> None:
    bed.write_conflist()
    m = manager(bed)
    await m.start()
    try:
        with contextlib.ExitStack() as stack:
            requests = [
                pod(bed, stack.enter_context(bed.netns(f"p{i}")), f"p{i}",
                    port_mappings=(PortMapping(protocol="tcp", container_port=80, host_port=free_port()),))
                for i in range(12)]
            statuses = await asyncio.gather(*(m.setup(r) for r in requests))
            ips = [s.ips[0] for s in statuses]
            assert len(set(ips)) == len(ips)
            await asyncio.gather(*(m.teardown(r) for r in requests))
        assert bed.leaks(ips) == []
    finally:
        await m.stop()


async def test_plugin_timeout_kills_it_and_undoes(bed: Testbed) -> None:
    stall = {"type": "failpoint", "failpoint": {"stall": {"command": "ADD", "marker": str(bed.tmp / "m"),
                                                          "seconds": 30}}}
    bed.write_conflist([bed.bridge_plugin(), stall])
    m = manager(bed, plugin_timeout=Duration(1.0))
    await m.start()
    try:
        with bed.netns("a") as ns:
            with pytest.raises(DeadlineExceeded, match=r"failpoint did not finish ADD .* within 1s and was"):
                await m.setup(pod(bed, ns, "web"))
            assert _gone(_marker_pid(bed.tmp / "m"))
        assert bed.leaks() == []
    finally:
        await m.stop()


_CHILD = """
import asyncio, json, sys
from crib.config import NetworkConfig
from crib.network import CNIManager, PodNetworkRequest, PortMapping
cfg, root, req = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
req["port_mappings"] = tuple(PortMapping(**p) for p in req["port_mappings"])
async def main():
    m = CNIManager(NetworkConfig(**cfg), root=root)
    await m.reload()
    await m.setup(PodNetworkRequest(**req))
asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def _marker_pid(marker: Path, child: subprocess.Popen[bytes] | None = None) -> int:
    """The PID a stalled failpoint wrote to its marker, waiting for it."""
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert child is None or child.poll() is None, child.stderr.read() if child.stderr else ""
        assert time.monotonic() < deadline, "the failpoint never stalled"
        time.sleep(0.02)
    return int(marker.read_text())


def test_killed_during_add_is_undone_from_the_cache(bed: Testbed) -> None:
    """The process running ADD dies mid-chain; a fresh manager's teardown removes what the chain did."""
    marker = bed.tmp / "stalled"
    stalling_portmap = {"type": "failpoint", "capabilities": {"portMappings": True},
                        "failpoint": {"delegate": "portmap",
                                      "stall": {"command": "ADD", "marker": str(marker), "seconds": 2}}}
    bed.write_conflist([bed.bridge_plugin(), stalling_portmap, {"type": "loopback"}])
    with bed.netns("a") as ns:
        req = pod(bed, ns, "web", port_mappings=(PortMapping(protocol="tcp", container_port=80,
                                                             host_port=free_port()),))
        fields = {"sandbox_id": req.sandbox_id, "name": req.name, "namespace": req.namespace, "uid": req.uid,
                  "netns_path": req.netns_path,
                  "port_mappings": [{"protocol": "tcp", "container_port": 80,
                                     "host_port": req.port_mappings[0].host_port}]}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(bed.network_config()),
                                  str(bed.root), json.dumps(fields)], stderr=subprocess.PIPE)
        plugin_pid = _marker_pid(marker, child)
        child.send_signal(signal.SIGKILL)
        child.wait()
        while not _gone(plugin_pid):  # the orphaned plugin finishes its ADD: the portmap rules appear
            time.sleep(0.05)
        assert rules_mentioning([req.sandbox_id]), "the interrupted ADD should have left rules for DEL"
        entries = (bed.root / "cni" / "results").iterdir()
        cached = json.loads(next(entries).read_bytes())
        assert cached["cribComplete"] is False
        assert cached["result"]["ips"]  # the bridge's part of the chain was recorded before the crash

        async def recover() -> None:
            m = manager(bed)
            await m.start()
            try:
                await m.teardown(req)
            finally:
                await m.stop()

        asyncio.run(recover())
        ip = cached["result"]["ips"][0]["address"].split("/")[0]
    assert bed.leaks([ip]) == []


async def test_a_plugin_binary_that_lies_makes_the_network_not_ready(bed: Testbed) -> None:
    """A VERSION answer that is not JSON makes the network not ready with a message, never a crash."""
    liar = bed.bin_dir / "liar"
    liar.write_text("#!/bin/sh\necho not-json\n")
    liar.chmod(0o755)
    bed.write_conflist([{"type": "liar"}])
    m = manager(bed)
    await m.reload()
    cond = m.condition()
    assert not cond.status
    assert "CNI plugin " + str(liar) + " does not answer VERSION" in cond.message
