"""Capabilities, privileged containers, masked/read-only paths and AppArmor."""

from __future__ import annotations

from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    build_container_spec,
    capabilities_from_mask,
)
from crib.oci.security import apparmor_profile, capabilities
from tests.unit.test_oci_inputs import (
    assert_runc_valid,
    char_device,
    container_config,
    container_inputs,
    host_facts,
    pod_config,
)

ALL = frozenset(ALL_CAPABILITIES)
DEFAULTS = set(DEFAULT_CAPABILITIES)
# This test machine's daemon mask: everything but CAP_SYS_RESOURCE.
NO_SYS_RESOURCE = capabilities_from_mask(int("000001fffeffffff", 16))


def test_capabilities_from_mask() -> None:
    assert ALL - {"CAP_SYS_RESOURCE"} == NO_SYS_RESOURCE
    assert capabilities_from_mask(0) == frozenset()
    assert capabilities_from_mask(1 << 21) == {"CAP_SYS_ADMIN"}


# (id, add, drop, ambient, expected bounding set, expected ambient set)
CAPS: list[tuple[str, list[str], list[str], list[str], set[str], set[str]]] = [
    ("defaults", [], [], [], DEFAULTS, set()),
    ("add-one", ["NET_ADMIN"], [], [], DEFAULTS | {"CAP_NET_ADMIN"}, set()),
    ("add-with-prefix-lowercase", ["cap_net_admin"], [], [], DEFAULTS | {"CAP_NET_ADMIN"}, set()),
    ("drop-one", [], ["NET_RAW"], [], DEFAULTS - {"CAP_NET_RAW"}, set()),
    ("drop-not-held-is-fine", [], ["SYS_ADMIN"], [], DEFAULTS, set()),
    ("add-all", ["ALL"], [], [], set(ALL), set()),
    ("add-all-drop-one", ["ALL"], ["CHOWN"], [], set(ALL) - {"CAP_CHOWN"}, set()),
    ("drop-all", [], ["ALL"], [], set(), set()),
    ("drop-all-add-one", ["NET_BIND_SERVICE"], ["all"], [], {"CAP_NET_BIND_SERVICE"}, set()),
    ("add-and-drop-same-drops", ["NET_ADMIN"], ["NET_ADMIN"], [], DEFAULTS, set()),
    ("ambient", [], [], ["NET_BIND_SERVICE"], DEFAULTS, {"CAP_NET_BIND_SERVICE"}),
    ("ambient-adds-to-bounding", [], ["ALL"], ["SYS_TIME"], {"CAP_SYS_TIME"}, {"CAP_SYS_TIME"}),
    ("ambient-then-dropped", [], ["NET_BIND_SERVICE"], ["NET_BIND_SERVICE"],
     DEFAULTS - {"CAP_NET_BIND_SERVICE"}, set()),
]


@pytest.mark.parametrize(("add", "drop", "ambient", "bounding", "amb"), [row[1:] for row in CAPS],
                         ids=[row[0] for row in CAPS])
def test_capabilities(add: list[str], drop: list[str], ambient: list[str], bounding: set[str],
                      amb: set[str]) -> None:
    caps = api.Capability(add_capabilities=add, drop_capabilities=drop, add_ambient_capabilities=ambient)
    got = capabilities(caps, container="app", privileged=False, available=ALL)
    assert set(got["bounding"]) == bounding
    assert got["effective"] == got["permitted"] == got["bounding"]
    assert set(got["ambient"]) == amb
    assert got["inheritable"] == got["ambient"]  # an ambient capability must be inheritable too
    order = [c for c in ALL_CAPABILITIES if c in bounding]
    assert got["bounding"] == order


def test_capabilities_limited_to_what_the_daemon_holds() -> None:
    got = capabilities(api.Capability(add_capabilities=["ALL"]), container="app", privileged=False,
                       available=NO_SYS_RESOURCE)
    assert "CAP_SYS_RESOURCE" not in got["bounding"]
    assert len(got["bounding"]) == len(ALL) - 1


