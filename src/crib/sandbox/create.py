"""RunPodSandbox, step by step: every side effect registers its undo before the next one starts.

    record CREATING (reserves the name) -> run dir -> cgroup parent -> pinned net/IPC/UTS namespaces
    (hostname, loopback, sysctls set inside; for a user-namespaced pod the user namespace first, owning
    them) -> hostname, hosts, resolv.conf -> /dev/shm tmpfs -> PID-namespace holder (pid mode POD) and
    CNI ADD, side by side -> plugins' RunPodSandbox (NRI) -> record CREATED

Under a sandboxed handler (gVisor: HandlerConfig.sandboxed) every pod has an infra process: it is the
sandbox's first container (the pod's containers join that sandbox, see runtime/_sandbox_shim.py), and CNI
ADD comes before it, as the sandbox may take the pod's interfaces over when it starts. Such a pod cannot
use the node's network, IPC or PID namespace.

A user-namespaced pod's files (hostname, hosts, resolv.conf, the /dev/shm tmpfs) belong to the pod's root
(the host ids its container id 0 maps to), so that root can use them like any pod's root; its log
directory stays the node's (conmon writes the logs).

A failure anywhere runs the undos in reverse (state/undo.py) and leaves nothing: no mount, no pinned
namespace, no cgroup, no conmon, no file, no row. Each step ends with a failpoint (failpoints.py) so that
the tests can prove it.

One exception, on purpose: when the CNI DEL that undoes a failed ADD fails too, the network namespace stays
pinned and the pod is kept as a NOTREADY pod holding nothing else. A DEL without the namespace cannot undo
everything (bridge finds the masquerade rule it must delete through the pod's addresses), and a kept pod
is what kubelet (and crictl rmp) can see and remove: RemovePodSandbox then retries the DEL and unpins.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import shutil
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from crib import failpoints, log
from crib.errors import FailedPrecondition, InvalidArgument
from crib.hooks import PodStep
from crib.network import PodNetworkRequest, PortMapping
from crib.sandbox import files, infra, parents, policy, resources
from crib.sandbox.deps import SandboxDeps
from crib.sandbox.info import pod_root
from crib.state.records import Phase, PodMeta, SandboxRecord
from crib.state.undo import Undo
from crib.system import atomic, mount, ns

_log = log.get(__name__)
_PROTOCOLS = {0: "tcp", 1: "udp", 2: "sctp"}
UNPRIVILEGED_PORTS = "net.ipv4.ip_unprivileged_port_start"
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def network_request(rec: SandboxRecord) -> PodNetworkRequest:
    """The CNI request for a pod, rebuilt from its record (stop and remove need the same one as ADD)."""
    return PodNetworkRequest(
        sandbox_id=rec.id, name=rec.meta.name, namespace=rec.meta.namespace, uid=rec.meta.uid,
        netns_path=rec.netns_path, port_mappings=rec.port_mappings, dns_servers=rec.dns_servers,
        dns_searches=rec.dns_searches, dns_options=rec.dns_options, annotations=dict(rec.annotations),
        cgroup_parent=rec.cgroup_parent)


def initial_record(deps: SandboxDeps, sid: str, config: Any, handler: str) -> SandboxRecord:
    """The CREATING record of a new pod, with every decision taken from the request (validated here)."""
    meta = config.metadata
    linux = config.linux
    sc = linux.security_context
    modes = policy.namespaces(sc.namespace_options)
    userns = policy.user_namespace(sc.namespace_options, modes)
    if userns is not None:
        features = deps.features.get(handler)
        if features is None or not features.user_namespaces:
            why = features.user_namespaces_reason if features is not None else "not probed"
            raise FailedPrecondition(f"pod {meta.namespace}/{meta.name} asks for its own user namespace "
                                     f"(hostUsers: false), but runtime handler {handler!r} cannot run one: "
                                     f"{why}")
    sysctls = policy.check_sysctls(dict(linux.sysctls), modes)
    if deps.cfg.runtime.handlers[handler].sandboxed:
        _check_sandboxed(handler, modes)
        # A sandbox using the host network stack (runsc --network=host) binds its ports as an unprivileged
        # process; in the pod's own network namespace, low ports are the pod's to take (as Docker does).
        sysctls.setdefault(UNPRIVILEGED_PORTS, "0")
    parent = policy.cgroup_parent(linux.cgroup_parent, driver=deps.cfg.runtime.cgroup_driver,
                                  default_parent=deps.cfg.runtime.default_cgroup_parent, sandbox_id=sid)
    if modes.host_network:
        hostname = socket.gethostname()
    else:
        hostname = config.hostname or (meta.name if _HOSTNAME.match(meta.name) else sid[:12])
    dns = config.dns_config
    ports = tuple(PortMapping(protocol=_PROTOCOLS.get(p.protocol, "tcp"), container_port=p.container_port,
                              host_port=p.host_port, host_ip=p.host_ip) for p in config.port_mappings)
    return SandboxRecord(
        id=sid, name=policy.reserved_name(meta.name, meta.namespace, meta.uid, meta.attempt),
        meta=PodMeta(name=meta.name, uid=meta.uid, namespace=meta.namespace, attempt=meta.attempt),
        phase=Phase.CREATING, created_at=time.time_ns(), labels=dict(config.labels),
        annotations=dict(config.annotations), runtime_handler=handler, hostname=hostname,
        log_directory=config.log_directory, cgroup_parent=parent, network_mode=modes.network,
        pid_mode=modes.pid, ipc_mode=modes.ipc, pid_target=modes.target_id, port_mappings=ports,
        dns_servers=tuple(dns.servers), dns_searches=tuple(dns.searches), dns_options=tuple(dns.options),
        sysctls=sysctls, uid_mappings=userns.uids if userns else (),
        gid_mappings=userns.gids if userns else ())


def _check_sandboxed(handler: str, modes: policy.Namespaces) -> None:
    """A sandboxed handler runs the pod in a sandbox of its own, which cannot use the node's namespaces."""
    shared = [name for name, host in (("network", modes.host_network), ("IPC", modes.ipc == "node"),
                                      ("PID", modes.pid == "node")) if host]
    if shared:
        raise InvalidArgument(f"runtime handler {handler!r} runs pods in a sandbox of their own, which "
                              f"cannot use the host {' and '.join(shared)} namespace; drop hostNetwork/"
                              "hostIPC/hostPID or use another RuntimeClass")


