"""Request validation: names, hostnames and NUL bytes are refused naming the field; what critest and
kubelet send is accepted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cri import validate
from crib.errors import InvalidArgument


def _pod(name: str = "web", namespace: str = "default", uid: str = "u-1", hostname: str = "",
         **config: Any) -> api.RunPodSandboxRequest:
    meta = api.PodSandboxMetadata(name=name, namespace=namespace, uid=uid)
    return api.RunPodSandboxRequest(config=api.PodSandboxConfig(metadata=meta, hostname=hostname, **config))


def _container(name: str = "c", **config: Any) -> api.CreateContainerRequest:
    return api.CreateContainerRequest(
        pod_sandbox_id="abc", sandbox_config=api.PodSandboxConfig(),
        config=api.ContainerConfig(metadata=api.ContainerMetadata(name=name),
                                   image=api.ImageSpec(image="busybox"), **config))


@pytest.mark.parametrize("request_", [
    _pod("PodSandbox-with-attributes-0b5d7a1e-4c1f-4f7e-9d59-2c2b0d7e8f00",
         "cri-test-namespace0b5d7a1e-4c1f-4f7e-9d59-2c2b0d7e8f00", "cri-test-uid0b5d7a1e", "test-hostname"),
    _pod("nginx-sandbox", "default", "hdishd83djaidwnduwk28bcsb", log_directory="/var/log/pods/x"),
    _pod("my_pod.v2", hostname="Web-01.example.com"),
    _pod("web", "", ""),
], ids=["critest", "crictl-example", "underscore-dots-uppercase", "no-namespace-uid"])
def test_pods_that_kubelet_critest_and_crictl_send_are_accepted(request_: api.RunPodSandboxRequest) -> None:
    validate.run_pod_sandbox(request_)


@pytest.mark.parametrize(("request_", "needle"), [
    (_pod("web\0"), "config.metadata.name contains a NUL byte"),
    (_pod("../../etc"), "config.metadata.name '../../etc' is not a valid name"),
    (_pod(".hidden"), "config.metadata.name '.hidden' is not a valid name"),
    (_pod("a b"), "config.metadata.name 'a b' is not a valid name"),
    (_pod("x" * 254), "at most 253 characters"),
    (_pod("caf\u00e9"), "config.metadata.name 'caf\u00e9' is not a valid name"),
    (_pod(namespace="a_b"), "namespace 'a_b' is not a valid name: use letters, digits, '-' and"),
    (_pod(uid="a/b"), "config.metadata.uid 'a/b' is not a valid name"),
    (_pod(hostname="\u00e9"), "config.hostname '\u00e9' is not a valid hostname"),
    (_pod(hostname="a" * 65), "64 characters in all"),
    (_pod(hostname="a..b"), "config.hostname 'a..b' is not a valid hostname"),
    (_pod(hostname="under_score"), "is not a valid hostname"),
    (_pod(hostname="-lead"), "is not a valid hostname"),
    (_pod(labels={"k": "v\0"}), "config.labels['k'] contains a NUL byte"),
    (_pod(annotations={"k\0": "v"}), "config.annotations has a key with a NUL byte"),
    (_pod(dns_config=api.DNSConfig(servers=["1.1.1.1", "8.8.8.8\0"])), "dns_config.servers[1] contains"),
    (_pod(log_directory="relative/logs"), "config.log_directory 'relative/logs' must be an absolute path"),
    (_pod(log_directory="/var/log/pods/../../etc"), "must be an absolute path without '..'"),
    (_pod(port_mappings=[api.PortMapping(protocol=7)]), "config.port_mappings[0].protocol 7 is not TCP"),
    (_pod(port_mappings=[api.PortMapping(host_port=65536)]), "port_mappings[0].host_port 65536 is out of"),
    (_pod(port_mappings=[api.PortMapping(container_port=-80)]), "port_mappings[0].container_port -80 is"),
    (_pod(port_mappings=[api.PortMapping(host_ip="::1::")]), "port_mappings[0].host_ip '::1::' is not an IP"),
], ids=["nul", "path", "dot", "space", "long", "non-ascii", "namespace-underscore", "uid-slash",
        "hostname-non-ascii", "hostname-long", "hostname-empty-label", "hostname-underscore", "hostname-dash",
        "label-value-nul", "annotation-key-nul", "dns-server-nul", "log-dir-relative", "log-dir-dotdot",
        "port-protocol", "host-port-range", "container-port-negative", "host-ip"])
def test_bad_pods_are_refused_naming_the_field(request_: api.RunPodSandboxRequest, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate.run_pod_sandbox(request_)
    assert needle in str(info.value)


@pytest.mark.parametrize(("request_", "needle"), [
    (_container("c\0"), "config.metadata.name contains a NUL byte"),
    (_container("../c"), "config.metadata.name '../c' is not a valid name"),
    (_container(args=["sh", "-c\0"]), "config.args[1] contains a NUL byte"),
    (_container(envs=[api.KeyValue(key="A", value=b"x\0y")]), "config.envs[0].value contains a NUL byte"),
    (_container(mounts=[api.Mount(container_path="/d", host_path="/tmp\0")]), "config.mounts[0].host_path"),
    (_container(log_path="../../escape.log"), "must stay inside the pod's log_directory"),
], ids=["nul-name", "path-name", "nul-arg", "nul-env-bytes", "nul-mount", "log-path-escape"])
def test_bad_containers_are_refused_naming_the_field(request_: api.CreateContainerRequest,
                                                     needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate.create_container(request_)
    assert needle in str(info.value)


def test_container_names_critest_uses_are_accepted() -> None:
    validate.create_container(_container("container-with-SupplementalGroupsPolicyMerge-"
                                         "0b5d7a1e-4c1f-4f7e-9d59-2c2b0d7e8f00", log_path="c/0.log"))


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: validate.exec_sync(api.ExecSyncRequest(container_id="c", cmd=["echo", "a\0"])), "cmd[1]"),
    (lambda: validate.exec_sync(api.ExecSyncRequest(container_id="c", cmd=["ls"], timeout=-1)), "negative"),
], ids=["exec-nul", "exec-negative-timeout"])
def test_exec_sync_checks(call: Callable[[], None], needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        call()
    assert needle in str(info.value)
