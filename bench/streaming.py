"""Streaming benchmark, crib vs containerd (CRI plugin): exec round trips, exec stdout throughput, port
forward throughput and connections per second, all through the streaming URLs and one client.

    .venv/bin/python -m bench streaming [--round-trips 50] [--runs 5] [--mib 256] [--connections 300]
                                        [--transport spdy|websocket] [--json FILE]

Both runtimes run side by side, each with its own CNI bridge network of the same shape and the busybox
image from a private registry (the set-up of bench/runtime.py). In one pod per runtime run a `sleep`
container (exec target) and busybox `httpd` serving a file of --mib MiB (port forward target). Every
measurement asks the runtime for a URL over CRI (Exec / PortForward, the same generated stubs) and talks
to that URL with crib.streaming.client, the same code for both runtimes, SPDY by default (what kubelet
and kubectl send to a runtime); runs alternate crib and containerd.

    (a) exec round trip: Exec `true` (non-TTY, stdout+stderr) -> connect -> streams -> exit status; p50/p95
    (b) exec stdout: `dd if=/dev/zero bs=1M count=<mib>`, read to the end; MiB/s (median of --runs)
    (c) port forward, one connection: HTTP GET of the <mib> MiB file through one forwarded connection; MiB/s
    (d) port forward connections/s: --connections GETs of a small page, 10 at a time, over one session

A runtime that refuses a measurement's protocol is reported as refusing it and left out of that measurement:
containerd 1.6 answers 403 to port forward over WebSocket as kubectl and crictl send it now (SPDY/3.1
tunnelled in WebSocket, `SPDY/3.1+portforward.k8s.io`), so `--transport websocket` measures (c) and (d) on
crib alone.

The GETs read the response to the end of its Content-Length, as curl or a browser does, then drop the
connection; not to the end of the stream, which containerd holds open up to 1 s after the pod closed.

Alongside: the crib daemon's peak RSS while (b) and (c) run (bounded buffers: it must not grow with the
size of the transfer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/streaming.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.runtime import Runtime, pair
from crib._proto.runtime.v1 import api_pb2 as api
from crib.streaming import client

HTTP_PORT = 8080
GET_TIMEOUT = 120.0  # a forwarded GET that takes longer is reported, not waited for forever
SMALL = b"small-page\n"


class Target:
    """One runtime's pod, exec container and web server."""

    def __init__(self, runtime: Runtime, mib: int) -> None:
        self.r = runtime
        self.sid, config = runtime.run_pod()
        self.sleeper = runtime.create_start(self.sid, config, ["sleep", "100000"])
        script = (f"mkdir -p /www && dd if=/dev/zero of=/www/big bs=1048576 count={mib} 2>/dev/null && "
                  f"echo small-page > /www/small && exec httpd -f -p {HTTP_PORT} -h /www")
        self.web = runtime.create_start(self.sid, config, ["sh", "-c", script])
        self.mib = mib

    def exec_url(self, *cmd: str) -> str:
        return str(self.r.rt.Exec(api.ExecRequest(container_id=self.sleeper, cmd=list(cmd), stdout=True,
                                                  stderr=True), timeout=30).url)

    def forward_url(self) -> str:
        return str(self.r.rt.PortForward(api.PortForwardRequest(pod_sandbox_id=self.sid, port=[HTTP_PORT]),
                                         timeout=30).url)


async def round_trip(target: Target, transport: str) -> float:
    started = time.perf_counter()
    url = target.exec_url("true")
    async with await client.RemoteCommand.connect(url, transport=transport) as rc:
        _, _, code = await rc.collect()
    if code != 0:
        raise RuntimeError(f"{target.r.name}: exec true exited {code}")
    return time.perf_counter() - started


async def exec_stdout(target: Target, transport: str) -> float:
    size = target.mib << 20
    started = time.perf_counter()
    # dd writes 1 MiB at a time; busybox head's 4 KiB writes would measure head, not the stream.
    url = target.exec_url("dd", "if=/dev/zero", "bs=1048576", f"count={target.mib}")
    got = 0
    async with await client.RemoteCommand.connect(url, transport=transport) as rc:
        while chunk := await rc.read_stdout():
            got += len(chunk)
        await rc.wait()
    elapsed = time.perf_counter() - started
    if got != size:
        raise RuntimeError(f"{target.r.name}: {got} bytes of {size}")
    return target.mib / elapsed


async def _response(conn: client.ForwardedConnection, name: str) -> int:
    """Read one HTTP response to the end of its Content-Length body, as curl does; its body size.

    Not to the end of the connection: after the pod's side closed, containerd keeps the stream open up to
    1 s for the client's side (its socat-like grace period), which a client reading to EOF would wait for
    and a browser or curl never sees.
    """
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await conn.read()
        if not chunk:
            raise RuntimeError(f"{name}: the connection ended in the response head ({conn.error})")
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    if length is None:
        raise RuntimeError(f"{name}: no Content-Length in {head[:200]!r}")
    got = len(body)
    while got < length:
        chunk = await conn.read()
        if not chunk:
            raise RuntimeError(f"{name}: {got} of {length} body bytes ({conn.error})")
        got += len(chunk)
    return got


async def _get(pf: client.PortForward, path: str, name: str) -> int:
    conn = await pf.open(HTTP_PORT)
    await conn.write(f"GET {path} HTTP/1.1\r\nHost: pod\r\n\r\n".encode())
    size = await asyncio.wait_for(_response(conn, name), GET_TIMEOUT)
    await conn.close()
    return size


