"""What `crib` draws on a terminal, read back through a pseudo-terminal: pull progress and `crib top`."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures import images as img
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.registry_proxy import RegistryProxy, Throttle
from tests.integration.cli_helpers import container_json, pod_yaml, with_busybox

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class Terminal:
    """`crib ARGS` with stdin, stdout and stderr on a pseudo-terminal of 120 columns."""

    def __init__(self, endpoint: str, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
        env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
        self.proc = subprocess.Popen([sys.executable, "-m", "crib", "-r", endpoint, *args], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def read_until(self, pattern: str, timeout: float = 30.0) -> str:
        """Read the terminal until the text (escapes removed) matches pattern; the text so far."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} on the terminal within {timeout}s:\n{self.text[-3000:]}"
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    chunk = b""
                if not chunk:
                    assert re.search(pattern, self.text), f"ended without {pattern!r}:\n{self.text[-3000:]}"
                self.raw += chunk
        return self.text

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"still running:\n{self.text[-2000:]}"
            if select.select([self.master], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    self.raw += os.read(self.master, 65536)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_pull_draws_a_live_bar_per_layer(crib: CribDaemon, images: img.Catalogue,
                                         registry_proxy: RegistryProxy) -> None:
    entry = images[img.LAYERS]
    big = max(entry.image.layers, key=lambda layer: layer.size)
    # About two seconds for the biggest layer, moving all the time: the bars show bytes and a rate.
    registry_proxy.throttle[big.digest] = Throttle(chunk=max(1, big.size // 10), interval=0.2)
    term = Terminal(crib.endpoint, "pull", registry_proxy.reference(img.LAYERS))
    try:
        assert term.wait(60) == 0, term.text
    finally:
        term.close()
    text = term.text
    assert f"Image is up to date for {entry.image_id}" in text
    for layer in entry.image.layers:
        assert layer.digest.split(":")[1][:12] in text  # one bar per layer, named by its digest
    assert re.search(r"\d+(\.\d+)?/\d+(\.\d+)? [kM]?B", text), text  # bytes done / total
    assert re.search(r"\d+(\.\d+)? [kM]?B/s", text), text  # the rate
    assert "4/4 layers" in text


def test_top_shows_pods_and_containers_and_obeys_keys(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                                      session_tag: str) -> None:
    ref = images.reference(img.BUSYBOX)
    cli = with_busybox(crib.endpoint, ref)
    pod_file = pod_yaml(tmp_path, session_tag, "topped")
    spinner = container_json(tmp_path, "spinner", ref, ["sh", "-c", "while :; do :; done"])
    cid = cli.ok("run", "--no-pull", str(spinner), str(pod_file)).strip()
    term = Terminal(crib.endpoint, "top", "-d", "0.5")
    try:
        # The pod, then its container running, with a CPU figure once two readings exist.
        term.read_until(r"crib-test/topped\s+[0-9a-f]{13}\s+Ready")
        term.read_until(rf"spinner\s+{cid[:13]}\s+Running\s+\d+\.\d\s+\S+B\s+0\s+")
        term.send(b"m")
        term.read_until(r"sort: mem")
        term.send(b"q")
        assert term.wait(15) == 0
    finally:
        term.close()
        cli.ok("rmp", "-f", "-a")
