"""The one table from crib's errors to gRPC status codes.

Domain code raises errors.CribError subclasses; the interceptor turns them into statuses here, so a
servicer never sets a code itself and the mapping cannot drift between RPCs.
"""

from __future__ import annotations

import errno

from crib import errors
from crib.cri.h2 import StatusCode

CODES: dict[type[errors.CribError], StatusCode] = {
    errors.InvalidArgument: StatusCode.INVALID_ARGUMENT,
    errors.NotFound: StatusCode.NOT_FOUND,
    errors.AlreadyExists: StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: StatusCode.DEADLINE_EXCEEDED,
    errors.Unimplemented: StatusCode.UNIMPLEMENTED,
    # A program crib runs failed: the request was well-formed, the node could not carry it out.
    errors.ExternalCommandError: StatusCode.UNKNOWN,
    errors.ConfigError: StatusCode.FAILED_PRECONDITION,
    # What a plugin said is passed on; like containerd, the code does not claim to know why it refused.
    errors.PluginError: StatusCode.UNKNOWN,
    errors.CribError: StatusCode.UNKNOWN,
}


# A full disk can surface as a bare OSError from any write on the node (a layer, a log, a temporary file):
# it is a condition of the node to report, not a bug of crib's, so it is answered RESOURCE_EXHAUSTED.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException) -> bool:
    """Whether exc (or what caused it) is the disk running out of space or quota."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def code_for(exc: errors.CribError) -> StatusCode:
    """The status code of an error: its own class's, else its nearest mapped ancestor's."""
    for cls in type(exc).__mro__:
        if cls in CODES and issubclass(cls, errors.CribError):
            return CODES[cls]
    return StatusCode.UNKNOWN


__all__ = ["CODES", "DISK_FULL", "code_for", "disk_full"]
