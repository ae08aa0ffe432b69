"""Exec, Attach and PortForward through a real daemon, real runc and conmon, with crib's own SPDY and
WebSocket clients: exit codes, stdin, terminals, a 100 MiB stream, attach semantics, port forwarding,
single-use URLs, and that nothing outlives an abandoned session or a daemon restart."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.streaming import client
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon

TRANSPORTS = ["spdy", "websocket"]


@pytest.fixture
def sleeper(pod: Pod, busybox: str) -> str:
    return pod.run(container_config(busybox, "sleeper", command=["sleep", "100000"]))


def exec_url(pod: Pod, cid: str, *cmd: str, **flags: bool) -> str:
    flags.setdefault("stdout", True)
    flags.setdefault("stderr", not flags.get("tty", False))
    return pod.rt.Exec(api.ExecRequest(container_id=cid, cmd=list(cmd), **flags)).url


def processes_running(needle: str) -> list[int]:
    """Host pids whose command line is exactly needle (arguments joined by spaces)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b" ".join(a for a in args if a).decode(errors="replace") == needle:
                found.append(int(entry))
    return found


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """wait_for for async tests: the event loop (and with it the client) keeps running meanwhile."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def exec_files(crib: CribDaemon, cid: str) -> list[Path]:
    return list(Path(crib.runroot, "containers", cid).glob("exec-*"))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_exec_exit_codes_and_stdin(pod: Pod, sleeper: str) -> None:
    for transport in TRANSPORTS:
        for script, code in (("echo out; echo err >&2", 0), ("echo out; echo err >&2; exit 1", 1),
                             ("echo out; echo err >&2; kill -9 $$", 137)):
            url = exec_url(pod, sleeper, "sh", "-c", script)
            async with await client.RemoteCommand.connect(url, transport=transport) as rc:
                assert await rc.collect() == (b"out\n", b"err\n", code), transport
        data = os.urandom(2 * 1024 * 1024 + 3)
        url = exec_url(pod, sleeper, "sha256sum", stdin=True, stderr=False)
        rc = await client.RemoteCommand.connect(url, stdin=True, stderr=False, transport=transport)
        async with rc:
            await rc.write(data)
            await rc.close_stdin()
            out, _, code = await rc.collect()
        assert code == 0
        assert out.split()[0].decode() == hashlib.sha256(data).hexdigest(), transport


async def test_exec_tty_follows_resizes(pod: Pod, sleeper: str) -> None:
    for transport in TRANSPORTS:
        await _tty_session(pod, sleeper, transport)


async def _tty_session(pod: Pod, sleeper: str, transport: str) -> None:
    url = exec_url(pod, sleeper, "sh", tty=True, stdin=True)
    async with await client.RemoteCommand.connect(url, stdin=True, stderr=False, tty=True,
                                                  transport=transport) as rc:
        seen = b""

        async def size_becomes(text: bytes) -> None:
            """Ask `stty size` until it answers text: a resize and a typed line travel on different
            streams, so the first answer may predate the resize (kubectl has the same race)."""
            nonlocal seen
            for _ in range(40):
                await rc.write(b"stty size\n")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 0.5
                while text not in seen and loop.time() < deadline:
                    with contextlib.suppress(TimeoutError):
                        chunk = await asyncio.wait_for(rc.read_stdout(), 0.25)
                        assert chunk, f"the terminal ended before {text!r}; got {seen!r}"
                        seen += chunk
                if text in seen:
                    return
            raise AssertionError(f"stty never said {text!r}; got {seen!r}")

        await rc.resize(100, 30)
        await size_becomes(b"30 100")
        await rc.resize(81, 25)
        await size_becomes(b"25 81")
        await rc.write(b"tty; exit 3\n")
        while chunk := await rc.read_stdout():
            seen += chunk
        assert b"/dev/pts/" in seen
        assert (await rc.wait()).code == 3


async def test_exec_stdout_100_mib_by_hash(pod: Pod, sleeper: str) -> None:
    size = 100 * 1024 * 1024
    url = exec_url(pod, sleeper, "sh", "-c", f"yes 0123456789abcdef | head -c {size}", stderr=False)
    line = b"0123456789abcdef\n"
    expected = hashlib.sha256()
    whole, tail = divmod(size, len(line))
    block = line * 4096
    for _ in range(whole // 4096):
        expected.update(block)
    expected.update(line * (whole % 4096) + line[:tail])
    got, n = hashlib.sha256(), 0
    async with await client.RemoteCommand.connect(url, stderr=False) as rc:
        while chunk := await rc.read_stdout():
            got.update(chunk)
            n += len(chunk)
        assert (await rc.wait()).code == 0
    assert n == size
    assert got.hexdigest() == expected.hexdigest()


async def test_attach_to_a_container_printing_a_line_a_second(pod: Pod, busybox: str) -> None:
    cid = pod.run(container_config(busybox, "ticker", command=[
        "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]))
    for transport in TRANSPORTS:
        url = pod.rt.Attach(api.AttachRequest(container_id=cid, stdout=True, stderr=True)).url
        async with await client.RemoteCommand.connect(url, transport=transport) as rc:
            seen = b""
            while seen.count(b"\n") < 2:
                seen += await asyncio.wait_for(rc.read_stdout(), 10)
        first, second = seen.split(b"\n")[:2]
        assert first.startswith(b"tick ")
        assert int(second.split()[1]) == int(first.split()[1]) + 1
        assert pod.status(cid).state == api.CONTAINER_RUNNING  # detaching leaves the container alone


async def test_attach_stdin_once_closes_stdin_after_the_first_attach(pod: Pod, busybox: str) -> None:
    cid = pod.run(container_config(busybox, "reader", stdin=True, stdin_once=True, command=[
        "sh", "-c", "read x; echo got $x; if read y; then echo more; else echo eof; fi"]))
    url = pod.rt.Attach(api.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)).url
    async with await client.RemoteCommand.connect(url, stdin=True) as rc:
        await rc.write(b"hello\n")
        await rc.close_stdin()
        out, err, code = await rc.collect()
    assert (out, err, code) == (b"got hello\neof\n", b"", 0)
    assert pod.wait_exit(cid).exit_code == 0


async def test_attach_without_stdin_once_keeps_stdin_open(pod: Pod, busybox: str) -> None:
    cid = pod.run(container_config(busybox, "cat", stdin=True, command=["cat"]))
    for word in (b"one\n", b"two\n"):
        url = pod.rt.Attach(api.AttachRequest(container_id=cid, stdin=True, stdout=True)).url
        async with await client.RemoteCommand.connect(url, stdin=True, stderr=False) as rc:
            await rc.write(word)
            assert await asyncio.wait_for(rc.read_stdout(), 10) == word
            await rc.close_stdin()  # ends this attach (CRI-O's rule), not the container's stdin
            await rc.collect()
    assert pod.status(cid).state == api.CONTAINER_RUNNING


def httpd_script(page: str, port: int) -> str:
    return f"mkdir -p /www && echo {page} > /www/index.html && exec httpd -f -p {port} -h /www"


@pytest.fixture
def web(pod: Pod, busybox: str) -> str:
    script = httpd_script("hello-from-the-pod", 8080)
    cid = pod.run(container_config(busybox, "web", command=["sh", "-c", script]))
    probe = ("wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html")
    wait_for(lambda: pod.exec(cid, *probe).exit_code == 0, 10,
             what="httpd to listen")
    return cid


async def http_get(pf: client.PortForward, port: int, path: str = "/index.html") -> bytes:
    conn = await pf.open(port)
    await conn.write(f"GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n".encode())
    body = await asyncio.wait_for(conn.read_all(), 20)
    await conn.close()
    return body


async def test_port_forward_20_concurrent_connections(pod: Pod, web: str) -> None:
    for transport in TRANSPORTS:
        url = pod.rt.PortForward(api.PortForwardRequest(pod_sandbox_id=pod.id, port=[8080])).url
        async with await client.PortForward.connect(url, transport=transport) as pf:
            answers = await asyncio.gather(*(http_get(pf, 8080) for _ in range(20)))
            assert all(a.startswith(b"HTTP/1.") and a.endswith(b"hello-from-the-pod\n") for a in answers)
            conn = await pf.open(8081)  # nothing listens there: an error on that connection only
            assert await conn.read_all() == b""
            await conn.close()
            assert "error forwarding port 8081" in conn.error
            assert (await http_get(pf, 8080)).endswith(b"hello-from-the-pod\n")


async def test_port_forward_to_a_host_network_pod(crib: CribDaemon, busybox: str, session_tag: str) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = pod_config(session_tag, namespace_options=api.NamespaceOption(network=api.NODE,
                                                                            pid=api.CONTAINER))
    pod = Pod(crib, config)
    try:
        pod.run(container_config(busybox, "hostweb", command=[
            "sh", "-c", httpd_script("on-the-host", port)]))
        url = pod.rt.PortForward(api.PortForwardRequest(pod_sandbox_id=pod.id)).url
        async with await client.PortForward.connect(url) as pf:
            body = b""
            for _ in range(50):  # httpd starts listening a moment after StartContainer
                body = await http_get(pf, port)
                if body:
                    break
                await asyncio.sleep(0.1)
            assert body.endswith(b"on-the-host\n")
    finally:
        pod.remove()


async def test_urls_are_single_use_and_expire(crib_factory: Callable[..., CribDaemon], busybox: str,
                                              images: img.Catalogue, session_tag: str) -> None:
    daemon = crib_factory({"stream": {"creation_timeout": "1s"}}, name="short")
    pull(daemon, images.reference(img.BUSYBOX))
    pod = Pod(daemon, pod_config(session_tag))
    try:
        cid = pod.run(container_config(busybox, "s", command=["sleep", "100000"]))
        url = exec_url(pod, cid, "true")
        async with await client.RemoteCommand.connect(url) as rc:
            assert (await rc.collect())[2] == 0
        with pytest.raises(client.UpgradeError) as used:
            await client.RemoteCommand.connect(url)
        stale = exec_url(pod, cid, "true")
        await asyncio.sleep(1.5)  # the URL's whole life is the creation timeout
        with pytest.raises(client.UpgradeError) as expired:
            await client.RemoteCommand.connect(stale)
        assert used.value.status == expired.value.status == 404
        assert used.value.body == expired.value.body == "404 page not found\n"
    finally:
        pod.remove()


async def test_abandoned_sessions_leave_nothing(crib: CribDaemon, pod: Pod, sleeper: str) -> None:
    assert crib.proc is not None
    pid = crib.proc.pid
    for tty in (False, True):
        needle = f"sleep {2000 + tty}"
        baseline = fd_count(pid)
        url = exec_url(pod, sleeper, *needle.split(), tty=tty, stdin=True)
        rc = await client.RemoteCommand.connect(url, stdin=True, stderr=not tty, tty=tty)
        await eventually(lambda n=needle: processes_running(n), "the exec'd command to start")
        assert fd_count(pid) > baseline
        await rc.close()  # the client goes away without a word
        await eventually(lambda n=needle: not processes_running(n), "the command to be killed")
        await eventually(lambda b=baseline: fd_count(pid) <= b, "the daemon's fds to be closed")
        assert not exec_files(crib, sleeper), "process.json left behind"
    # The session's line is written once its task has unwound, a loop turn or two after its fds closed.
    await eventually(lambda: crib.log_tail(10_000).count("kind=exec target=") == 2, "both sessions' lines")
    log = crib.log_tail(10_000)
    assert log.count("kind=exec target=") == 2
    assert log.count('outcome="client gone or idle"') == 2


async def test_restart_ends_sessions_but_not_containers(crib: CribDaemon, pod: Pod, sleeper: str) -> None:
    url = exec_url(pod, sleeper, "sleep", "2002", stderr=False)
    rc = await client.RemoteCommand.connect(url, stderr=False)
    await eventually(lambda: processes_running("sleep 2002"), "the exec'd command to start")
    watch = pod.rt.Attach(api.AttachRequest(container_id=sleeper, stdout=True)).url
    attached = await client.RemoteCommand.connect(watch, stderr=False)
    crib.restart()
    for session in (rc, attached):  # each is told why it ended
        with pytest.raises(client.RemoteError, match="shutting down"):
            await asyncio.wait_for(session.collect(), 20)
    await eventually(lambda: not processes_running("sleep 2002"), "the exec'd command to be killed")
    assert pod.status(sleeper).state == api.CONTAINER_RUNNING
    async with await client.RemoteCommand.connect(exec_url(pod, sleeper, "echo", "again")) as again:
        assert await again.collect() == (b"again\n", b"", 0)
    await rc.close()
    await attached.close()


BAD_REQUESTS = [
    (lambda c: api.ExecRequest(container_id=c, cmd=["sh"], tty=True, stdout=True, stderr=True),
     grpc.StatusCode.INVALID_ARGUMENT, "tty and stderr"),
    (lambda c: api.ExecRequest(container_id=c, cmd=["sh"]),
     grpc.StatusCode.INVALID_ARGUMENT, "one of stdin, stdout or stderr"),
    (lambda c: api.ExecRequest(container_id=c, stdout=True),
     grpc.StatusCode.INVALID_ARGUMENT, "cmd is empty"),
    (lambda c: api.ExecRequest(container_id="f" * 64, cmd=["true"], stdout=True), grpc.StatusCode.NOT_FOUND,
     "not found"),
    (lambda c: api.AttachRequest(container_id=c, tty=True, stdout=True, stderr=True),
     grpc.StatusCode.INVALID_ARGUMENT, "tty and stderr"),
    (lambda c: api.PortForwardRequest(pod_sandbox_id="f" * 64), grpc.StatusCode.NOT_FOUND, "not found"),
]


def test_bad_requests_and_stopped_objects(pod: Pod, sleeper: str, busybox: str) -> None:
    for build, code, text in BAD_REQUESTS:
        request = build(sleeper)
        call = {api.ExecRequest: pod.rt.Exec, api.AttachRequest: pod.rt.Attach,
                api.PortForwardRequest: pod.rt.PortForward}[type(request)]
        got, message = code_of(lambda c=call, r=request: c(r))
        assert got == code, message
        assert text in message
    cid = pod.run(container_config(busybox, "quick", command=["true"]))
    pod.wait_exit(cid)
    code, message = code_of(lambda: pod.rt.Exec(api.ExecRequest(container_id=cid, cmd=["true"], stdout=True)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not running" in message
    code, message = code_of(lambda: pod.rt.PortForward(api.PortForwardRequest(pod_sandbox_id=pod.id,
                                                                               port=[70000])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    pod.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    code, message = code_of(lambda: pod.rt.PortForward(api.PortForwardRequest(pod_sandbox_id=pod.id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not ready" in message


async def test_crash_leftovers_are_killed_at_the_next_start(crib: CribDaemon, pod: Pod, sleeper: str) -> None:
    url = exec_url(pod, sleeper, "sleep", "2003", stderr=False)
    rc = await client.RemoteCommand.connect(url, stderr=False)
    await eventually(lambda: processes_running("sleep 2003"), "the exec'd command to start")
    crib.kill()  # no chance to end its sessions: the command is orphaned
    with pytest.raises((client.RemoteError, ConnectionError)):
        await asyncio.wait_for(rc.collect(), 20)
    assert processes_running("sleep 2003")
    crib.start()
    await eventually(lambda: not processes_running("sleep 2003"), "the leftover command to be killed")
    assert "killed exec'd commands" in crib.wait_for_log("commands=1")
    assert not exec_files(crib, sleeper)
    assert pod.status(sleeper).state == api.CONTAINER_RUNNING
    await rc.close()


async def test_attach_to_a_terminal_follows_resizes(pod: Pod, busybox: str) -> None:
    cid = pod.run(container_config(busybox, "term", tty=True, stdin=True, command=["sh"]))
    url = pod.rt.Attach(api.AttachRequest(container_id=cid, tty=True, stdin=True, stdout=True)).url
    async with await client.RemoteCommand.connect(url, stdin=True, stderr=False, tty=True) as rc:
        await rc.resize(77, 22)  # through conmon's control FIFO
        seen = b""
        for _ in range(50):
            await rc.write(b"stty size\n")
            deadline = asyncio.get_running_loop().time() + 0.5
            while b"22 77" not in seen and asyncio.get_running_loop().time() < deadline:
                with contextlib.suppress(TimeoutError):
                    seen += await asyncio.wait_for(rc.read_stdout(), 0.2)
            if b"22 77" in seen:
                break
        assert b"22 77" in seen, seen
    assert pod.status(cid).state == api.CONTAINER_RUNNING
