"""runc and conmon: building their command lines, running them, watching exits."""

from crib.runtime.health import (
    NETWORK_READY,
    RUNTIME_READY,
    Condition,
    Health,
    NetworkStatus,
    runtime_condition,
)

__all__ = ["NETWORK_READY", "RUNTIME_READY", "Condition", "Health", "NetworkStatus", "runtime_condition"]