@pytest.mark.parametrize(("caps", "message"), [
    (api.Capability(add_capabilities=["FLY"]), "add_capabilities names unknown capability 'FLY'"),
    (api.Capability(drop_capabilities=["CAP_NOPE"]), "drop_capabilities names unknown capability"),
    (api.Capability(add_ambient_capabilities=["x"]), "add_ambient_capabilities names unknown"),
    (api.Capability(add_capabilities=["SYS_RESOURCE"]), "CAP_SYS_RESOURCE, which crib itself lacks"),
], ids=["unknown-add", "unknown-drop", "unknown-ambient", "not-held-by-daemon"])
def test_capabilities_invalid(caps: api.Capability, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        capabilities(caps, container="app", privileged=False, available=NO_SYS_RESOURCE)


def _privileged_inputs(**sc_fields: Any) -> Any:
    sc = api.LinuxContainerSecurityContext(privileged=True, **sc_fields)
    host = host_facts(capabilities=NO_SYS_RESOURCE,
                      host_devices=(char_device("/dev/kmsg", 1, 11), char_device("/dev/fuse", 10, 229)))
    return container_inputs(container_config(sc=sc), sandbox_config=pod_config(privileged=True), host=host)


def test_privileged_container() -> None:
    spec = build_container_spec(_privileged_inputs(
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault),
        masked_paths=["/proc/kcore"], readonly_paths=["/proc/sys"],
        capabilities=api.Capability(drop_capabilities=["SYS_BOOT"])))
    assert_runc_valid(spec)
    assert set(spec["process"]["capabilities"]["bounding"]) == NO_SYS_RESOURCE - {"CAP_SYS_BOOT"}
    linux = spec["linux"]
    assert linux["maskedPaths"] == []
    assert linux["readonlyPaths"] == []
    assert "seccomp" not in linux
    assert "apparmorProfile" not in spec["process"]
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert [d["path"] for d in linux["devices"]] == ["/dev/kmsg", "/dev/fuse"]
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert "rw" in mounts["/sys"]["options"]
    assert "ro" not in mounts["/sys"]["options"]
    assert "rw" in mounts["/sys/fs/cgroup"]["options"]


def test_privileged_container_needs_privileged_pod() -> None:
    config = container_config(sc=api.LinuxContainerSecurityContext(privileged=True))
    with pytest.raises(InvalidArgument, match="privileged containers need a privileged pod"):
        build_container_spec(container_inputs(config))


