"""The soak's kubelet-like client: pod slots kept converging to "a ready pod with two running containers"
while pods churn, containers exit and restart, and faults break things underneath.

Like kubelet it works from what the runtime reports, not from what it asked for: each sync of a slot lists
the slot's pods and containers, removes what is stale (an old or NOTREADY pod, exited containers), and
creates what is missing, counting restarts in the container's attempt. So a fault at any point is healed
by the next sync, and the calls made are the calls kubelet would make.

Every call goes through `Rpc.call`: counted by method and status code, bounded by a deadline. A call that
answers INTERNAL, or runs into the client's deadline with no fault to explain it, is a violation (crib's
own DEADLINE_EXCEEDED, answered within the bound, is an error like any other). A violation, and an answer
slower than a third of its bound, name the faults injected while the call ran.
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from crib._proto.runtime.v1 import api_pb2 as api
from crib._proto.runtime.v1 import api_pb2_grpc

CONTAINERS = {
    # writes a line a second (its log is read back); runs until stopped
    "ticker": ["sh", "-c", "while true; do echo tick $(date +%s); sleep 1; done"],
    # exits with 3 after a while: restarted by the next sync with attempt + 1
    "quitter": ["sh", "-c", "sleep $((RANDOM % 20 + 10)); exit 3"],
}
BOUNDS = {  # deadlines (s) per RPC; anything not listed gets DEFAULT_BOUND
    "RunPodSandbox": 90.0, "StopPodSandbox": 90.0, "RemovePodSandbox": 90.0, "CreateContainer": 90.0,
    "StartContainer": 60.0, "StopContainer": 60.0, "RemoveContainer": 60.0, "ExecSync": 40.0,
    "PullImage": 30.0,
}
DEFAULT_BOUND = 20.0


@dataclass
class Stats:
    """Counters shared by every thread of the soak (mutate only under lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rpcs: collections.Counter[str] = field(default_factory=collections.Counter)
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    actions: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    samples: dict[tuple[str, str], str] = field(default_factory=dict)  # one error message per (rpc, code)
    windows: list[tuple[str, float, float]] = field(default_factory=list)  # faults: (kind, start, end)
    pod_ips: set[str] = field(default_factory=set)

    def count(self, counter: str, key: Any, n: int = 1) -> None:
        with self.lock:
            getattr(self, counter)[key] += n

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(f"{time.strftime('%H:%M:%S')} {text}")

    def fault_window(self, kind: str, start: float, end: float) -> None:
        with self.lock:
            self.windows.append((kind, start, end))

    def explained(self, kinds: tuple[str, ...], start: float, end: float) -> bool:
        return any(k in kinds for k in self.during(start, end))

    def during(self, start: float, end: float) -> list[str]:
        """The kinds of the faults injected while [start, end] (a violation's likely cause)."""
        with self.lock:
            return sorted({k for k, s, e in self.windows if s <= end and e >= start})


# A deadline these faults can explain (the call was waiting on the very thing the fault broke).
EXPLAINED_BY = {"PullImage": ("registry_stall", "daemon_kill"), "RemoveImage": ("registry_stall",)}


class Rpc:
    """The client's connection: its own channel, reconnecting fast after a daemon restart."""

    def __init__(self, endpoint: str, stats: Stats) -> None:
        self.stats = stats
        self._channel = grpc.insecure_channel(endpoint, options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.max_receive_message_length", 64 << 20)])
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.images = api_pb2_grpc.ImageServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request: Any) -> Any | None:
        """The response, or None when the call failed (counted, and judged)."""
        stub = self.runtime if hasattr(self.runtime, method) else self.images
        bound = BOUNDS.get(method, DEFAULT_BOUND)
        self.stats.count("rpcs", method)
        start = time.monotonic()
        try:
            response = getattr(stub, method)(request, timeout=bound)
        except grpc.RpcError as exc:
            code = exc.code()
            self.stats.count("codes", code.name)
            self.stats.count("errors", (method, code.name))
            with self.stats.lock:
                self.stats.samples.setdefault((method, code.name), (exc.details() or "")[:300])
            end = time.monotonic()
            faults = ", ".join(self.stats.during(start, end)) or "none"
            if code == grpc.StatusCode.INTERNAL:
                self.stats.violation(f"{method} answered INTERNAL: {exc.details()} (faults meanwhile: "
                                     f"{faults})")
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED and end - start >= bound * 0.99 and \
                    not self.stats.explained(EXPLAINED_BY.get(method, ()), start, end):
                # The client's deadline, not crib's own DEADLINE_EXCEEDED answered within the bound (an
                # error like any other, counted above).
                self.stats.violation(f"{method} did not answer within its bound of {bound:g}s (faults "
                                     f"meanwhile: {faults})")
            elif end - start > bound / 3:
                self.stats.count("actions", f"slow {method} answer {code.name} (faults: {faults})")
            return None
        self.stats.count("codes", "OK")
        return response


@dataclass
class Slot:
    """One pod the client keeps alive (and now and then replaces)."""

    name: str
    host_port: int = 0
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    pod_id: str = ""
    born: float = 0.0
    restarts: collections.Counter[str] = field(default_factory=collections.Counter)


class Kubelet:
    """Keeps the slots converging (see the module note); run() until stop is set."""

    def __init__(self, rpc: Rpc, *, tag: str, image: str, log_dir: Path, slots: int, host_ports: list[int],
                 churn_after: float, rng: random.Random) -> None:
        self.rpc = rpc
        self.tag = tag
        self.image = image
        self.log_dir = log_dir
        self.rng = rng
        self.churn_after = churn_after
        self.slots = [Slot(name=f"soak-{i}", host_port=host_ports[i] if i < len(host_ports) else 0)
                      for i in range(slots)]
        self._queue: collections.deque[Slot] = collections.deque(self.slots)
        self._qlock = threading.Lock()
        self.removals: set[str] = set()  # every pod the client asked to remove (the restart check skips them)

    def _pod_config(self, slot: Slot) -> api.PodSandboxConfig:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=slot.name, namespace="soak", uid=slot.uid, attempt=0),
            hostname=slot.name, labels={"soak-slot": slot.name},
            log_directory=str(self.log_dir / slot.uid))
        config.linux.cgroup_parent = f"/{self.tag}/{slot.name}-{slot.uid[:8]}"
        config.linux.security_context.namespace_options.pid = api.CONTAINER
        if slot.host_port:
            config.port_mappings.append(api.PortMapping(protocol=api.TCP, container_port=80,
                                                        host_port=slot.host_port))
        return config

    # ---------------------------------------------------------------------------------------- pods

    def _remove_pod(self, pod_id: str) -> bool:
        with self._qlock:
            self.removals.add(pod_id)
        stopped = self.rpc.call("StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        removed = self.rpc.call("RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        return stopped is not None and removed is not None

    def sync(self, slot: Slot) -> None:
        listed = self.rpc.call("ListPodSandbox", api.ListPodSandboxRequest(
            filter=api.PodSandboxFilter(label_selector={"soak-slot": slot.name})))
        if listed is None:
            return
        current = [p for p in listed.items if p.id == slot.pod_id and p.state == api.SANDBOX_READY]
        stale = [p for p in listed.items if p not in current]
        for pod in stale:  # an older pod of the slot, or its pod gone NOTREADY
            self.rpc.stats.count("actions", "remove stale pod")
            if self._remove_pod(pod.id) and pod.id == slot.pod_id:
                slot.pod_id = ""
        if stale:
            return  # converge one step at a time, like kubelet's sync loop
        if not current:
            slot.uid = uuid.uuid4().hex  # a new pod of the slot, as kubelet makes after a deletion
            reply = self.rpc.call("RunPodSandbox", api.RunPodSandboxRequest(config=self._pod_config(slot)))
            if reply is None:
                return
            slot.pod_id, slot.born = reply.pod_sandbox_id, time.monotonic()
            slot.restarts.clear()
            self.rpc.stats.count("actions", "run pod")
        self._sync_containers(slot)
        if time.monotonic() - slot.born > self.churn_after and self.rng.random() < 0.3:
            self.rpc.stats.count("actions", "churn pod")
            if self._remove_pod(slot.pod_id):
                slot.pod_id = ""

    # ---------------------------------------------------------------------------------- containers

    def _sync_containers(self, slot: Slot) -> None:
        listed = self.rpc.call("ListContainers", api.ListContainersRequest(
            filter=api.ContainerFilter(pod_sandbox_id=slot.pod_id)))
        if listed is None:
            return
        status = self.rpc.call("PodSandboxStatus", api.PodSandboxStatusRequest(pod_sandbox_id=slot.pod_id))
        if status is not None and status.status.network.ip:
            with self.rpc.stats.lock:
                self.rpc.stats.pod_ips.add(status.status.network.ip)
        for name, command in CONTAINERS.items():
            mine = sorted((c for c in listed.containers if c.metadata.name == name),
                          key=lambda c: c.metadata.attempt)
            latest = mine[-1] if mine else None
            if latest is None:
                self._start_new(slot, name, command)
            elif latest.state == api.CONTAINER_CREATED:
                self.rpc.call("StartContainer", api.StartContainerRequest(container_id=latest.id))
            elif latest.state in (api.CONTAINER_EXITED, api.CONTAINER_UNKNOWN):
                for dead in mine:
                    self.rpc.call("RemoveContainer", api.RemoveContainerRequest(container_id=dead.id))
                slot.restarts[name] = max(slot.restarts[name], latest.metadata.attempt) + 1
                self.rpc.stats.count("actions", "restart container")
                self._start_new(slot, name, command)
            elif latest.state == api.CONTAINER_RUNNING:
                self._poke(slot, latest)

    def _start_new(self, slot: Slot, name: str, command: list[str]) -> None:
        attempt = slot.restarts[name]
        config = api.ContainerConfig(metadata=api.ContainerMetadata(name=name, attempt=attempt),
                                     image=api.ImageSpec(image=self.image), command=command,
                                     log_path=f"{name}/{attempt}.log", labels={"soak-slot": slot.name})
        config.linux.security_context.namespace_options.pid = api.CONTAINER
        reply = self.rpc.call("CreateContainer", api.CreateContainerRequest(
            pod_sandbox_id=slot.pod_id, config=config, sandbox_config=self._pod_config(slot)))
        if reply is not None and self.rpc.call("StartContainer", api.StartContainerRequest(
                container_id=reply.container_id)) is not None:
            self.rpc.stats.count("actions", "start container")

    def _poke(self, slot: Slot, container: Any) -> None:
        """What kubelet and its users do to a running container: status, exec, logs, stats."""
        roll = self.rng.random()
        if roll < 0.2:
            self.rpc.call("ContainerStatus", api.ContainerStatusRequest(container_id=container.id))
        elif roll < 0.35:
            self._stream_exec(container)
        elif roll < 0.55:
            reply = self.rpc.call("ExecSync", api.ExecSyncRequest(container_id=container.id,
                                                                 cmd=["echo", "soak"], timeout=20))
            if reply is not None:
                self.rpc.stats.count("actions", "exec ok" if reply.stdout == b"soak\n" else "exec odd output")
        elif roll < 0.75 and container.metadata.name == "ticker":
            self._read_log(slot, container)
        elif roll < 0.85:
            self.rpc.call("ContainerStats", api.ContainerStatsRequest(container_id=container.id))

    def _stream_exec(self, container: Any) -> None:
        """Exec through the streaming URL (as kubectl exec does), SPDY or WebSocket at random."""
        reply = self.rpc.call("Exec", api.ExecRequest(container_id=container.id, cmd=["echo", "streamed"],
                                                      stdout=True))
        if reply is None:
            return
        transport = self.rng.choice(("spdy", "websocket"))
        start = time.monotonic()
        try:
            out, code = asyncio.run(_remote_echo(reply.url, transport))
        except TimeoutError:
            if not self.rpc.stats.explained(("daemon_kill", "conmon_kill", "container_kill"), start,
                                            time.monotonic()):
                self.rpc.stats.violation(f"exec over {transport} did not end within {STREAM_BOUND:g}s")
            self.rpc.stats.count("actions", "stream exec timed out")
            return
        except Exception as exc:  # the container or the daemon went away mid-session: counted, not judged
            self.rpc.stats.count("actions", f"stream exec failed ({type(exc).__name__})")
            return
        ok = out == b"streamed\n" and code == 0
        self.rpc.stats.count("actions", f"stream exec {'ok' if ok else 'odd output'} ({transport})")

    def _read_log(self, slot: Slot, container: Any) -> None:
        path = self.log_dir / slot.uid / "ticker" / f"{container.metadata.attempt}.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return
        malformed = [ln for ln in lines[:-1] if len(ln.split(" ", 3)) < 4 or ln.split(" ", 3)[1] not in
                     ("stdout", "stderr")]
        self.rpc.stats.count("actions", "log read")
        if malformed:
            self.rpc.stats.count("actions", "malformed log line", len(malformed))

    # -------------------------------------------------------------------------------------- driving

    def run(self, stop: threading.Event, pause: Callable[[], float]) -> None:
        while not stop.is_set():
            with self._qlock:
                slot = self._queue.popleft()
            try:
                self.sync(slot)
            except Exception as exc:  # a client bug must not end the soak silently
                self.rpc.stats.violation(f"client error in slot {slot.name}: {type(exc).__name__}: {exc}")
            finally:
                with self._qlock:
                    self._queue.append(slot)
            stop.wait(pause())


STREAM_BOUND = 30.0


async def _remote_echo(url: str, transport: str) -> tuple[bytes, int]:
    from crib.streaming import client  # loaded on first use, like the daemon's own streaming side

    async with asyncio.timeout(STREAM_BOUND):
        async with await client.RemoteCommand.connect(url, stdin=False, stdout=True, stderr=False,
                                                      transport=transport) as rc:
            out, _, code = await rc.collect()
    return out, code


def puller(rpc: Rpc, image: str, stop: threading.Event, every: float) -> None:
    """Pull an image through the (stallable) proxy, remove it, again and again."""
    while not stop.wait(every):
        rpc.call("PullImage", api.PullImageRequest(image=api.ImageSpec(image=image)))
        rpc.call("RemoveImage", api.RemoveImageRequest(image=api.ImageSpec(image=image)))


__all__ = ["BOUNDS", "CONTAINERS", "Kubelet", "Rpc", "Slot", "Stats", "puller"]
