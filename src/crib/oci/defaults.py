"""The defaults every container starts from: mounts, capabilities, masked paths, devices, rlimits.

The values are the ones containerd's CRI plugin and CRI-O use, so a workload sees the same container on crib
as on them: the same 14 capabilities, the same /proc masks, the same tmpfs sizes. Each function returns fresh
objects; callers may change what they get.
"""

from __future__ import annotations

from typing import Any

from crib.oci.inputs import Rlimit

OCI_VERSION = "1.0.2-dev"  # what runc 1.1 writes with `runc spec` and accepts up to

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Every Linux capability by bit number (CAP_LAST_CAP is 40 since Linux 5.9).
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

#: What a sandbox kernel knows (gVisor's table stops at CAP_AUDIT_READ, and runsc refuses a spec naming a
#: later one); a sandboxed handler's "ALL" and privileged containers get these.
SANDBOX_CAPABILITIES: tuple[str, ...] = ALL_CAPABILITIES[:ALL_CAPABILITIES.index("CAP_AUDIT_READ") + 1]

#: The default set of containerd and CRI-O (and Docker): enough for a typical root process in an image
#: (chown files, switch user, bind low ports) without any administrative power over the node.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

#: Paths hidden from non-privileged containers (containerd's list, also kubelet's default ProcMount).
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)

#: Paths made read-only in non-privileged containers.
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

#: RLIMIT_NOFILE containerd's and CRI-O's packaging give containers (systemd LimitNOFILE).
DEFAULT_NOFILE = 1048576


def default_mounts(*, privileged: bool = False) -> list[dict[str, Any]]:
    """The kernel filesystems every container gets, before CRI and pod mounts are laid over them.

    /sys and /sys/fs/cgroup are read-only unless privileged: writing there changes the node, not the
    container. /dev/shm is a private 64 MiB tmpfs here; the spec builder replaces it with the pod's shm when
    the pod has one, so containers of a pod share POSIX shared memory as they share IPC.
    """
    sys_mode = "rw" if privileged else "ro"
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", sys_mode]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", sys_mode]},
    ]


def _char(major: int | None, minor: int | None, access: str = "rwm") -> dict[str, Any]:
    rule: dict[str, Any] = {"allow": True, "type": "c", "access": access}
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    return rule


def default_device_rules() -> list[dict[str, Any]]:
    """Device-cgroup rules of a non-privileged container: deny everything, then allow the standard nodes.

    runc creates /dev/null, zero, full, random, urandom, tty and ptmx itself; these rules let the container
    use them (and its own ptys), and let it mknod any node it cannot then open (what images' package
    scripts expect).
    """
    return [
        {"allow": False, "access": "rwm"},
        _char(None, None, "m"),
        {"allow": True, "type": "b", "access": "m"},
        _char(1, 3),    # /dev/null
        _char(1, 5),    # /dev/zero
        _char(1, 7),    # /dev/full
        _char(1, 8),    # /dev/random
        _char(1, 9),    # /dev/urandom
        _char(5, 0),    # /dev/tty
        _char(5, 1),    # /dev/console
        _char(5, 2),    # /dev/ptmx
        _char(136, None),  # /dev/pts/*
    ]


def allow_all_devices() -> list[dict[str, Any]]:
    """The device-cgroup rule of a privileged container: every device, every access."""
    return [{"allow": True, "access": "rwm"}]


def default_rlimits(nofile_hard_max: int) -> tuple[Rlimit, ...]:
    """RLIMIT_NOFILE as other runtimes' packaging sets it, bounded by what the daemon may grant.

    Without CAP_SYS_RESOURCE runc cannot raise a hard limit above the daemon's own, so the caller passes
    its current hard limit (resource.getrlimit) and gets min(1048576, that) for soft and hard.
    """
    limit = min(DEFAULT_NOFILE, nofile_hard_max)
    return (Rlimit(type="RLIMIT_NOFILE", soft=limit, hard=limit),)


def capabilities_from_mask(mask: int) -> frozenset[str]:
    """Capability names of a /proc/<pid>/status Cap* bit mask (e.g. int("000001fffeffffff", 16))."""
    return frozenset(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)


__all__ = [
    "ALL_CAPABILITIES",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_NOFILE",
    "DEFAULT_PATH",
    "DEFAULT_READONLY_PATHS",
    "OCI_VERSION",
    "allow_all_devices",
    "capabilities_from_mask",
    "default_device_rules",
    "default_mounts",
    "default_rlimits",
]