def test_non_privileged_defaults() -> None:
    spec = build_container_spec(container_inputs())
    assert set(spec["process"]["capabilities"]["bounding"]) == DEFAULTS
    assert spec["process"]["noNewPrivileges"] is False
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert "ro" in mounts["/sys"]["options"]
    assert "ro" in mounts["/sys/fs/cgroup"]["options"]
    rules = spec["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in rules


@pytest.mark.parametrize("no_new_privs", [True, False], ids=["nnp", "no-nnp"])
def test_no_new_privs(no_new_privs: bool) -> None:
    config = container_config(sc=api.LinuxContainerSecurityContext(no_new_privs=no_new_privs))
    assert build_container_spec(container_inputs(config))["process"]["noNewPrivileges"] is no_new_privs


# (id, CRI masked, CRI readonly, expected masked, expected readonly)
PATHS = [
    ("defaults-when-empty", [], [], list(DEFAULT_MASKED_PATHS), list(DEFAULT_READONLY_PATHS)),
    ("cri-masked-replaces", ["/bin/ls"], [], ["/bin/ls"], list(DEFAULT_READONLY_PATHS)),
    ("cri-readonly-replaces", [], ["/tmp"], list(DEFAULT_MASKED_PATHS), ["/tmp"]),
    ("both", ["/a", "/b"], ["/c"], ["/a", "/b"], ["/c"]),
]


@pytest.mark.parametrize(("masked", "readonly", "want_masked", "want_readonly"), [row[1:] for row in PATHS],
                         ids=[row[0] for row in PATHS])
def test_masked_and_readonly_paths(masked: list[str], readonly: list[str], want_masked: list[str],
                                   want_readonly: list[str]) -> None:
    sc = api.LinuxContainerSecurityContext(masked_paths=masked, readonly_paths=readonly)
    linux = build_container_spec(container_inputs(container_config(sc=sc)))["linux"]
    assert (linux["maskedPaths"], linux["readonlyPaths"]) == (want_masked, want_readonly)


def test_masked_path_must_be_absolute() -> None:
    sc = api.LinuxContainerSecurityContext(masked_paths=["proc/kcore"])
    with pytest.raises(InvalidArgument, match="masked_paths entry 'proc/kcore'"):
        build_container_spec(container_inputs(container_config(sc=sc)))


def _apparmor(sc: api.LinuxContainerSecurityContext, *, enabled: bool, privileged: bool = False,
              loaded: frozenset[str] | None = None) -> str:
    return apparmor_profile(sc, container="app", privileged=privileged, enabled=enabled,
                            default_profile="crib-default" if enabled else "", loaded=loaded)


def _aa(kind: int, ref: str = "") -> api.LinuxContainerSecurityContext:
    profile = api.SecurityProfile(profile_type=kind, localhost_ref=ref)
    return api.LinuxContainerSecurityContext(apparmor=profile)


RD, UNC, LOCAL = (api.SecurityProfile.RuntimeDefault, api.SecurityProfile.Unconfined,
                  api.SecurityProfile.Localhost)

# (id, security context, host has AppArmor, expected profile)
APPARMOR = [
    ("unset-disabled", api.LinuxContainerSecurityContext(), False, ""),
    ("runtime-default-disabled-quietly-none", _aa(RD), False, ""),
    ("unconfined-disabled", _aa(UNC), False, ""),
    ("unset-enabled-gets-default", api.LinuxContainerSecurityContext(), True, "crib-default"),
    ("runtime-default-enabled", _aa(RD), True, "crib-default"),
    ("unconfined-enabled", _aa(UNC), True, ""),
    ("localhost-enabled", _aa(LOCAL, "my-profile"), True, "my-profile"),
    ("localhost-prefix-trimmed", _aa(LOCAL, "localhost/my-profile"), True, "my-profile"),
    ("deprecated-localhost", api.LinuxContainerSecurityContext(apparmor_profile="localhost/p2"), True, "p2"),
    ("deprecated-runtime-default", api.LinuxContainerSecurityContext(apparmor_profile="runtime/default"),
     True, "crib-default"),
    ("deprecated-unconfined", api.LinuxContainerSecurityContext(apparmor_profile="unconfined"), True, ""),
    ("field-beats-deprecated",
     api.LinuxContainerSecurityContext(apparmor=api.SecurityProfile(profile_type=UNC),
                                       apparmor_profile="localhost/p2"), True, ""),
]


@pytest.mark.parametrize(("sc", "enabled", "expected"), [row[1:] for row in APPARMOR],
                         ids=[row[0] for row in APPARMOR])
def test_apparmor(sc: api.LinuxContainerSecurityContext, enabled: bool, expected: str) -> None:
    assert _apparmor(sc, enabled=enabled) == expected


def test_apparmor_privileged_never_confined() -> None:
    assert _apparmor(_aa(LOCAL, "p"), enabled=True, privileged=True) == ""
    assert _apparmor(_aa(LOCAL, "p"), enabled=False, privileged=True) == ""


@pytest.mark.parametrize(("sc", "enabled", "loaded", "message"), [
    (_aa(LOCAL, "p"), False, None, "AppArmor is not enabled on this host"),
    (api.LinuxContainerSecurityContext(apparmor_profile="localhost/p"), False, None,
     "AppArmor is not enabled"),
    (_aa(LOCAL, "p"), True, frozenset({"other"}), "AppArmor profile 'p' is not loaded"),
    (_aa(LOCAL), True, None, "needs a localhost_ref"),
    (_aa(RD, "p"), True, None, "localhost_ref is only valid with profile_type Localhost"),
    (api.LinuxContainerSecurityContext(apparmor_profile="bogus"), True, None, "apparmor_profile 'bogus'"),
], ids=["localhost-disabled", "deprecated-localhost-disabled", "not-loaded", "no-ref", "ref-on-default",
        "bad-deprecated-string"])
def test_apparmor_invalid(sc: api.LinuxContainerSecurityContext, enabled: bool, loaded: frozenset[str] | None,
                          message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _apparmor(sc, enabled=enabled, loaded=loaded)


def test_apparmor_in_spec() -> None:
    spec = build_container_spec(container_inputs(
        container_config(sc=_aa(LOCAL, "p")),
        host=host_facts(apparmor_enabled=True, apparmor_profiles=frozenset({"p"}))))
    assert spec["process"]["apparmorProfile"] == "p"
    with pytest.raises(InvalidArgument, match="container 'app': AppArmor is not enabled"):
        build_container_spec(container_inputs(container_config(sc=_aa(LOCAL, "p"))))
