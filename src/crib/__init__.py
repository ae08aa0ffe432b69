"""crib: a small, readable Kubernetes container runtime.

crib answers the CRI v1 gRPC API and drives runc through conmon, CNI plugins for pod networks and overlayfs
for root filesystems. The package version below is what `Version` reports as runtime_version.
"""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("crib")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
