"""The streaming server and crib's clients against each other on loopback, with a host-process backend:
every protocol variant, the URL rules, clean-up and backpressure. (The real node is in the integration
tests: tests/integration/test_streaming*.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crib.config import Duration, StreamConfig
from crib.streaming import AttachRequest, ExecRequest, PortForwardRequest, StreamServer, client
from crib.streaming import websocket as ws
from crib.streaming._dial import UpgradeError, upgrade
from crib.streaming.sessions import TokenCache
from crib.testing.streaming import HostBackend

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server() -> AsyncIterator[StreamServer]:
    srv = StreamServer(StreamConfig(creation_timeout=Duration(5.0)), HostBackend())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def backend(srv: StreamServer) -> HostBackend:
    assert isinstance(srv.backend, HostBackend)
    return srv.backend


async def settled(srv: StreamServer) -> None:
    """Wait until no session is live (they end a moment after the client sees the end)."""
    for _ in range(500):
        if not any(srv.session_counts().values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"sessions still live: {srv.session_counts()}")


async def started(srv: StreamServer) -> None:
    """Wait until the backend started a process."""
    for _ in range(500):
        if backend(srv).processes:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no process was started")


def bytes_written(pid: int) -> int:
    """What a process wrote so far (wchar of /proc/<pid>/io)."""
    text = Path(f"/proc/{pid}/io").read_text()
    return int(next(line for line in text.splitlines() if line.startswith("wchar")).split()[1])


TRANSPORTS = [("spdy", None), ("websocket", None), ("websocket", [ws.V4_CHANNEL]),
              ("websocket", [ws.V4_BASE64_CHANNEL]), ("spdy", ["v4.channel.k8s.io"]),
              ("spdy", ["v2.channel.k8s.io"])]
TRANSPORT_IDS = ["spdy-v5", "ws-v5", "ws-v4", "ws-v4-base64", "spdy-v4", "spdy-v2"]


@pytest.mark.parametrize(("transport", "protocols"), TRANSPORTS, ids=TRANSPORT_IDS)
async def test_exec_output_and_exit_codes(server: StreamServer, transport: str, protocols: Any) -> None:
    for code in (0, 1, 137):
        script = f"echo out; echo err >&2; exit {code}"
        url = server.url(ExecRequest(container_id="c", cmd=("sh", "-c", script)))
        rc = await client.RemoteCommand.connect(url, transport=transport, protocols=protocols)
        async with rc:
            assert await rc.collect() == (b"out\n", b"err\n", code)
    await settled(server)


# (v4 over WebSocket has no way to end stdin: only v5 added the CLOSE signal.)
@pytest.mark.parametrize(("transport", "protocols"), [TRANSPORTS[0], TRANSPORTS[1], TRANSPORTS[4]],
                         ids=[TRANSPORT_IDS[0], TRANSPORT_IDS[1], TRANSPORT_IDS[4]])
async def test_stdin_roundtrip_of_a_large_input(server: StreamServer, transport: str, protocols: Any) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    url = server.url(ExecRequest(container_id="c", cmd=("sha256sum",), stdin=True, stderr=False))
    async with await client.RemoteCommand.connect(url, stdin=True, stderr=False, transport=transport,
                                                  protocols=protocols) as rc:
        async def feed() -> None:
            for i in range(0, len(data), 100_000):
                await rc.write(data[i:i + 100_000])
            await rc.close_stdin()

        writer = asyncio.ensure_future(feed())
        out, _, code = await rc.collect()
        await writer
    assert code == 0
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_tty_and_resize(server: StreamServer, transport: str) -> None:
    url = server.url(ExecRequest(container_id="c", cmd=("sh", "-c", "read x; stty size; exit 4"), tty=True,
                                 stdin=True, stderr=False))
    async with await client.RemoteCommand.connect(url, stdin=True, stderr=False, tty=True,
                                                  transport=transport) as rc:
        await rc.resize(123, 45)
        await asyncio.sleep(0.05)  # the resize and the line travel on different streams
        await rc.write(b"go\n")
        out, _, code = await rc.collect()
    assert code == 4
    assert b"45 123" in out
    assert backend(server).processes[-1].sizes == [(123, 45)]


async def test_command_that_cannot_start_reports_an_error(server: StreamServer) -> None:
    backend(server).refuse = "container c is exited, not running"
    url = server.url(ExecRequest(container_id="c", cmd=("true",)))
    async with await client.RemoteCommand.connect(url) as rc:
        with pytest.raises(client.RemoteError, match="not running"):
            await rc.collect()


async def test_urls_are_single_use_and_nothing_else_is_served(server: StreamServer) -> None:
    url = server.url(ExecRequest(container_id="c", cmd=("true",)))
    async with await client.RemoteCommand.connect(url) as rc:
        assert (await rc.collect())[2] == 0
    for bad in (url, server.base_url + "/exec/made-up-token", server.base_url + "/",
                server.base_url + "/attach/" + url.rsplit("/", 1)[1]):
        with pytest.raises(UpgradeError) as info:
            await client.RemoteCommand.connect(bad)
        assert info.value.status == 404
        assert info.value.body == "404 page not found\n"


async def test_expired_url_is_refused(server: StreamServer) -> None:
    now = [0.0]
    server.tokens = TokenCache(30.0, clock=lambda: now[0])
    url = server.url(ExecRequest(container_id="c", cmd=("true",)))
    now[0] = 30.0
    with pytest.raises(UpgradeError) as info:
        await client.RemoteCommand.connect(url)
    assert info.value.status == 404


async def test_handshake_errors(server: StreamServer) -> None:
    url = server.url(ExecRequest(container_id="c", cmd=("true",)))
    with pytest.raises(UpgradeError) as info:
        await upgrade(url, websocket=False, protocols=["v9.channel.k8s.io"])
    assert info.value.status == 403
    assert "server accepts" in info.value.body
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
    url = server.url(ExecRequest(container_id="c", cmd=("true",)))
    writer.write(f"GET /exec/{url.rsplit('/', 1)[1]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await reader.read(4096)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"missing upgrade headers" in head
    writer.close()


async def test_client_gone_kills_the_command(server: StreamServer) -> None:
    url = server.url(ExecRequest(container_id="c", cmd=("sleep", "300"), stderr=False))
    rc = await client.RemoteCommand.connect(url, stderr=False)
    await started(server)
    await rc.close()
    await settled(server)
    process = backend(server).processes[-1]
    assert process.killed
    assert process.closed
    assert process.child.returncode is not None


async def test_streams_not_opened_in_time_end_the_session() -> None:
    srv = StreamServer(StreamConfig(creation_timeout=Duration(0.3)), HostBackend())
    await srv.start()
    try:
        url = srv.url(ExecRequest(container_id="c", cmd=("true",), stdin=True))
        # The request wants stdin, the client opens none: the server gives up after the creation timeout.
        rc = await client.RemoteCommand.connect(url, stdin=False)
        with pytest.raises((client.RemoteError, ConnectionError)):
            await asyncio.wait_for(rc.collect(), 5)
        await settled(srv)
        assert not backend(srv).processes
        await rc.close()
    finally:
        await srv.close()


async def test_slow_reader_holds_the_command_back(server: StreamServer) -> None:
    """Backpressure: a client that stops reading stops the command; nothing piles up in between."""
    url = server.url(ExecRequest(container_id="c", cmd=("head", "-c", str(256 << 20), "/dev/zero"),
                                 stderr=False))
    async with await client.RemoteCommand.connect(url, stderr=False) as rc:
        first = await rc.read_stdout()
        assert first
        process = backend(server).processes[-1]
        await asyncio.sleep(0.5)  # the client reads nothing more: the command fills what it can
        written = bytes_written(process.child.pid)
        # Client window (4 MiB) + transport buffer + pipe (1 MiB) + socket buffers: far below 256 MiB.
        assert written < 32 << 20, f"{written} bytes left the command while nobody read"
        assert process.child.returncode is None


async def peer_recv(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer, 100), 10)


async def test_attach_semantics(server: StreamServer) -> None:
    url = server.url(AttachRequest(container_id="c", stdin=True))
    async with await client.RemoteCommand.connect(url, stdin=True) as rc:
        attachment = backend(server).attachments[-1]
        attachment.peer.send(b"\x02line one\n")
        attachment.peer.send(b"\x03oops\n")
        assert await rc.read_stdout() == b"line one\n"
        assert await rc.read_stderr() == b"oops\n"
        await rc.write(b"typed\n")
        assert await peer_recv(attachment.peer) == b"typed\n"
        await rc.close_stdin()
        # Not stdin_once, no tty: the end of the client's stdin ends the attach (as with CRI-O).
        _out, _err, code = await rc.collect()
        assert code == 0
        assert await peer_recv(attachment.peer) == b""  # conmon saw this client's stdin end


async def test_attach_stdin_once_waits_for_the_output_to_end(server: StreamServer) -> None:
    backend(server).attach_options = {"stdin_once": True}
    url = server.url(AttachRequest(container_id="c", stdin=True))
    async with await client.RemoteCommand.connect(url, stdin=True, transport="websocket") as rc:
        attachment = backend(server).attachments[-1]
        await rc.close_stdin()
        assert await peer_recv(attachment.peer) == b""
        attachment.peer.send(b"\x02bye\n")
        attachment.peer.close()  # the container exited
        out, _, code = await rc.collect()
    assert (out, code) == (b"bye\n", 0)


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_port_forward_many_connections(server: StreamServer, echo_port: int, transport: str) -> None:
    url = server.url(PortForwardRequest(sandbox_id="p"))
    async with await client.PortForward.connect(url, transport=transport) as pf:
        async def one(i: int) -> bytes:
            conn = await pf.open(echo_port)
            payload = f"connection {i} ".encode() * 1000
            await conn.write(payload)
            await conn.close_write()
            back = await conn.read_all()
            await conn.close()
            return back == payload

        assert all(await asyncio.gather(*(one(i) for i in range(20))))
        # A refused port is reported on that connection's error stream; the session goes on.
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        conn = await pf.open(port)
        assert await conn.read_all() == b""
        await conn.close()
        assert f"error forwarding port {port}" in conn.error
        assert await one(99)
    await settled(server)
    assert all(d.closed for d in backend(server).dialers)


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_port_forward_more_than_a_window(server: StreamServer, transport: str) -> None:
    # Beyond the client's 4 MiB receive window the server sends only as the client grants credit: over the
    # WebSocket tunnel the server's first SETTINGS came with its 101 and were lost, so the client never
    # granted any and the transfer stopped at 4 MiB.
    size = 3 * client.CLIENT_WINDOW + 12345
    block = os.urandom(1 << 16)

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2)
        left = size
        while left:
            writer.write(block[:min(left, len(block))])
            left -= min(left, len(block))
            await writer.drain()
        writer.close()

    tcp = await asyncio.start_server(source, "127.0.0.1", 0)
    try:
        url = server.url(PortForwardRequest(sandbox_id="p"))
        async with await client.PortForward.connect(url, transport=transport) as pf:
            conn = await pf.open(tcp.sockets[0].getsockname()[1])
            await conn.write(b"go")
            digest, got = hashlib.sha256(), 0
            while chunk := await asyncio.wait_for(conn.read(), 20):
                digest.update(chunk)
                got += len(chunk)
            await conn.close()
        expected = hashlib.sha256()
        for offset in range(0, size, len(block)):
            expected.update(block[:min(size - offset, len(block))])
        assert (got, digest.hexdigest()) == (size, expected.hexdigest())
    finally:
        tcp.close()


async def test_port_forward_websocket_channels(server: StreamServer, echo_port: int) -> None:
    url = server.url(PortForwardRequest(sandbox_id="p")) + f"?port={echo_port}"
    raw, chosen, leftover = await upgrade(url, websocket=True, protocols=[ws.V4_CHANNEL])
    assert chosen == ws.V4_CHANNEL
    from crib.streaming._dial import switch
    from crib.streaming.wsconn import WebSocketConnection

    conn = WebSocketConnection(client=True)
    switch(raw, conn, leftover)
    got: dict[int, bytes] = {0: b"", 1: b""}
    for _ in range(2):  # the port prefix on both channels
        message = await conn.receive()
        assert message is not None
        got[message.payload[0]] += message.payload[1:]
    assert client.port_prefix(got[0])[0] == echo_port
    assert client.port_prefix(got[1])[0] == echo_port
    await conn.send(ws.BINARY, b"\x00ping")
    message = await conn.receive()
    assert message is not None
    assert message.payload == b"\x00ping"
    conn.close_nowait()
    await settled(server)


async def test_close_ends_sessions_and_kills_commands(server: StreamServer) -> None:
    url = server.url(ExecRequest(container_id="c", cmd=("sleep", "300"), stderr=False))
    rc = await client.RemoteCommand.connect(url, stderr=False)
    await started(server)
    await server.close()
    with pytest.raises((client.RemoteError, ConnectionError)):
        await asyncio.wait_for(rc.collect(), 10)
    assert backend(server).processes[-1].killed
    await rc.close()


def test_no_thread_is_left_behind() -> None:
    # The port forward dialer of the host backend has no thread; the real one (network/dial.py) ends its
    # namespace thread on close: covered in the integration tests. Here: the event-loop tests above left
    # no non-daemon thread running.
    assert all(t.daemon or t is threading.main_thread() for t in threading.enumerate())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl(1)."""
    import subprocess

    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=crib-test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {n: str(d / n) for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


async def refused_without_certificate(url: str, context: object) -> None:
    rc = await client.RemoteCommand.connect(url, ssl_context=context)
    await rc.collect()


async def test_tls_with_client_certificates(pki: dict[str, str]) -> None:
    import ssl

    cfg = StreamConfig(tls_cert=pki["server.crt"], tls_key=pki["server.key"], tls_ca=pki["ca.crt"])
    srv = StreamServer(cfg, HostBackend())
    await srv.start()
    try:
        assert srv.base_url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=pki["ca.crt"])
        url = srv.url(ExecRequest(container_id="c", cmd=("echo", "secure")))
        with pytest.raises((ssl.SSLError, ConnectionError)):  # no client certificate: refused
            await refused_without_certificate(url, trusting)
        trusting.load_cert_chain(pki["client.crt"], pki["client.key"])
        url = srv.url(ExecRequest(container_id="c", cmd=("echo", "secure")))
        async with await client.RemoteCommand.connect(url, ssl_context=trusting) as rc:
            assert await rc.collect() == (b"secure\n", b"", 0)
    finally:
        await srv.close()


