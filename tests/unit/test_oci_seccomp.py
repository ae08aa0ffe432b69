"""Seccomp: profile selection (field, deprecated strings, privileged, host support) and template rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument, NotFound
from crib.oci import DEFAULT_CAPABILITIES, build_container_spec, default_template, render_profile
from crib.oci.seccomp import container_seccomp
from tests.unit.test_oci_inputs import container_config, container_inputs, host_facts, pod_config

RD, UNC, LOCAL = (api.SecurityProfile.RuntimeDefault, api.SecurityProfile.Unconfined,
                  api.SecurityProfile.Localhost)
CLONE_NAMESPACE_FLAGS = 0x7E020000
BLOCK_CHMOD = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}


def _loader(profiles: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    def load(ref: str) -> dict[str, Any]:
        if ref not in profiles:
            raise NotFound(f"seccomp profile {ref} not found")
        return profiles[ref]
    return load


def _sp(kind: int, ref: str = "") -> api.LinuxContainerSecurityContext:
    profile = api.SecurityProfile(profile_type=kind, localhost_ref=ref)
    return api.LinuxContainerSecurityContext(seccomp=profile)


def _select(sc: api.LinuxContainerSecurityContext, *, privileged: bool = False, enabled: bool = True,
            caps: tuple[str, ...] = DEFAULT_CAPABILITIES) -> dict[str, Any] | None:
    return container_seccomp(sc, container="app", privileged=privileged, capabilities=caps, arch="amd64",
                             seccomp_enabled=enabled,
                             load_localhost=_loader({"/var/lib/kubelet/seccomp/chmod.json": BLOCK_CHMOD}))


def _allowed(profile: dict[str, Any]) -> set[str]:
    return {n for call in profile["syscalls"] if call["action"] == "SCMP_ACT_ALLOW" and not call.get("args")
            for n in call["names"]}


# (id, security context, expected: "none" | "default" | "chmod")
SELECT = [
    ("nil-profile-is-unconfined", api.LinuxContainerSecurityContext(), "none"),
    ("runtime-default", _sp(RD), "default"),
    ("unconfined", _sp(UNC), "none"),
    ("localhost", _sp(LOCAL, "/var/lib/kubelet/seccomp/chmod.json"), "chmod"),
    ("localhost-with-prefix", _sp(LOCAL, "localhost//var/lib/kubelet/seccomp/chmod.json"), "chmod"),
    ("deprecated-runtime-default", api.LinuxContainerSecurityContext(seccomp_profile_path="runtime/default"),
     "default"),
    ("deprecated-docker-default", api.LinuxContainerSecurityContext(seccomp_profile_path="docker/default"),
     "default"),
    ("deprecated-unconfined", api.LinuxContainerSecurityContext(seccomp_profile_path="unconfined"), "none"),
    ("deprecated-localhost", api.LinuxContainerSecurityContext(
        seccomp_profile_path="localhost//var/lib/kubelet/seccomp/chmod.json"), "chmod"),
    ("field-beats-deprecated", api.LinuxContainerSecurityContext(
        seccomp=api.SecurityProfile(profile_type=UNC), seccomp_profile_path="runtime/default"), "none"),
]


@pytest.mark.parametrize(("sc", "expected"), [row[1:] for row in SELECT], ids=[row[0] for row in SELECT])
def test_profile_selection(sc: api.LinuxContainerSecurityContext, expected: str) -> None:
    profile = _select(sc)
    if expected == "none":
        assert profile is None
    elif expected == "default":
        assert profile is not None
        assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
        assert "read" in _allowed(profile)
    else:
        assert profile == {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": BLOCK_CHMOD["syscalls"]}


@pytest.mark.parametrize("sc", [_sp(RD), _sp(LOCAL, "/var/lib/kubelet/seccomp/chmod.json"), _sp(UNC)],
                         ids=["runtime-default", "localhost", "unconfined"])
def test_privileged_has_no_seccomp(sc: api.LinuxContainerSecurityContext) -> None:
    assert _select(sc, privileged=True) is None


@pytest.mark.parametrize(("sc", "error", "message"), [
    (_sp(RD), InvalidArgument, "seccomp is not supported on this host"),  # the only one on a host without it
    (_sp(LOCAL), InvalidArgument, "needs a localhost_ref"),
    (_sp(RD, "/x.json"), InvalidArgument, "localhost_ref is only valid with profile_type Localhost"),
    (_sp(LOCAL, "/missing.json"), NotFound, "/missing.json not found"),
    (api.LinuxContainerSecurityContext(seccomp_profile_path="/abs/path.json"), InvalidArgument,
     "seccomp_profile_path '/abs/path.json' is not one of"),
    (api.LinuxContainerSecurityContext(seccomp_profile_path="localhost/"), InvalidArgument, "is not one of"),
], ids=["unsupported-host", "localhost-without-ref", "ref-on-runtime-default", "loader-error-passes-through",
        "deprecated-bad-string", "deprecated-empty-localhost"])
def test_profile_selection_errors(sc: api.LinuxContainerSecurityContext, error: type[Exception],
                                  message: str) -> None:
    with pytest.raises(error, match=message):
        _select(sc, enabled="not supported" not in message)


def test_unconfined_accepted_on_host_without_seccomp() -> None:
    assert _select(_sp(UNC), enabled=False) is None
    assert _select(api.LinuxContainerSecurityContext(), enabled=False) is None


def test_default_profile_facts() -> None:
    profile = _select(_sp(RD))
    assert profile is not None
    allowed = _allowed(profile)
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert profile["defaultErrnoRet"] == 1
    for name in ("read", "write", "execve", "futex", "epoll_wait", "openat", "ptrace", "arch_prctl",
                 "chroot"):
        assert name in allowed, name
    for name in ("mount", "sethostname", "setns", "unshare", "reboot", "init_module", "kexec_load", "bpf",
                 "keyctl", "add_key", "userfaultfd", "open_by_handle_at", "clock_settime", "acct", "swapon",
                 "set_tls", "clone", "clone3", "socket", "personality"):
        assert name not in allowed, name
    rules = {(c["names"][0], c["action"]): c for c in profile["syscalls"]
             if c.get("args") or c.get("errnoRet")}
    clone = rules[("clone", "SCMP_ACT_ALLOW")]["args"]
    assert clone == [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    assert rules[("clone3", "SCMP_ACT_ERRNO")]["errnoRet"] == 38
    personalities = sorted(c["args"][0]["value"] for c in profile["syscalls"]
                           if c["names"] == ["personality"])
    assert personalities == [0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]
    sockets = sorted((c["args"][0]["op"], c["args"][0]["value"]) for c in profile["syscalls"]
                     if c["names"] == ["socket"])
    assert sockets == [("SCMP_CMP_EQ", 39), ("SCMP_CMP_GT", 40), ("SCMP_CMP_LT", 38)]
    for call in profile["syscalls"]:
        assert set(call) <= {"names", "action", "args", "errnoRet"}, call


@pytest.mark.parametrize(("cap", "unlocked"), [
    ("CAP_SYS_ADMIN", {"mount", "umount2", "sethostname", "setns", "unshare", "clone", "clone3", "bpf"}),
    ("CAP_SYS_BOOT", {"reboot"}),
    ("CAP_SYS_MODULE", {"init_module", "finit_module", "delete_module"}),
    ("CAP_SYS_PTRACE", {"kcmp", "pidfd_getfd", "process_madvise"}),
    ("CAP_SYS_TIME", {"settimeofday", "clock_settime"}),
    ("CAP_DAC_READ_SEARCH", {"open_by_handle_at"}),
    ("CAP_SYS_NICE", {"mbind", "set_mempolicy"}),
    ("CAP_SYS_RAWIO", {"iopl", "ioperm"}),
    ("CAP_SYS_PACCT", {"acct"}),
    ("CAP_SYS_TTY_CONFIG", {"vhangup"}),
    ("CAP_SYSLOG", {"syslog"}),
    ("CAP_BPF", {"bpf"}),
    ("CAP_PERFMON", {"perf_event_open"}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_capability_gated_syscalls(cap: str, unlocked: set[str]) -> None:
    without = render_profile(default_template(), capabilities=DEFAULT_CAPABILITIES, arch="amd64")
    with_cap = render_profile(default_template(), capabilities=(*DEFAULT_CAPABILITIES, cap), arch="x86_64")
    assert not unlocked & _allowed(without)
    assert unlocked <= _allowed(with_cap)


def test_sys_admin_drops_the_clone_restrictions() -> None:
    profile = render_profile(default_template(), capabilities=("CAP_SYS_ADMIN",), arch="amd64")
    assert not [c for c in profile["syscalls"] if c["names"] in (["clone"], ["clone3"]) and
                (c.get("args") or c["action"] != "SCMP_ACT_ALLOW")]


@pytest.mark.parametrize(("arch", "architectures", "present", "absent"), [
    ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], {"arch_prctl", "modify_ldt"},
     {"set_tls"}),
    ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], {"set_tls", "cacheflush"}, {"arch_prctl"}),
    ("riscv64", None, set(), {"arch_prctl", "set_tls"}),
], ids=["x86_64", "aarch64", "unmapped-arch"])
def test_architectures(arch: str, architectures: list[str] | None, present: set[str],
                       absent: set[str]) -> None:
    profile = render_profile(default_template(), capabilities=DEFAULT_CAPABILITIES, arch=arch)
    assert profile.get("architectures") == architectures
    assert present <= _allowed(profile)
    assert not absent & _allowed(profile)


def test_template_is_well_formed() -> None:
    template = default_template()
    always = template["syscalls"][0]
    assert always["action"] == "SCMP_ACT_ALLOW"
    assert "includes" not in always
    assert "excludes" not in always
    assert len(always["names"]) == len(set(always["names"])) > 300
    assert always["names"] == sorted(always["names"])
    for call in template["syscalls"]:
        assert call["action"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO")
        assert call["names"]
        assert all(isinstance(n, str) and n for n in call["names"])
    template["syscalls"].clear()
    assert default_template()["syscalls"], "default_template must hand out copies"


def test_render_docker_format_localhost_profile() -> None:
    docker_format = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {"name": "read", "action": "SCMP_ACT_ALLOW", "args": []},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW", "comment": "dropped",
             "excludes": {"arches": ["arm64"]}},
        ],
    }
    profile = render_profile(docker_format, capabilities=(), arch="amd64")
    assert profile == {"defaultAction": "SCMP_ACT_ERRNO",
                       "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                       "syscalls": [{"action": "SCMP_ACT_ALLOW", "names": ["read"]},
                                    {"action": "SCMP_ACT_ALLOW", "names": ["write"]}]}


@pytest.mark.parametrize("profile", [
    [], {"syscalls": []}, {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {"names": []}},
    {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": ["read"]},
], ids=["not-an-object", "no-default-action", "syscalls-not-a-list", "syscall-not-an-object"])
def test_malformed_localhost_profile(profile: Any) -> None:
    sc = _sp(LOCAL, "/bad.json")
    with pytest.raises(InvalidArgument, match=r"container 'app': seccomp profile /bad\.json"):
        container_seccomp(sc, container="app", privileged=False, capabilities=(), arch="amd64",
                          seccomp_enabled=True, load_localhost=lambda ref: profile)


def test_spec_seccomp_follows_the_container_capabilities() -> None:
    sc = _sp(RD)
    sc.capabilities.add_capabilities.append("SYS_ADMIN")
    spec = build_container_spec(container_inputs(container_config(sc=sc)))
    assert "mount" in _allowed(spec["linux"]["seccomp"])
    spec = build_container_spec(container_inputs(container_config(sc=_sp(RD))))
    assert "mount" not in _allowed(spec["linux"]["seccomp"])


def test_spec_localhost_through_the_inputs_loader() -> None:
    inputs = container_inputs(container_config(sc=_sp(LOCAL, "/p.json")),
                              load_localhost=_loader({"/p.json": BLOCK_CHMOD}))
    assert build_container_spec(inputs)["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"


def test_spec_privileged_pod_ignores_a_blocking_profile() -> None:
    sc = _sp(LOCAL, "/p.json")
    sc.privileged = True
    inputs = container_inputs(container_config(sc=sc), sandbox_config=pod_config(privileged=True),
                              host=host_facts(), load_localhost=_loader({}))
    assert "seccomp" not in build_container_spec(inputs)["linux"]
