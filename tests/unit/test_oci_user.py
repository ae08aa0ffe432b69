"""User and group resolution: every form of run_as_* and image USER, both group policies, every error."""

from __future__ import annotations

from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import build_container_spec, parse_group, parse_passwd, resolve_user
from crib.oci.user import MERGE, STRICT, GroupEntry, PasswdEntry
from tests.unit.test_oci_inputs import GROUP, PASSWD, container_config, container_inputs


def test_parse_passwd_skips_comments_and_malformed_lines() -> None:
    entries = parse_passwd(PASSWD + "+nis::::\nbad:x:notanumber:0::/:/bin/sh\n\n")
    assert [e.name for e in entries] == ["root", "daemon", "nobody", "www", "default-user"]
    assert entries[3] == PasswdEntry("www", 33, 33)


def test_parse_group_members() -> None:
    entries = {g.name: g for g in parse_group(GROUP + "short:x\n")}
    assert entries["wheel"] == GroupEntry("wheel", 10, ("root", "www"))
    assert entries["root"].members == ()
    assert "short" not in entries


# (case id, keyword arguments, expected (uid, gid, additional gids, name))
RESOLVED: list[tuple[str, dict[str, Any], tuple[int, int, tuple[int, ...], str]]] = [
    ("nothing-is-root", {}, (0, 0, (0, 10), "root")),
    ("run-as-user-known", {"run_as_user": 33}, (33, 33, (10, 33), "www")),
    ("run-as-user-unknown-gets-gid-0", {"run_as_user": 4321}, (4321, 0, (0,), "")),
    ("run-as-user-zero", {"run_as_user": 0}, (0, 0, (0, 10), "root")),
    ("run-as-username", {"run_as_username": "www"}, (33, 33, (10, 33), "www")),
    ("run-as-username-numeric", {"run_as_username": "33"}, (33, 33, (10, 33), "www")),
    ("username-beats-uid", {"run_as_username": "www", "run_as_user": 1}, (33, 33, (10, 33), "www")),
    ("run-as-group", {"run_as_user": 33, "run_as_group": 7}, (33, 7, (7, 10), "www")),
    ("run-as-group-unknown-user", {"run_as_user": 1001, "run_as_group": 1002}, (1001, 1002, (1002,), "")),
    ("image-user-name", {"image_user": "www"}, (33, 33, (10, 33), "www")),
    ("image-user-uid", {"image_user": "1000"}, (1000, 1000, (1000, 50000), "default-user")),
    ("image-user-uid-gid", {"image_user": "1000:7"}, (1000, 7, (7, 50000), "default-user")),
    ("image-user-name-group", {"image_user": "www:wheel"}, (33, 10, (10,), "www")),
    ("image-user-name-gid", {"image_user": "www:5"}, (33, 5, (5, 10), "www")),
    ("image-user-uid-group", {"image_user": "4321:nogroup"}, (4321, 65534, (65534,), "")),
    ("cri-user-replaces-image-user", {"image_user": "www:wheel", "run_as_user": 1}, (1, 1, (1,), "daemon")),
    ("supplemental-merge", {"run_as_user": 1000, "supplemental_groups": (1234,)},
     (1000, 1000, (1000, 1234, 50000), "default-user")),
    ("supplemental-strict", {"run_as_user": 1000, "supplemental_groups": (1234,), "policy": STRICT},
     (1000, 1000, (1000, 1234), "default-user")),
    ("strict-without-supplemental", {"run_as_user": 0, "policy": STRICT}, (0, 0, (0,), "root")),
    ("supplemental-duplicates-collapse", {"run_as_user": 33, "supplemental_groups": (33, 10, 10)},
     (33, 33, (10, 33), "www")),
    ("no-passwd-numeric", {"run_as_user": 5, "passwd": "", "group": ""}, (5, 0, (0,), "")),
    ("max-uid", {"run_as_user": 2**31 - 1}, (2**31 - 1, 0, (0,), "")),
]


@pytest.mark.parametrize(("kwargs", "expected"), [(k, e) for _, k, e in RESOLVED],
                         ids=[c for c, _, _ in RESOLVED])
def test_resolve_user(kwargs: dict[str, Any], expected: tuple[int, int, tuple[int, ...], str]) -> None:
    args: dict[str, Any] = {"container": "app", "passwd": PASSWD, "group": GROUP, **kwargs}
    user = resolve_user(**args)
    assert (user.uid, user.gid, user.additional_gids, user.name) == expected


ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-username", {"run_as_username": "alice"}, "run_as_username 'alice' cannot be resolved"),
    ("username-without-passwd", {"run_as_username": "alice", "passwd": ""}, "the image has no /etc/passwd"),
    ("username-with-colon", {"run_as_username": "www:wheel"}, "must not contain ':'"),
    ("group-without-user", {"run_as_group": 5}, "run_as_group is set without run_as_user"),
    ("group-without-user-but-image-user", {"run_as_group": 5, "image_user": "www"}, "run_as_group is set"),
    ("negative-uid", {"run_as_user": -1}, "run_as_user -1 is out of range"),
    ("huge-uid", {"run_as_user": 2**31}, "out of range"),
    ("negative-gid", {"run_as_user": 0, "run_as_group": -3}, "run_as_group -3 is out of range"),
    ("negative-supplemental", {"supplemental_groups": (-1,)}, "supplemental_groups entry -1"),
    ("unknown-image-user", {"image_user": "alice"}, "image USER 'alice' cannot be resolved"),
    ("unknown-image-group", {"image_user": "www:staff"}, "group 'staff' of image USER"),
    ("image-user-three-parts", {"image_user": "a:b:c"}, r"not of the form user\[:group\]"),
    ("image-user-empty-group", {"image_user": "www:"}, r"not of the form user\[:group\]"),
    ("image-uid-out-of-range", {"image_user": "99999999999"}, "out of range"),
    ("unknown-policy", {"policy": 7}, "supplemental_groups_policy 7"),
]


@pytest.mark.parametrize(("kwargs", "message"), [(k, m) for _, k, m in ERRORS], ids=[c for c, _, _ in ERRORS])
def test_resolve_user_errors(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"container": "app", "passwd": PASSWD, "group": GROUP, **kwargs}
    with pytest.raises(InvalidArgument, match=message) as info:
        resolve_user(**args)
    assert "container 'app'" in str(info.value)


def test_policy_constants_match_the_cri() -> None:
    assert (api.SupplementalGroupsPolicy.Merge, api.SupplementalGroupsPolicy.Strict) == (MERGE, STRICT)


def test_spec_user_from_security_context_and_image() -> None:
    sc = api.LinuxContainerSecurityContext(run_as_user=api.Int64Value(value=1000), supplemental_groups=[1234])
    spec = build_container_spec(container_inputs(container_config(sc=sc)))
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 1234, 50000]}


def test_spec_user_zero_run_as_user_is_set_not_absent() -> None:
    # Int64Value{0} is "run as root", even if the image says otherwise.
    from crib.state.records import ImageConfig
    sc = api.LinuxContainerSecurityContext(run_as_user=api.Int64Value(value=0))
    spec = build_container_spec(container_inputs(container_config(sc=sc), image=ImageConfig(user="www")))
    assert spec["process"]["user"]["uid"] == 0


def test_spec_unknown_image_user_is_invalid_argument() -> None:
    from crib.state.records import ImageConfig
    with pytest.raises(InvalidArgument, match="image USER 'ghost'"):
        build_container_spec(container_inputs(image=ImageConfig(user="ghost")))
