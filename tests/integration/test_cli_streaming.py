"""exec (-i, -it, both transports), attach and port-forward through the CLI against a real daemon."""

from __future__ import annotations

import fcntl
import struct
import subprocess
import sys
import termios
import urllib.request
from pathlib import Path

from tests.fixtures import images as img
from tests.fixtures.cri import wait_for
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.registry import free_port
from tests.integration.cli_helpers import Cli, container_json, pod_yaml, with_busybox
from tests.integration.test_cli_pty import Terminal


def _start(cli: Cli, tmp_path: Path, pod: str, pod_file: Path, ref: str, name: str,
           command: list[str]) -> str:
    cid = cli.ok("create", pod, str(container_json(tmp_path, name, ref, command)), str(pod_file)).strip()
    cli.ok("start", cid)
    return cid


def test_exec_it_runs_an_interactive_shell(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                           session_tag: str) -> None:
    ref = images.reference(img.BUSYBOX)
    cli = with_busybox(crib.endpoint, ref)
    cid = cli.ok("run", "--no-pull", str(container_json(tmp_path, "shell", ref, ["sleep", "600"])),
                 str(pod_yaml(tmp_path, session_tag, "shell"))).strip()
    term = Terminal(crib.endpoint, "exec", "-it", cid, "sh")
    try:
        fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        term.read_until(r"# $")  # busybox sh's prompt: there is a terminal on the other side
        term.send(b"echo hi-$((40 + 2)); tty\r")
        term.read_until(r"hi-42\s+/dev/pts/\d+")
        term.send(b"stty size\r")
        term.read_until(r"40 120")  # the local terminal's size reached the remote one
        term.send(b"exit 3\r")
        assert term.wait(20) == 3
    finally:
        term.close()
        cli.ok("rmp", "-f", "-a")


def test_exec_attach_and_port_forward(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                      session_tag: str) -> None:
    ref = images.reference(img.BUSYBOX)
    cli = with_busybox(crib.endpoint, ref)
    pod_file = pod_yaml(tmp_path, session_tag, "streams")
    pod = cli.ok("runp", str(pod_file)).strip()
    try:
        shell = _start(cli, tmp_path, pod, pod_file, ref, "shell", ["sleep", "600"])
        for transport in ("spdy", "websocket"):
            upper = cli.run("exec", "-i", "--transport", transport, shell, "tr", "a-z", "A-Z",
                            stdin="hello\n")
            assert (upper.returncode, upper.stdout) == (0, "HELLO\n"), upper.stderr
            failed = cli.run("exec", "-r", transport, shell, "sh", "-c", "echo out; echo err >&2; exit 5")
            assert (failed.returncode, failed.stdout, failed.stderr) == (5, "out\n", "err\n")

        ticker = _start(cli, tmp_path, pod, pod_file, ref, "ticker",
                        ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"])
        attach = subprocess.Popen([sys.executable, "-m", "crib", "-r", crib.endpoint, "attach", ticker],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert attach.stdout is not None
            first = attach.stdout.readline()
            assert first.startswith("tick "), first + (attach.stderr.read() if attach.stderr else "")
            assert int(attach.stdout.readline().split()[1]) == int(first.split()[1]) + 1
        finally:
            attach.terminate()
            attach.wait(10)

        _start(cli, tmp_path, pod, pod_file, ref, "web",
               ["sh", "-c", "mkdir -p /www && echo forwarded > /www/index.html && "
                "exec httpd -f -p 8080 -h /www"])
        local = free_port()
        argv = [sys.executable, "-m", "crib", "-r", crib.endpoint, "port-forward", pod, f"{local}:8080"]
        forward = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()
            assert line.strip() == f"Forwarding from 127.0.0.1:{local} -> 8080", line

            def fetch() -> str:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=5) as resp:
                        return str(resp.read().decode())
                except OSError:
                    return ""

            assert wait_for(fetch, timeout=20, what="the page through port-forward") == "forwarded\n"
        finally:
            forward.terminate()
            forward.wait(10)
    finally:
        cli.ok("rmp", "-f", pod)
