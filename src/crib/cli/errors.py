"""The one base of every error the CLI reports as one line and exit status 1 (no traceback).

Kept in its own tiny module so the entry point can catch it without importing what raises it.
"""

from __future__ import annotations


class CliError(Exception):
    """A failure the user can act on; str() is the line printed after `crib: `."""


__all__ = ["CliError"]
