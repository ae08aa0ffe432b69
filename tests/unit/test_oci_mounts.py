"""Mounts (defaults, CRI mounts, pod files, shm, image volumes: order, precedence, propagation), devices."""

from __future__ import annotations

from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import (
    HostDevice,
    PropagationNeed,
    build_container_spec,
    idmapped_mounts,
    image_volumes_needed,
    mount_propagation_needs,
)
from crib.state.records import IDMap, ImageConfig
from tests.unit.test_oci_inputs import (
    assert_runc_valid,
    char_device,
    container_config,
    container_inputs,
    host_facts,
    sandbox_info,
)

PRIVATE = api.MountPropagation.PROPAGATION_PRIVATE
HOST_TO_CONTAINER = api.MountPropagation.PROPAGATION_HOST_TO_CONTAINER
BIDIRECTIONAL = api.MountPropagation.PROPAGATION_BIDIRECTIONAL
DEFAULT_DESTINATIONS = ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]


def _mounts(*mounts: api.Mount, **overrides: Any) -> list[dict[str, Any]]:
    spec = build_container_spec(container_inputs(container_config(mounts=list(mounts)), **overrides))
    assert_runc_valid(spec)
    mounts_out: list[dict[str, Any]] = spec["mounts"]
    return mounts_out


def _by_destination(mounts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {m["destination"]: m for m in mounts}
    assert len(out) == len(mounts), "a destination is mounted twice"
    return out


def test_default_layout_with_pod_files() -> None:
    mounts = _mounts()
    assert [m["destination"] for m in mounts] == [
        *DEFAULT_DESTINATIONS, "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm"]
    by = _by_destination(mounts)
    assert by["/dev/shm"] == {"destination": "/dev/shm", "type": "bind",
                              "source": "/run/crib/sandboxes/sb0123/shm",
                              "options": ["rbind", "rprivate", "rw"]}
    assert by["/etc/hosts"]["options"] == ["rbind", "rprivate", "rw"]


def test_pod_files_read_only_with_read_only_rootfs() -> None:
    sc = api.LinuxContainerSecurityContext(readonly_rootfs=True)
    spec = build_container_spec(container_inputs(container_config(sc=sc)))
    by = _by_destination(spec["mounts"])
    for path in ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
        assert by[path]["options"][-1] == "ro", path
    assert by["/dev/shm"]["options"][-1] == "rw"
    assert spec["root"]["readonly"] is True


def test_no_pod_files_no_shm_gives_private_tmpfs() -> None:
    sandbox = sandbox_info(hostname_path="", hosts_path="", resolv_conf_path="", shm_path="")
    by = _by_destination(_mounts(sandbox=sandbox))
    assert by["/dev/shm"]["type"] == "tmpfs"
    assert not {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"} & set(by)


# (id, propagation, expected option, expected rootfsPropagation)
PROPAGATION = [
    ("private", PRIVATE, "rprivate", None),
    ("host-to-container", HOST_TO_CONTAINER, "rslave", "rslave"),
    ("bidirectional", BIDIRECTIONAL, "rshared", "rshared"),
]


@pytest.mark.parametrize(("propagation", "option", "root"), [row[1:] for row in PROPAGATION],
                         ids=[row[0] for row in PROPAGATION])
def test_propagation(propagation: int, option: str, root: str | None) -> None:
    mount = api.Mount(container_path="/data", host_path="/srv/data", propagation=propagation)
    spec = build_container_spec(container_inputs(container_config(mounts=[mount])))
    assert _by_destination(spec["mounts"])["/data"]["options"] == ["rbind", option, "rw"]
    assert spec["linux"].get("rootfsPropagation") == root
    needs = mount_propagation_needs(spec)
    expected = {"rprivate": (), "rslave": (PropagationNeed(source="/srv/data", destination="/data",
                                                            propagation="slave"),),
                "rshared": (PropagationNeed(source="/srv/data", destination="/data", propagation="shared"),)}
    assert needs == expected[option]


def test_shared_beats_slave_for_the_root() -> None:
    mounts = [api.Mount(container_path="/a", host_path="/a", propagation=HOST_TO_CONTAINER),
              api.Mount(container_path="/b", host_path="/b", propagation=BIDIRECTIONAL)]
    spec = build_container_spec(container_inputs(container_config(mounts=mounts)))
    assert spec["linux"]["rootfsPropagation"] == "rshared"


# (id, readonly, recursive_read_only, rro supported, expected last option or error text)
READ_ONLY = [
    ("rw", False, False, True, "rw"),
    ("ro", True, False, True, "ro"),
    ("rro", True, True, True, "rro"),
    ("rro-unsupported", True, True, False, "recursive read-only mounts are not supported"),
    ("rro-without-readonly", False, True, True, "recursive_read_only needs readonly"),
]


@pytest.mark.parametrize(("readonly", "rro", "supported", "expected"), [row[1:] for row in READ_ONLY],
                         ids=[row[0] for row in READ_ONLY])
def test_read_only_mounts(readonly: bool, rro: bool, supported: bool, expected: str) -> None:
    mount = api.Mount(container_path="/cfg", host_path="/etc/app", readonly=readonly, recursive_read_only=rro)
    inputs = container_inputs(container_config(mounts=[mount]), host=host_facts(rro_supported=supported))
    if " " in expected:
        with pytest.raises(InvalidArgument, match=expected):
            build_container_spec(inputs)
    else:
        assert _by_destination(build_container_spec(inputs)["mounts"])["/cfg"]["options"][-1] == expected


def test_rro_needs_private_propagation() -> None:
    mount = api.Mount(container_path="/cfg", host_path="/etc/app", readonly=True, recursive_read_only=True,
                      propagation=HOST_TO_CONTAINER)
    with pytest.raises(InvalidArgument, match="needs PROPAGATION_PRIVATE"):
        build_container_spec(container_inputs(container_config(mounts=[mount])))


def test_selinux_relabel_is_ignored() -> None:
    mount = api.Mount(container_path="/data", host_path="/srv", selinux_relabel=True)
    assert _by_destination(_mounts(mount))["/data"]["options"] == ["rbind", "rprivate", "rw"]


def test_cri_mounts_replace_pod_files_and_defaults() -> None:
    mounts = [api.Mount(container_path="/etc/hosts", host_path="/var/lib/kubelet/pods/x/etc-hosts"),
              api.Mount(container_path="/dev/shm/", host_path="/srv/shm"),
              api.Mount(container_path="/sys", host_path="/sys", readonly=True)]
    by = _by_destination(_mounts(*mounts))
    assert by["/etc/hosts"]["source"] == "/var/lib/kubelet/pods/x/etc-hosts"
    assert by["/dev/shm"]["source"] == "/srv/shm"
    assert by["/sys"]["type"] == "bind"


def test_cri_dev_mount_drops_every_default_under_dev() -> None:
    by = _by_destination(_mounts(api.Mount(container_path="/dev", host_path="/dev")))
    assert by["/dev"]["type"] == "bind"
    assert not {"/dev/pts", "/dev/mqueue"} & set(by)
    assert by["/dev/shm"]["source"] == "/run/crib/sandboxes/sb0123/shm"  # the pod's shm still goes on top


def test_supplied_mounts_sorted_by_depth_defaults_first() -> None:
    mounts = [api.Mount(container_path="/var/lib/app/cache", host_path="/c"),
              api.Mount(container_path="/var", host_path="/v"),
              api.Mount(container_path="/opt/x", host_path="/o")]
    order = [m["destination"] for m in _mounts(*mounts, sandbox=sandbox_info(
        hostname_path="", hosts_path="", resolv_conf_path="", shm_path=""))]
    assert order == [*DEFAULT_DESTINATIONS[:3], "/dev/shm", *DEFAULT_DESTINATIONS[3:], "/var", "/opt/x",
                     "/var/lib/app/cache"]


def test_paths_are_normalized() -> None:
    by = _by_destination(_mounts(api.Mount(container_path="/data//x/../y/", host_path="/srv//d/")))
    assert by["/data/y"]["source"] == "/srv/d"


@pytest.mark.parametrize(("mount", "error", "message"), [
    (api.Mount(container_path="data", host_path="/srv"), InvalidArgument,
     r"mounts\[0\].container_path 'data'"),
    (api.Mount(container_path="/data", host_path="srv"), InvalidArgument, r"mounts\[0\].host_path 'srv'"),
    (api.Mount(container_path="/data", host_path="/srv", propagation=9), InvalidArgument, "propagation 9"),
    (api.Mount(container_path="/data", host_path="/srv", image=api.ImageSpec(image="busybox"), readonly=True),
     InvalidArgument, "names both an image"),
    (api.Mount(container_path="/data", image=api.ImageSpec(image="busybox")), InvalidArgument,
     "image volumes are read-only: set readonly"),
    (api.Mount(container_path="/data", host_path="/srv", image_sub_path="etc"), InvalidArgument,
     "names no image"),
    (api.Mount(container_path="/data", host_path="/srv",
               uidMappings=[api.IDMapping(host_id=1000, container_id=0, length=1)]), InvalidArgument,
     "needs a pod with its own user namespace"),
    (api.Mount(container_path="/./", host_path="/srv"), InvalidArgument, "over the root filesystem"),
], ids=["relative-container-path", "relative-host-path", "unknown-propagation", "image-and-host-path",
        "image-read-write", "sub-path-without-image", "idmapped", "over-root"])
def test_invalid_cri_mounts(mount: api.Mount, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build_container_spec(container_inputs(container_config(mounts=[mount])))


def test_two_cri_mounts_on_one_path_are_refused() -> None:
    mounts = [api.Mount(container_path="/data", host_path="/a"),
              api.Mount(container_path="/data/", host_path="/b")]
    with pytest.raises(InvalidArgument, match=r"mounts\[1\] mounts over /data"):
        build_container_spec(container_inputs(container_config(mounts=mounts)))


def test_image_volumes() -> None:
    image = ImageConfig(volumes=("/data", "var/cache/", "/covered"))
    config = container_config(mounts=[api.Mount(container_path="/covered", host_path="/srv/covered")])
    assert image_volumes_needed(config, image) == ("/data", "/var/cache")
    dirs = {"/data": "/var/lib/crib/containers/c0ffee/volumes/1",
            "/var/cache": "/var/lib/crib/containers/c0ffee/volumes/2"}
    spec = build_container_spec(container_inputs(config, image=image, volume_dirs=dirs))
    by = _by_destination(spec["mounts"])
    assert by["/data"] == {"destination": "/data", "type": "bind", "source": dirs["/data"],
                           "options": ["rbind", "rprivate", "rw"]}
    assert by["/var/cache"]["source"] == dirs["/var/cache"]
    assert by["/covered"]["source"] == "/srv/covered"


def test_image_volume_covered_by_a_pod_file_is_skipped() -> None:
    spec = build_container_spec(container_inputs(image=ImageConfig(volumes=("/etc/hosts",)),
                                                 volume_dirs={"/etc/hosts": "/v"}))
    assert _by_destination(spec["mounts"])["/etc/hosts"]["source"] == "/run/crib/sandboxes/sb0123/hosts"


def test_image_volume_without_a_dir_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="no directory given for image volume /data"):
        build_container_spec(container_inputs(image=ImageConfig(volumes=("/data",))))


def test_image_mount_binds_the_mounted_image_read_only() -> None:
    mounts = [api.Mount(container_path="/mnt/img/", image=api.ImageSpec(image="sha256:abc"), readonly=True,
                        image_sub_path="etc"),
              api.Mount(container_path="/data", host_path="/srv")]
    source = "/run/crib/containers/c/image-volumes/0/etc"
    spec = build_container_spec(container_inputs(container_config(mounts=mounts), mount_sources={0: source}))
    by = _by_destination(spec["mounts"])
    assert by["/mnt/img"] == {"destination": "/mnt/img", "type": "bind",
                              "source": source,
                              "options": ["rbind", "rprivate", "nosuid", "nodev", "ro"]}
    assert by["/data"]["source"] == "/srv"
    # an image mount covers an image VOLUME at its path, like any CRI mount
    assert image_volumes_needed(container_config(mounts=mounts), ImageConfig(volumes=("/mnt/img",))) == ()


def test_image_mount_without_a_mounted_image_is_a_caller_bug() -> None:
    mount = api.Mount(container_path="/mnt/img", image=api.ImageSpec(image="busybox"), readonly=True)
    with pytest.raises(ValueError, match="no mounted image given"):
        build_container_spec(container_inputs(container_config(mounts=[mount])))


POD_MAP = (IDMap(container_id=0, host_id=100000, length=65536),)
USERNS_POD = sandbox_info(userns_path="/run/crib/userns/sb0123", uid_mappings=POD_MAP, gid_mappings=POD_MAP)


def _mapped(host_id: int = 100000) -> api.Mount:
    maps = [api.IDMapping(host_id=host_id, container_id=0, length=65536)]
    return api.Mount(container_path="/data", host_path="/srv/data", uidMappings=maps, gidMappings=maps)


def test_idmapped_mount_binds_what_the_caller_mapped() -> None:
    config = container_config(mounts=[api.Mount(container_path="/plain", host_path="/srv/plain"), _mapped()])
    assert idmapped_mounts(config, USERNS_POD) == (1,)
    spec = build_container_spec(container_inputs(config, sandbox=USERNS_POD,
                                                 mount_sources={1: "/run/crib/containers/c/idmapped/1"}))
    by = _by_destination(spec["mounts"])
    assert by["/data"]["source"] == "/run/crib/containers/c/idmapped/1"
    assert by["/plain"]["source"] == "/srv/plain"
    with pytest.raises(ValueError, match="no ID-mapped mount given"):
        build_container_spec(container_inputs(config, sandbox=USERNS_POD))


@pytest.mark.parametrize(("mount", "message"), [
    (_mapped(host_id=5000), "differ from the pod's user namespace mappings"),
    (api.Mount(container_path="/img", image=api.ImageSpec(image="busybox"), readonly=True,
               uidMappings=[api.IDMapping(host_id=100000, container_id=0, length=65536)]),
     "an image volume takes no uidMappings"),
], ids=["other-mappings", "image-volume"])
def test_idmapped_mounts_refused(mount: api.Mount, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        idmapped_mounts(container_config(mounts=[mount]), USERNS_POD)


def _device(host_path: str, container_path: str, permissions: str = "rwm") -> api.Device:
    return api.Device(host_path=host_path, container_path=container_path, permissions=permissions)


def test_devices() -> None:
    nodes = {"/dev/fuse": (char_device("/dev/fuse", 10, 229),),
             "/dev/snd": (char_device("/dev/snd/pcm0", 116, 2), char_device("/dev/snd/timer", 116, 33))}
    config = container_config(devices=[_device("/dev/fuse", "/dev/fuse", "rw"),
                                       _device("/dev/snd", "/dev/sound")])
    spec = build_container_spec(container_inputs(config, device_nodes=nodes))
    assert_runc_valid(spec)
    owner = {"fileMode": 0o660, "uid": 0, "gid": 5}
    assert spec["linux"]["devices"] == [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, **owner},
        {"path": "/dev/sound/pcm0", "type": "c", "major": 116, "minor": 2, **owner},
        {"path": "/dev/sound/timer", "type": "c", "major": 116, "minor": 33, **owner},
    ]
    rules = spec["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert rules[-3:] == [{"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
                          {"allow": True, "type": "c", "major": 116, "minor": 2, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 116, "minor": 33, "access": "rwm"}]


def test_device_empty_permissions_mean_rwm() -> None:
    config = container_config(devices=[_device("/dev/fuse", "/dev/fuse", "")])
    nodes = {"/dev/fuse": (char_device("/dev/fuse", 10, 229),)}
    spec = build_container_spec(container_inputs(config, device_nodes=nodes))
    assert spec["linux"]["resources"]["devices"][-1]["access"] == "rwm"


def test_privileged_gets_host_devices_and_cri_devices() -> None:
    sc = api.LinuxContainerSecurityContext(privileged=True)
    from tests.unit.test_oci_inputs import pod_config
    config = container_config(sc=sc, devices=[_device("/dev/fuse", "/dev/myfuse")])
    host = host_facts(host_devices=(char_device("/dev/fuse", 10, 229),
                                    HostDevice(path="/dev/sda", type="b", major=8, minor=0)))
    nodes = {"/dev/fuse": (char_device("/dev/fuse", 10, 229),)}
    spec = build_container_spec(container_inputs(config, sandbox_config=pod_config(privileged=True),
                                                 host=host, device_nodes=nodes))
    assert [d["path"] for d in spec["linux"]["devices"]] == ["/dev/fuse", "/dev/sda", "/dev/myfuse"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_device_node_outside_the_given_directory_is_a_caller_bug() -> None:
    inputs = container_inputs(container_config(devices=[_device("/dev/snd", "/dev/snd")]),
                              device_nodes={"/dev/snd": (char_device("/dev/fuse", 10, 229),)})
    with pytest.raises(ValueError, match="is not under it"):
        build_container_spec(inputs)


@pytest.mark.parametrize(("device", "message"), [
    (_device("/dev/missing", "/dev/missing"), r"devices\[0\].host_path /dev/missing is not a device node"),
    (_device("/dev/fuse", "dev/fuse"), r"devices\[0\].container_path 'dev/fuse' must be an absolute path"),
    (_device("dev/fuse", "/dev/fuse"), r"devices\[0\].host_path 'dev/fuse' must be an absolute path"),
    (_device("/dev/fuse", "/dev/fuse", "rwx"), r"permissions 'rwx'"),
    (_device("/dev/fuse", "/dev/fuse", "rr"), r"permissions 'rr'"),
], ids=["missing", "relative-container-path", "relative-host-path", "bad-letter", "repeated-letter"])
def test_invalid_devices(device: api.Device, message: str) -> None:
    inputs = container_inputs(container_config(devices=[device]),
                              device_nodes={"/dev/fuse": (char_device("/dev/fuse", 10, 229),)})
    with pytest.raises(InvalidArgument, match=message):
        build_container_spec(inputs)


def test_host_device_of_unknown_type_is_a_caller_bug() -> None:
    node = HostDevice(path="/dev/fuse", type="p", major=0, minor=0)
    inputs = container_inputs(container_config(devices=[_device("/dev/fuse", "/dev/fuse")]),
                              device_nodes={"/dev/fuse": (node,)})
    with pytest.raises(ValueError, match="is not \"c\" or \"b\""):
        build_container_spec(inputs)
