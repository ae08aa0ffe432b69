"""Readings -> ContainerStats and PodSandboxStats: every field the CRI defines that the host can give.

A figure the host cannot give (no such controller, a cgroup already gone) is left unset rather than
reported as zero, as kubelet's summary API distinguishes the two.
"""

from __future__ import annotations

from crib._proto.runtime.v1 import api_pb2 as api
from crib.metrics import ContainerReading, PodReading
from crib.system.cgstats import CgroupStats, Psi
from crib.system.netdev import InterfaceStats


def _u(value: int | None) -> api.UInt64Value | None:
    return None if value is None else api.UInt64Value(value=max(0, value))


def _psi(p: Psi | None) -> api.PsiStats | None:
    if p is None:
        return None
    # CRI counts stalled time in nanoseconds; the kernel's averages (percent) pass through.
    return api.PsiStats(
        Full=api.PsiData(Total=p.full_total_us * 1000, Avg10=p.full_avg10, Avg60=p.full_avg60,
                         Avg300=p.full_avg300),
        Some=api.PsiData(Total=p.some_total_us * 1000, Avg10=p.some_avg10, Avg60=p.some_avg60,
                         Avg300=p.some_avg300))


def _cpu(cg: CgroupStats, nano_cores: int | None) -> api.CpuUsage:
    return api.CpuUsage(timestamp=cg.timestamp_ns, usage_core_nano_seconds=_u(cg.cpu_usage_ns),
                        usage_nano_cores=_u(nano_cores), psi=_psi(cg.psi.get("cpu")))


def _memory(cg: CgroupStats) -> api.MemoryUsage:
    return api.MemoryUsage(timestamp=cg.timestamp_ns, working_set_bytes=_u(cg.memory_working_set),
                           available_bytes=_u(cg.memory_available), usage_bytes=_u(cg.memory_usage),
                           rss_bytes=_u(cg.memory_rss), page_faults=_u(cg.pgfault_hierarchy),
                           major_page_faults=_u(cg.pgmajfault_hierarchy), psi=_psi(cg.psi.get("memory")))


def _io(cg: CgroupStats) -> api.IoUsage | None:
    psi = cg.psi.get("io")
    return None if psi is None else api.IoUsage(timestamp=cg.timestamp_ns, psi=_psi(psi))


def container_stats(r: ContainerReading) -> api.ContainerStats:
    rec, cg, fs = r.container, r.cgroup, r.fs
    out = api.ContainerStats(
        attributes=api.ContainerAttributes(id=rec.id, metadata=api.ContainerMetadata(name=rec.meta_name,
                                                                                     attempt=rec.attempt),
                                           labels=rec.labels, annotations=rec.annotations),
        writable_layer=api.FilesystemUsage(timestamp=fs.timestamp_ns,
                                           fs_id=api.FilesystemIdentifier(mountpoint=fs.mountpoint),
                                           used_bytes=_u(fs.used_bytes), inodes_used=_u(fs.inodes_used)))
    if not cg.exists:
        return out
    out.cpu.CopyFrom(_cpu(cg, r.nano_cores))
    out.memory.CopyFrom(_memory(cg))
    if cg.memory_swap is not None:
        out.swap.CopyFrom(api.SwapUsage(timestamp=cg.timestamp_ns, swap_usage_bytes=_u(cg.memory_swap),
                                        swap_available_bytes=_u(cg.swap_available)))
    io = _io(cg)
    if io is not None:
        out.io.CopyFrom(io)
    return out


def _interface(i: InterfaceStats) -> api.NetworkInterfaceUsage:
    return api.NetworkInterfaceUsage(name=i.name, rx_bytes=_u(i.rx_bytes), rx_errors=_u(i.rx_errors),
                                     tx_bytes=_u(i.tx_bytes), tx_errors=_u(i.tx_errors))


def pod_stats(r: PodReading) -> api.PodSandboxStats:
    rec, cg = r.sandbox, r.cgroup
    meta = rec.meta
    out = api.PodSandboxStats(attributes=api.PodSandboxAttributes(
        id=rec.id, metadata=api.PodSandboxMetadata(name=meta.name, uid=meta.uid, namespace=meta.namespace,
                                                   attempt=meta.attempt),
        labels=rec.labels, annotations=rec.annotations))
    linux = out.linux
    linux.containers.extend(container_stats(c) for c in r.containers)
    if r.interfaces:
        interfaces = [_interface(i) for i in r.interfaces]
        network = linux.network
        network.timestamp = r.network_timestamp_ns
        network.interfaces.extend(interfaces)
        network.default_interface.CopyFrom(next((i for i in interfaces if i.name == "eth0"), interfaces[0]))
    if not cg.exists:
        return out
    linux.cpu.CopyFrom(_cpu(cg, r.nano_cores))
    linux.memory.CopyFrom(_memory(cg))
    linux.process.CopyFrom(api.ProcessUsage(timestamp=cg.timestamp_ns, process_count=_u(len(cg.pids))))
    io = _io(cg)
    if io is not None:
        linux.io.CopyFrom(io)
    return out


__all__ = ["container_stats", "pod_stats"]
