"""A pod's record as the spec builder sees it (oci.SandboxInfo): the paths its containers join or mount."""

from __future__ import annotations

from crib.oci import SandboxInfo
from crib.runtime.layout import Layout
from crib.sandbox import policy
from crib.state.records import SandboxRecord


def pod_root(rec: SandboxRecord) -> tuple[int, int] | None:
    """The host uid and gid of a user-namespaced pod's root (who owns its files); None without one."""
    if not rec.uid_mappings:
        return None
    return policy.host_id(rec.uid_mappings, 0), policy.host_id(rec.gid_mappings, 0)


def sandbox_info(layout: Layout, rec: SandboxRecord) -> SandboxInfo:
    rundir = layout.sandbox_run(rec.id)
    return SandboxInfo(
        sandbox_id=rec.id, hostname=rec.hostname, cgroup_parent=rec.cgroup_parent,
        netns_path=rec.netns_path, ipcns_path=rec.ipcns_path, utsns_path=rec.utsns_path,
        pidns_path=f"/proc/{rec.infra_pid}/ns/pid" if rec.infra_pid else "",
        hostname_path=str(rundir / "hostname"), hosts_path=str(rundir / "hosts"),
        resolv_conf_path=str(rundir / "resolv.conf"), shm_path=rec.shm_path, userns_path=rec.userns_path,
        uid_mappings=rec.uid_mappings, gid_mappings=rec.gid_mappings)


__all__ = ["pod_root", "sandbox_info"]
