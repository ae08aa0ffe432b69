"""Fakes that implement crib's Protocols (a CNI plugin runner, ...), for unit tests only.

They live in the package rather than under tests/ so that their signatures are checked by mypy against the
Protocols they stand in for; the daemon never imports them.
"""
