"""The one table from crib's errors to gRPC status codes.

Domain code raises errors.CribError subclasses; the interceptor turns them into statuses here, so a
servicer never sets a code itself and the mapping cannot drift between RPCs.
"""

from __future__ import annotations

import errno

import grpc

from crib import errors

CODES: dict[type[errors.CribError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    # A program crib runs failed: the request was well-formed, the node could not carry it out.
    errors.ExternalCommandError: grpc.StatusCode.UNKNOWN,
    errors.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    # What a plugin said is passed on; like containerd, the code does not claim to know why it refused.
    errors.PluginError: grpc.StatusCode.UNKNOWN,
    errors.CribError: grpc.StatusCode.UNKNOWN,
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


def code_for(exc: errors.CribError) -> grpc.StatusCode:
    """The status code of an error: its own class's, else its nearest mapped ancestor's."""
    for cls in type(exc).__mro__:
        if cls in CODES and issubclass(cls, errors.CribError):
            return CODES[cls]
    return grpc.StatusCode.UNKNOWN


__all__ = ["CODES", "DISK_FULL", "code_for", "disk_full"]
