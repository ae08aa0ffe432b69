"""The one error hierarchy of crib.

Domain code raises these; cri/status.py maps each class to a gRPC status code in one table. This module must
not import grpc: the domain stays usable (and testable) without the transport.

Messages follow the house rule: say what failed, for which object, and what to change.
"""

from __future__ import annotations


class CribError(Exception):
    """Base of every error crib raises on purpose; anything else reaching the servicer is a bug."""


class InvalidArgument(CribError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""


class NotFound(CribError):
    """The named object does not exist."""


class AlreadyExists(CribError):
    """An object with this name or id exists already."""


class FailedPrecondition(CribError):
    """The request is valid but the object is in the wrong state for it."""


class Unauthenticated(CribError):
    """A registry wants credentials that were not given."""


class PermissionDenied(CribError):
    """Credentials were given but refused, or policy forbids the operation."""


class ResourceExhausted(CribError):
    """A configured bound was hit (size limits, output caps)."""


class Unavailable(CribError):
    """A dependency (registry, plugin, runtime) is unreachable right now; retrying may work."""


class DeadlineExceeded(CribError):
    """An operation ran past its bound."""


class Unimplemented(CribError):
    """The request asks for something crib does not do (yet)."""


class ExternalCommandError(CribError):
    """An external program (runc, conmon, a CNI plugin, ...) failed.

    The message carries the program's own stderr tail, because that is usually the only place the real
    reason is stated (a missing binary in the image, an unknown user, a bad mount).
    """

    def __init__(self, message: str, *, argv: list[str] | None = None, returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.argv = argv or []
        self.returncode = returncode
        self.stderr = stderr


class PluginError(CribError):
    """A node plugin (NRI) refused or failed a lifecycle step, or two plugins' adjustments conflict.

    The message names the plugin(s); the operation was undone as if it had failed on its own.
    """


class ConfigError(CribError):
    """The configuration cannot be used; raised at start-up, never from a request."""


__all__ = [
    "AlreadyExists",
    "ConfigError",
    "CribError",
    "DeadlineExceeded",
    "ExternalCommandError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PluginError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]
