"""The real crictl against crib's streaming server (kubelet's client libraries, SPDY and WebSocket):
`exec -it` in a pseudo-terminal, `exec --transport websocket`, `attach`, `port-forward`. Run when crictl is
on PATH."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from crib.system.tty import open_pty, set_winsize
from tests.fixtures.cri import Pod, container_config, wait_for
from tests.fixtures.daemon import CribDaemon

CRICTL = shutil.which("crictl")
pytestmark = pytest.mark.skipif(CRICTL is None, reason="crictl is not on PATH")


def crictl(daemon: CribDaemon, *args: str) -> list[str]:
    assert CRICTL is not None
    return [CRICTL, "--runtime-endpoint", daemon.endpoint, "--image-endpoint", daemon.endpoint,
            "--timeout", "30s", *args]


def run_in_terminal(argv: list[str], typed: bytes, *, width: int, height: int, timeout: float = 30.0
                    ) -> tuple[int, bytes]:
    """Run argv on a pseudo-terminal of the given size, typing `typed`; its exit code and screen output."""
    master, slave = open_pty()
    set_winsize(master, width, height)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    sent = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if not sent and b"READY" in out:
                os.write(master, typed)
                sent = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_crictl_exec(crib: CribDaemon, pod: Pod, busybox: str) -> None:
    cid = pod.run(container_config(busybox, "sleeper", command=["sleep", "100000"]))
    script = "echo READY; read line; stty size; echo got-$line; exit 3"
    code, screen = run_in_terminal(crictl(crib, "exec", "-it", cid, "sh", "-c", script), b"typed\r",
                                   width=91, height=27)
    assert b"27 91" in screen, screen
    assert b"got-typed" in screen, screen
    assert code != 0
    assert b"exit code 3" in screen, screen
    argv = crictl(crib, "exec", "--transport", "websocket", cid, "sh", "-c", "echo ws; exit 4")
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert done.stdout == b"ws\n"
    assert done.returncode != 0
    assert b"exit code 4" in done.stderr
    done = subprocess.run(crictl(crib, "exec", cid, "sh", "-c", "echo spdy; echo err >&2"),
                          capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, b"spdy\n")
    assert b"err\n" in done.stderr


def test_crictl_attach_and_port_forward(crib: CribDaemon, pod: Pod, busybox: str) -> None:
    ticker = pod.run(container_config(busybox, "ticker", command=[
        "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]))
    attach = subprocess.Popen(crictl(crib, "attach", ticker), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        assert attach.stdout is not None
        lines = [attach.stdout.readline() for _ in range(2)]
    finally:
        attach.kill()
        attach.wait()
    assert all(line.startswith(b"tick ") for line in lines), lines

    pod.run(container_config(busybox, "web", command=[
        "sh", "-c", "mkdir -p /www && echo via-crictl > /www/index.html && exec httpd -f -p 8080 -h /www"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    for transport in ("spdy", "websocket"):
        forward = subprocess.Popen(crictl(crib, "port-forward", "--transport", transport, pod.id,
                                          f"{local}:8080"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            def fetch() -> bytes:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=5) as answer:
                        return bytes(answer.read())
                except OSError:
                    return b""

            first = wait_for(fetch, 20, interval=0.2, what=f"crictl port-forward ({transport})")
            assert first == b"via-crictl\n"
            assert all(fetch() == b"via-crictl\n" for _ in range(5))
        finally:
            forward.terminate()
            forward.wait(10)