async def create(deps: SandboxDeps, rec: SandboxRecord, config: Any) -> SandboxRecord:
    """Carry out RunPodSandbox for the CREATING record rec; returns the CREATED record.

    Raises:
        CribError: the step that failed; when even the network could not be released, the message says
            that the pod is kept NOTREADY for RemovePodSandbox (see the module note).
    """
    kept: list[SandboxRecord] = []
    try:
        return await _create(deps, rec, config, kept)
    except Exception as exc:
        if kept and exc.args and isinstance(exc.args[0], str):
            exc.args = (f"{exc.args[0]}; pod {rec.id} is kept NOTREADY with its network namespace until "
                        "RemovePodSandbox can release its network", *exc.args[1:])
        raise


async def _create(deps: SandboxDeps, rec: SandboxRecord, config: Any,
                  kept: list[SandboxRecord]) -> SandboxRecord:
    lay, sid = deps.layout, rec.id
    network_owed = False  # set when the undo's CNI DEL failed: keep the netns pin and the record

    async def undo_network(net_req: PodNetworkRequest) -> None:
        nonlocal network_owed
        network_owed = True  # until DEL returns: a DEL that fails, times out or is cancelled keeps the pin
        await deps.network.teardown(net_req)
        network_owed = False

    def undo_netns(target: Path) -> None:
        if not network_owed:
            ns.unpin(target)

    async def undo_cgroups() -> None:
        deps.leaving.add(sid)  # until the record goes: no parent may be handed to this pod from now on
        current = deps.store.sandboxes.get(sid, rec)  # it may have been handed a parent meanwhile
        owned = sorted(set(current.cgroups_created) | set(created), key=lambda c: c.count("/"))
        await parents.release(deps, dataclasses.replace(current, cgroups_created=tuple(owned)))

    def undo_record() -> None:
        try:
            _undo_record()
        finally:
            deps.leaving.discard(sid)

    def _undo_record() -> None:
        if not network_owed:
            deps.store.delete_sandbox(sid)
            return
        # Everything else is undone by now: the pod holds its netns pin and its CNI cache entry only.
        kept.append(deps.store.put_sandbox(dataclasses.replace(
            rec, phase=Phase.CREATED, stopped_at=time.time_ns(), ips=(), cgroups_created=(), shm_path="",
            infra_id="", infra_pid=0, ipcns_path="", utsns_path="", userns_path="")))
        log.event(_log, 40, "pod network not released after a failed RunPodSandbox; pod kept NOTREADY "
                  "for RemovePodSandbox", pod=sid, netns=rec.netns_path)

    async with Undo(f"pod {rec.meta.namespace}/{rec.meta.name}") as undo:
        deps.store.put_sandbox(rec)
        undo.push("record", undo_record)
        failpoints.hit("sandbox.record")

        rundir = lay.sandbox_run(sid)
        rundir.mkdir(parents=True, mode=0o755)
        undo.push("run dir", lambda: shutil.rmtree(rundir, ignore_errors=True))
        failpoints.hit("sandbox.rundir")

        created = await asyncio.to_thread(deps.cgroups.ensure, rec.cgroup_parent)
        undo.push("cgroup parent", undo_cgroups)
        # Persisted at once: a daemon killed from here on must know which cgroups were its own.
        rec = deps.store.put_sandbox(dataclasses.replace(rec, cgroups_created=tuple(created)))
        if rec.cgroup_parent in created:  # a pod cgroup kubelet made is kubelet's to size
            limits = resources.pod_limits(config.linux.resources, config.linux.overhead, pod=rec.meta.name,
                                          host=deps.host)
            if limits:
                await asyncio.to_thread(resources.apply, deps, rec, limits)
                rec = deps.store.put_sandbox(dataclasses.replace(rec, resources=resources.record_of(limits)))
        failpoints.hit("sandbox.cgroup")

        req = ns.PinRequest(net=None if rec.network_mode == "node" else lay.netns(sid),
                            ipc=None if rec.ipc_mode == "node" else lay.ipcns(sid),
                            uts=None if rec.network_mode == "node" else lay.utsns(sid),
                            hostname=rec.hostname, sysctls=rec.sysctls,
                            user=lay.userns(sid) if rec.uid_mappings else None,
                            uid_map=policy.map_text(rec.uid_mappings),
                            gid_map=policy.map_text(rec.gid_mappings))
        if req.user is not None:  # pushed first, so unpinned last: it owns the others
            undo.push(f"unpin {req.user}", functools.partial(ns.unpin, req.user))
        if req.net is not None:
            undo.push(f"unpin {req.net}", functools.partial(undo_netns, req.net))
        for target in (req.ipc, req.uts):
            if target is not None:
                undo.push(f"unpin {target}", functools.partial(ns.unpin, target))
        ns.prepare_targets(req)
        await ns.pin(req)
        rec = dataclasses.replace(rec, netns_path=str(req.net or ""), ipcns_path=str(req.ipc or ""),
                                  utsns_path=str(req.uts or ""), userns_path=str(req.user or ""))
        failpoints.hit("sandbox.namespaces")

        write_files(rec, rundir)
        failpoints.hit("sandbox.files")

        if rec.ipc_mode == "node":
            rec = dataclasses.replace(rec, shm_path="/dev/shm")
        else:
            shm = rundir / "shm"
            shm.mkdir(mode=0o755)
            undo.push("shm", lambda: mount.umount_all(shm))
            mount.tmpfs(shm, size=deps.cfg.runtime.shm_size, flags=mount.MS_NOSUID | mount.MS_NODEV
                        | mount.MS_NOEXEC, owner=pod_root(rec))
            rec = dataclasses.replace(rec, shm_path=str(shm))
        failpoints.hit("sandbox.shm")

        # The PID-namespace holder (conmon + runc) and CNI ADD (the plugins) are independent programs that
        # both only need the pinned namespaces: they run side by side, each with its undo registered first
        # (a shared-PID pod pays the longer of the two, not their sum). Under a sandboxed runtime the infra
        # is the pod's sandbox, which may take the pod's interfaces over as it starts (gVisor's netstack):
        # there CNI ADD goes first.
        sandboxed = deps.runc(rec.runtime_handler).sandboxed
        with_infra = rec.pid_mode == "pod" or sandboxed
        steps: list[Coroutine[Any, Any, Any]] = []
        if with_infra:
            undo.push("infra", lambda: infra.remove(deps, sid))
            steps.append(infra.start(deps, rec, config))
        if rec.network_mode != "node":
            net_req = network_request(rec)
            undo.push("network", functools.partial(undo_network, net_req))
            steps.append(deps.network.setup(net_req))
        done = (await _in_order(steps[::-1]))[::-1] if sandboxed else await _together(steps)
        if with_infra:
            rec = dataclasses.replace(rec, infra_id=sid, infra_pid=done.pop(0))
        failpoints.hit("sandbox.infra")

        if rec.network_mode != "node":
            status = done.pop(0)
            rec = dataclasses.replace(rec, ips=tuple(status.ips))
            if status.ips:
                atomic.write_atomic(rundir / "hosts", files.hosts(rec.hostname, status.ips),
                                    owner=pod_root(rec))
        failpoints.hit("sandbox.network")

        undo.push("plugins", functools.partial(deps.hooks.pod, PodStep.REMOVE, rec))
        await deps.hooks.pod(PodStep.RUN, rec)  # still CREATING: not listed, no container may join yet

        rec = deps.store.put_sandbox(dataclasses.replace(rec, phase=Phase.CREATED))
        undo.commit()
    return rec


