"""NRI (Node Resource Interface): node plugins that see and adjust pods and containers.

The public surface is the runtime, which the daemon creates when `[nri] enable` is set and hands to the
lifecycles as their hooks (crib.hooks). Importing this package loads only crib.nri.runtime; the
protocol machinery (ttrpc.py framing, mux.py, peer.py, plugins.py registry and ordering, adjust.py merging,
convert.py, cdi.py, launch.py) loads when the first plugin arrives.
"""

from crib.nri.runtime import NRI_VERSION, NodeAccess, NriRuntime

__all__ = ["NRI_VERSION", "NodeAccess", "NriRuntime"]
