"""Persistent state: SQLite (WAL) with crib's own frozen records, written atomically."""

from crib.state.codec import decode, encode
from crib.state.db import Database

__all__ = ["Database", "decode", "encode"]
