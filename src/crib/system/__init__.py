"""The only code that talks to the kernel directly: mounts, namespaces, cgroups, inotify, safe opens.

Everything above goes through these modules (and crib.proc for processes), so the syscalls, their flags
and their failure modes are in one place. Each module states its own design at the top.
"""
