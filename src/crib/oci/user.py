"""Who a container's process runs as: uid, gid and additional gids from CRI fields and the image.

Design note -- the rules are containerd's (kubelet and critest are written against them):

* The user comes from the first of: run_as_username, run_as_user, the image's USER, "0". A CRI user replaces
  the image's USER entirely, its group part included. run_as_group needs a CRI user (a group for an unknown
  user is refused, as kubelet's validation does).
* A user written as a name must exist in the image's /etc/passwd. A numeric uid need not: an image without
  an entry for it runs it with gid 0 (what `docker run -u 1234` does). A user found in /etc/passwd brings
  its primary gid, unless a group is given ("uid:gid", "name:group", run_as_group); a group written as a
  name must exist in /etc/group.
* Additional gids always hold the primary gid, then the CRI supplemental_groups and, with the Merge policy
  (the default), every /etc/group entry that lists the user by name. Strict skips /etc/group. The list is
  sorted and unique, as containerd writes it.
* ids are 0..2**31-1: runc refuses larger ones.

The /etc files are given as text; nothing here reads the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument

MAX_ID = 2**31 - 1
MERGE = api.SupplementalGroupsPolicy.Merge
STRICT = api.SupplementalGroupsPolicy.Strict


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    """One /etc/passwd line."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """One /etc/group line."""

    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedUser:
    """The process identity written to process.user. name is "" for a uid without a passwd entry."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    name: str = ""


def _fields(text: str, minimum: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "+", "-")):
            continue  # comments and NIS compat lines
        parts = line.split(":")
        if len(parts) >= minimum:
            rows.append(parts)
    return rows


def _as_id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 10 else None


def parse_passwd(text: str) -> tuple[PasswdEntry, ...]:
    """Entries of an /etc/passwd text; malformed lines are skipped, as libc skips them."""
    out = []
    for parts in _fields(text, 4):
        uid, gid = _as_id(parts[2]), _as_id(parts[3])
        if parts[0] and uid is not None and gid is not None:
            out.append(PasswdEntry(parts[0], uid, gid))
    return tuple(out)


def parse_group(text: str) -> tuple[GroupEntry, ...]:
    """Entries of an /etc/group text; malformed lines are skipped."""
    out = []
    for parts in _fields(text, 3):
        gid = _as_id(parts[2])
        if parts[0] and gid is not None:
            members = tuple(m.strip() for m in parts[3].split(",") if m.strip()) if len(parts) > 3 else ()
            out.append(GroupEntry(parts[0], gid, members))
    return tuple(out)


def _numeric(text: str, what: str, container: str) -> int | None:
    """text as an id if it is one; an out-of-range number is an error, not a name."""
    if not text.isdigit():
        return None
    value = int(text)
    if value > MAX_ID:
        raise InvalidArgument(f"container {container!r}: {what} {text} is out of range (0..{MAX_ID})")
    return value


def _check_range(value: int, what: str, container: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"container {container!r}: {what} {value} is out of range (0..{MAX_ID})")
    return value


def resolve_user(
    *,
    container: str,
    run_as_user: int | None = None,
    run_as_username: str = "",
    run_as_group: int | None = None,
    image_user: str = "",
    supplemental_groups: Sequence[int] = (),
    policy: int = MERGE,
    passwd: str = "",
    group: str = "",
) -> ResolvedUser:
    """Resolve the container's user by containerd's rules (see the module note).

    Args:
        container: the container's name, for error messages.
        run_as_user, run_as_username, run_as_group: the CRI security-context fields (None = unset).
        image_user: the image's USER ("", "name", "uid", "name:group", "uid:gid", ...).
        supplemental_groups: LinuxContainerSecurityContext.supplemental_groups.
        policy: SupplementalGroupsPolicy (Merge or Strict).
        passwd, group: the image's /etc/passwd and /etc/group texts ("" if absent).

    Raises:
        InvalidArgument: naming the field to fix: an unknown user or group name, run_as_group without a
            user, an id out of range, a malformed USER, an unknown policy.
    """
    if policy not in (MERGE, STRICT):
        raise InvalidArgument(f"container {container!r}: supplemental_groups_policy {policy} is not "
                              "Merge (0) or Strict (1)")
    users = parse_passwd(passwd)
    if run_as_username or run_as_user is not None:
        if run_as_username:
            if ":" in run_as_username:
                raise InvalidArgument(f"container {container!r}: run_as_username {run_as_username!r} must "
                                      "not contain ':'; set the group with run_as_group")
            user_part, source = run_as_username, "run_as_username"
        else:
            assert run_as_user is not None
            user_part, source = str(_check_range(run_as_user, "run_as_user", container)), "run_as_user"
        group_part = ""
        if run_as_group is not None:
            group_part = str(_check_range(run_as_group, "run_as_group", container))
    else:
        if run_as_group is not None:
            raise InvalidArgument(f"container {container!r}: run_as_group is set without run_as_user or "
                                  "run_as_username; set a user too")
        source = "image USER"
        user_part, group_part = (image_user or "0"), ""
        if ":" in user_part:
            user_part, _, group_part = user_part.partition(":")
            if not user_part or not group_part or ":" in group_part:
                raise InvalidArgument(f"container {container!r}: image USER {image_user!r} is not of the "
                                      "form user[:group]; set run_as_user to override it")

    uid = _numeric(user_part, source, container)
    if uid is not None:
        entry = next((u for u in users if u.uid == uid), None)
    else:
        entry = next((u for u in users if u.name == user_part), None)
        if entry is None:
            where = "the image has no /etc/passwd" if not passwd else "it is not in the image's /etc/passwd"
            raise InvalidArgument(f"container {container!r}: {source} {user_part!r} cannot be resolved: "
                                  f"{where}; use a numeric uid or a user the image defines")
        uid = entry.uid
    gid = entry.gid if entry is not None else 0
    name = entry.name if entry is not None else ""

    groups = parse_group(group)
    if group_part:
        numeric_gid = _numeric(group_part, f"{source} group", container)
        if numeric_gid is None:
            found = next((g for g in groups if g.name == group_part), None)
            if found is None:
                raise InvalidArgument(f"container {container!r}: group {group_part!r} of {source} is not "
                                      "in the image's /etc/group; use a numeric gid or a group the image "
                                      "defines")
            numeric_gid = found.gid
        gid = numeric_gid

    extra = {gid}
    for value in supplemental_groups:
        extra.add(_check_range(value, "supplemental_groups entry", container))
    if policy == MERGE and name:
        extra.update(g.gid for g in groups if name in g.members)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=tuple(sorted(extra)), name=name)


def resolve_container_user(
    sc: api.LinuxContainerSecurityContext, *, container: str, image_user: str, passwd: str, group: str,
) -> ResolvedUser:
    """resolve_user with the fields of a CRI LinuxContainerSecurityContext."""
    return resolve_user(
        container=container,
        run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
        run_as_username=sc.run_as_username,
        run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
        image_user=image_user,
        supplemental_groups=tuple(sc.supplemental_groups),
        policy=sc.supplemental_groups_policy,
        passwd=passwd,
        group=group,
    )


__all__ = [
    "GroupEntry",
    "PasswdEntry",
    "ResolvedUser",
    "parse_group",
    "parse_passwd",
    "resolve_container_user",
    "resolve_user",
]
