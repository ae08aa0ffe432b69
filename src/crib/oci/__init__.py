"""The OCI runtime-spec builder: CRI requests + image config + host facts -> runc's config.json.

Pure code: nothing here reads the host, spawns a process or mounts anything. The lifecycle code gathers the
facts (HostFacts once, the rest per container), calls build_container_spec() / build_infra_spec(), writes the
result to the bundle and runs runc. exec_process() derives the process.json of `runc exec --process` from a
container's spec. The annotation keys written into every spec are in crib.oci.annotations.
"""

from __future__ import annotations

from crib.oci.defaults import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_PATH,
    DEFAULT_READONLY_PATHS,
    capabilities_from_mask,
    default_rlimits,
)
from crib.oci.inputs import ContainerInputs, HostDevice, HostFacts, InfraInputs, Rlimit, SandboxInfo
from crib.oci.mounts import (
    PropagationNeed,
    idmapped_mounts,
    image_volumes_needed,
    is_image_mount,
    mount_propagation_needs,
)
from crib.oci.namespaces import check_user_namespace
from crib.oci.resources import clamp_oom_score_adj, linux_resources
from crib.oci.seccomp import default_template, render_profile
from crib.oci.spec import build_container_spec, build_infra_spec, cgroups_path, exec_process
from crib.oci.user import ResolvedUser, parse_group, parse_passwd, resolve_user

__all__ = [
    "ALL_CAPABILITIES",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_PATH",
    "DEFAULT_READONLY_PATHS",
    "ContainerInputs",
    "HostDevice",
    "HostFacts",
    "InfraInputs",
    "PropagationNeed",
    "ResolvedUser",
    "Rlimit",
    "SandboxInfo",
    "build_container_spec",
    "build_infra_spec",
    "capabilities_from_mask",
    "cgroups_path",
    "check_user_namespace",
    "clamp_oom_score_adj",
    "default_rlimits",
    "default_template",
    "exec_process",
    "idmapped_mounts",
    "image_volumes_needed",
    "is_image_mount",
    "linux_resources",
    "mount_propagation_needs",
    "parse_group",
    "parse_passwd",
    "render_profile",
    "resolve_user",
]
