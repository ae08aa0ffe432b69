"""Where pods and containers keep their files (the directory conventions of the team brief).

    root (persistent):    containers/<id>/{upper,work,volumes/}     sandboxes/<id>/ (unused for now)
    runroot (volatile):   sandboxes/<id>/{hostname,hosts,resolv.conf,shm/}
                          netns/<id>  ipcns/<id>  utsns/<id>        pinned namespaces
                          userns/<id>                               (user-namespaced pods)
                          containers/<id>/{config.json,rootfs/,pidfile,conmon.pid,ctl,exit,oom}
                          exits/<id>                                conmon --exit-dir
                          attach/<id>                               conmon --socket-dir-path symlinks
                          infra/rootfs/                             the PID-namespace holder's root
                          <handler>/                                runc --root per handler
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path
    runroot: Path

    def sandbox_run(self, sid: str) -> Path:
        return self.runroot / "sandboxes" / sid

    def netns(self, sid: str) -> Path:
        return self.runroot / "netns" / sid

    def ipcns(self, sid: str) -> Path:
        return self.runroot / "ipcns" / sid

    def utsns(self, sid: str) -> Path:
        return self.runroot / "utsns" / sid

    def userns(self, sid: str) -> Path:
        return self.runroot / "userns" / sid

    def bundle(self, cid: str) -> Path:
        return self.runroot / "containers" / cid

    def container_data(self, cid: str) -> Path:
        return self.root / "containers" / cid

    @property
    def exits(self) -> Path:
        return self.runroot / "exits"

    @property
    def attach(self) -> Path:
        return self.runroot / "attach"

    @property
    def infra_rootfs(self) -> Path:
        return self.runroot / "infra" / "rootfs"

    def traversable_dirs(self) -> list[Path]:
        """Fixed dirs on the way to a container's root filesystem and its pod's files: mode 0711, so that
        the root of a user-namespaced pod (an unprivileged host uid) can reach them by name (not list)."""
        return [self.runroot, self.runroot / "containers", self.runroot / "sandboxes"]

    def fixed_dirs(self) -> list[Path]:
        """Directories the daemon creates at start-up and keeps."""
        return [self.runroot / "sandboxes", self.runroot / "netns", self.runroot / "ipcns",
                self.runroot / "utsns", self.runroot / "userns", self.runroot / "containers", self.exits,
                self.attach,
                self.root / "containers"]


__all__ = ["Layout"]