async def forward_throughput(target: Target, transport: str) -> float:
    started = time.perf_counter()
    async with await client.PortForward.connect(target.forward_url(), transport=transport) as pf:
        got = await _get(pf, "/big", target.r.name)
    elapsed = time.perf_counter() - started
    if got != target.mib << 20:
        raise RuntimeError(f"{target.r.name}: port forward got {got} bytes of {target.mib} MiB")
    return target.mib / elapsed


async def forward_connections(target: Target, transport: str, count: int, parallel: int = 10) -> float:
    async with await client.PortForward.connect(target.forward_url(), transport=transport) as pf:
        gate = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with gate:
                size = await _get(pf, "/small", target.r.name)
                if size != len(SMALL):
                    raise RuntimeError(f"{target.r.name}: a body of {size} bytes, not {len(SMALL)}")

        await one()

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return count / (time.perf_counter() - started)


REFUSED: dict[str, str] = {}  # runtime -> why it refused a measurement's protocol (then left out of it)


def alternate(targets: list[Target], rounds: int, measure: Any, *args: Any,
              rss: dict[str, int] | None = None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {t.r.name: [] for t in targets}
    for i in range(rounds):
        for t in targets if i % 2 == 0 else list(reversed(targets)):
            if t.r.name in REFUSED:
                continue
            try:
                run_one(t, out, measure, args, rss)
            except client.UpgradeError as exc:  # the protocol is not the runtime's: say so, measure the other
                REFUSED[t.r.name] = str(exc)
    return out


def run_one(t: Target, out: dict[str, list[float]], measure: Any, args: tuple[Any, ...],
            rss: dict[str, int] | None) -> None:
    if rss is not None and t.r.name == "crib":
        with harness.PeakRss(t.r.daemon.proc.pid) as peak:
            out[t.r.name].append(asyncio.run(measure(t, *args)))
        rss["crib"] = max(rss.get("crib", 0), peak.peak_kb)
    else:
        out[t.r.name].append(asyncio.run(measure(t, *args)))


def summarize_latency(title: str, times: dict[str, list[float]]) -> dict[str, Any]:
    print(f"\n{title}")
    out: dict[str, Any] = {}
    for name, xs in times.items():
        out[name] = {"p50_ms": harness.median(xs) * 1000, "p95_ms": harness.p95(xs) * 1000}
        print(f"  {name:<12} p50 {out[name]['p50_ms']:7.1f} ms   p95 {out[name]['p95_ms']:7.1f} ms")
    out["ratio_p50"] = out["crib"]["p50_ms"] / out["containerd"]["p50_ms"]
    out["ratio_p95"] = out["crib"]["p95_ms"] / out["containerd"]["p95_ms"]
    print(f"  ratio crib/containerd: p50 {out['ratio_p50']:.2f}, p95 {out['ratio_p95']:.2f} "
          "(lower is better)")
    return out


def summarize_rate(title: str, unit: str, rates: dict[str, list[float]]) -> dict[str, Any]:
    print(f"\n{title}")
    out: dict[str, Any] = {}
    for name, xs in rates.items():
        if not xs:
            out[name] = {"refused": REFUSED.get(name, "no runs")}
            print(f"  {name:<12} refused: {out[name]['refused']}")
            continue
        out[name] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}
        print(f"  {name:<12} median {out[name]['median']:8.1f} {unit}   "
              f"(min {min(xs):.1f}, max {max(xs):.1f})")
    if all("median" in out[name] for name in ("crib", "containerd")):
        out["ratio"] = out["crib"]["median"] / out["containerd"]["median"]
        print(f"  ratio crib/containerd: {out['ratio']:.2f} (higher is better)")
    return out


def run_all(targets: list[Target], args: argparse.Namespace) -> dict[str, Any]:
    transport = args.transport
    results: dict[str, Any] = {"transport": transport}
    rss: dict[str, int] = {}
    alternate(targets, 4, round_trip, transport)  # warm-up: page cache, first connections
    results["a_exec_round_trip"] = summarize_latency(
        f"(a) exec round trip, `true` ({transport})",
        alternate(targets, args.round_trips, round_trip, transport))
    results["b_exec_stdout"] = summarize_rate(
        f"(b) exec stdout, {args.mib} MiB ({transport})", "MiB/s",
        alternate(targets, args.runs, exec_stdout, transport, rss=rss))
    results["c_forward_throughput"] = summarize_rate(
        f"(c) port forward, one connection, {args.mib} MiB ({transport})", "MiB/s",
        alternate(targets, args.runs, forward_throughput, transport, rss=rss))
    results["d_forward_connections"] = summarize_rate(
        f"(d) port forward, {args.connections} connections, 10 at a time ({transport})", "conn/s",
        alternate(targets, args.runs, forward_connections, transport, args.connections))
    results["crib_peak_rss_mib"] = rss.get("crib", 0) / 1024
    print(f"\ncrib daemon peak RSS during (b) and (c): {results['crib_peak_rss_mib']:.1f} MiB")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench streaming", description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--transport", choices=("spdy", "websocket"), default="spdy")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crib-bench-stream-") as tmp, pair(Path(tmp)) as (runtimes, _):
        targets: list[Target] = []
        try:
            targets += [Target(r, args.mib) for r in runtimes]
            time.sleep(2)  # httpd up, the big file written
            print(f"runtimes up; transport {args.transport}", flush=True)
            results = run_all(targets, args)
        finally:  # a failed measurement must not leave pods (mounts, monitors) behind the stopped daemons
            for t in targets:  # each one, even when another's removal fails
                try:
                    t.r.remove_pod(t.sid)
                except Exception as exc:  # reported; the other pod and the daemons still go
                    print(f"removing {t.r.name}'s pod failed: {exc}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
