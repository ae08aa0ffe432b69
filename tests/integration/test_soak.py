"""The chaos soak, short: one minute of churning pods under random faults, with every invariant checked.

The full run is `python -m bench soak` (10 minutes by default; see bench/soak). This one keeps the same
client, injector and checks, with fewer pods and faults more often, and must end with no violation.
"""

from __future__ import annotations

import os

from bench.soak import Settings, print_report, run

MINUTES = float(os.environ.get("CRIB_SOAK_MINUTES", "1"))


def test_one_minute_of_chaos_breaks_no_invariant() -> None:
    report = run(Settings(minutes=MINUTES, pods=6, workers=2, fault_interval=(2.0, 5.0), churn_after=20.0,
                          check_every=10.0, drain_seconds=120.0))
    print_report(report)
    assert report["violations"] == [], "\n".join(report["violations"])
    assert sum(n for kind, n in report["faults"].items() if "no target" not in kind) >= 3
    assert report["codes"].get("OK", 0) > 100
