"""What the daemon's modules load, for its idle memory (issue 13: idle RSS ≤ 45 MiB): checked in a fresh
interpreter, since this test process has imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
import crib.daemon
# "httpx" itself is there as a lazy module (crib/lazy.py) and "httpx._main" as crib's stand-in: no code of
# httpx has run until one of its submodules shows up.
idle = sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "httpx", "httpcore", "rich", "pygments")
              and m not in ("httpx", "httpx._main"))
from crib.images import registry
client = registry.httpx.AsyncClient()  # what the first pull does
pulled = sorted(m for m in sys.modules if m.split(".")[0] in ("rich", "pygments"))
print(json.dumps({"idle": idle, "pulled": pulled, "httpx": "httpx._client" in sys.modules}))
"""


def test_an_idle_daemon_loads_no_grpc_or_httpx_and_a_pull_no_rich() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["idle"] == []
    assert seen["httpx"]
    assert seen["pulled"] == []  # httpx's own command line (rich, pygments) stays out of the daemon