async def _in_order(steps: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run steps one after the other; when one fails, those not started are closed unrun."""
    out: list[Any] = []
    try:
        for step in steps:
            out.append(await step)
    finally:
        for step in steps[len(out) + 1:]:
            step.close()
    return out


async def _together(steps: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run steps concurrently and return their results in order; when one fails, the others are cancelled
    and awaited (their undos are registered already) before its error is raised as it is."""
    if len(steps) <= 1:
        return [await step for step in steps]
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def write_files(rec: SandboxRecord, rundir: Any) -> None:
    """hostname, hosts and resolv.conf of the pod (host copies for a host-network pod without DNS)."""
    owner = pod_root(rec)
    atomic.write_atomic(rundir / "hostname", rec.hostname + "\n", owner=owner)
    if rec.network_mode == "node":
        atomic.write_atomic(rundir / "hosts", files.host_text(files.HOST_HOSTS), owner=owner)
    else:
        atomic.write_atomic(rundir / "hosts", files.hosts(rec.hostname, ()), owner=owner)
    if rec.dns_servers or rec.dns_searches or rec.dns_options:
        text = files.resolv_conf(rec.dns_servers, rec.dns_searches, rec.dns_options)
    else:
        text = files.host_text(files.HOST_RESOLV_CONF)
    atomic.write_atomic(rundir / "resolv.conf", text, owner=owner)


__all__ = ["create", "initial_record", "network_request", "write_files"]