async def test_tls_as_crictl_flags_make_it(pki: dict[str, str]) -> None:
    import ssl

    srv = StreamServer(StreamConfig(tls_cert=pki["server.crt"], tls_key=pki["server.key"]), HostBackend())
    await srv.start()
    try:
        def url() -> str:
            return srv.url(ExecRequest(container_id="c", cmd=("echo", "tls")))

        # No --tls-* flag: crictl does not verify the server at all.
        async with await client.RemoteCommand.connect(url(), ssl_context=client.tls_context(),
                                                      server_name="localhost") as rc:
            assert await rc.collect() == (b"tls\n", b"", 0)
        # --tls-ca: verified, against --tls-sni (crictl's default localhost; the certificate names 127.0.0.1).
        verifying = client.tls_context(ca=pki["ca.crt"])
        with pytest.raises(ssl.SSLCertVerificationError, match="localhost"):
            await client.RemoteCommand.connect(url(), ssl_context=verifying, server_name="localhost")
        async with await client.RemoteCommand.connect(url(), ssl_context=verifying,
                                                      server_name="127.0.0.1") as rc:
            assert await rc.collect() == (b"tls\n", b"", 0)
    finally:
        await srv.close()


async def test_idle_session_ends_and_kills_the_command() -> None:
    srv = StreamServer(StreamConfig(idle_timeout=Duration(0.5)), HostBackend())
    await srv.start()
    try:
        url = srv.url(ExecRequest(container_id="c", cmd=("sleep", "300"), stdin=True, stderr=False))
        async with await client.RemoteCommand.connect(url, stdin=True, stderr=False) as rc:
            # Nobody says a word: after idle_timeout the session ends and takes the command with it.
            with pytest.raises(client.RemoteError, match="idle timeout"):
                await asyncio.wait_for(rc.collect(), 10)
        await settled(srv)
        process = backend(srv).processes[-1]
        assert process.killed
        assert process.child.returncode is not None
    finally:
        await srv.close()
