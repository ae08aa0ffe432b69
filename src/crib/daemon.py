"""The composition root: config -> components -> restore state -> serve -> shut down.

Start-up guarantees, in order: one daemon per root (a lock file held for the daemon's life), a socket that
is never reachable with looser permissions than 0660 (umask held while it is bound), a stale socket of a
dead daemon replaced, a live one never stolen. Shutdown on SIGTERM/SIGINT stops accepting, lets in-flight
calls finish within a bound, and touches no container: conmon owns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crib import __version__, log, proc
from crib.config import Config
from crib.cri.image_servicer import EXT_SERVICE, ImageExtServicer, ImageServicer, ext_handlers
from crib.cri.runtime_servicer import RuntimeServicer
from crib.cri.server import add_service, build_server
from crib.errors import ConfigError, CribError
from crib.hooks import NO_HOOKS
from crib.images import ImageService
from crib.network import CNIManager
from crib.node import Node, PluginAccess, StreamBackend, build_node
from crib.runtime import Health
from crib.state import Database
from crib.streaming import StreamServer
from crib.system import ns

if TYPE_CHECKING:
    from crib.nri import NriRuntime

_log = log.get(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0
SOCKET_MODE = 0o660


class StartupError(CribError):
    """The daemon cannot start; the message says what to change."""


def acquire_lock(root: Path) -> int:
    """Hold <root>/crib.lock for the daemon's life; a second daemon on the same root fails here.

    flock is released by the kernel when the process dies, so a crashed daemon never blocks the next.
    """
    path = root / "crib.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise StartupError(
                f"another crib daemon (pid {holder}) is already using root {root}; stop it first, "
                f"or give this one its own --root and --runroot"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _socket_is_live(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return False
        return True


def prepare_socket(path: str) -> None:
    """Make room for the listening socket: replace a stale one, refuse to steal a live one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if not os.path.lexists(path):
        return
    if _socket_is_live(path):
        raise StartupError(f"{path} is in use by another process; stop it or choose another --listen")
    if not Path(path).is_socket():
        raise StartupError(f"{path} exists and is not a socket; remove it or choose another --listen")
    os.unlink(path)
    _log.info("replaced stale socket %s", path)


async def serve(cfg: Config) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    proc.watch_children_with_pidfds()
    root, runroot = Path(cfg.root), Path(cfg.runroot)
    for d in (root, runroot):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = acquire_lock(root)
    try:
        await _serve_locked(cfg)
    finally:
        os.close(lock_fd)


async def _serve_locked(cfg: Config) -> None:
    sock = cfg.socket_path
    prepare_socket(sock)
    network = CNIManager(cfg.network, root=cfg.root)
    health = Health(cfg, network)
    db = Database(Path(cfg.root) / "state.db")
    try:
        images = ImageService(cfg, db)
    except ConfigError as exc:
        db.close()
        raise StartupError(str(exc)) from exc
    try:
        ns.start_helper()  # the namespace helper's interpreter starts now, not in the first RunPodSandbox
        await images.start()
        await network.start()  # loads (or writes) the CNI config; not-ready is a state, never a start failure
        try:
            # Pods and containers are restored before serving: creations a crash cut are undone (CNI DEL
            # included, hence after network.start) and exits that happened while down are recorded.
            nri = _nri(cfg)
            node = await build_node(cfg, db, network, images, hooks=nri or NO_HOOKS)
            await _reconcile_network(network, node)
            images.set_users(node.containers)
            try:
                if nri is not None:  # before serving: pre-installed plugins see the first request
                    nri.bind(PluginAccess(node))
                    await nri.start()
                await _serve_with(cfg, health, network, images, node)
            finally:
                if nri is not None:
                    await nri.close()
                await node.close()
        finally:
            await network.stop()
    finally:
        ns.stop_helper()
        await images.close()
        db.close()


def _nri(cfg: Config) -> NriRuntime | None:
    """The NRI runtime when `[nri] enable` is set; when it is not, nothing of crib.nri is even imported."""
    if not cfg.nri.enable:
        return None
    from crib.nri import NriRuntime

    return NriRuntime(cfg.nri)


async def _reconcile_network(network: CNIManager, node: Node) -> None:
    """DEL the cached attachments of pods the restored state no longer has (a crash between a pod's
    removal and its cache entry's, a wiped state.db), then let 1.1.0 plugins GC the rest.

    Only after restore: restore itself tears down the pods it undoes, with their own records, so what is
    left over here truly belongs to nobody. A failure is logged and retried at the next start; it never
    keeps the daemon from serving.
    """
    try:
        failed = await network.reconcile(set(node.store.sandboxes))
    except Exception:
        _log.exception("reconciling the CNI attachments with the pods failed; retried at the next start")
        return
    if failed:
        log.event(_log, 30, "stale network attachments kept for the next start", pods=",".join(failed))


async def _serve_with(cfg: Config, health: Health, network: CNIManager, images: ImageService,
                      node: Node) -> None:
    streams = StreamServer(cfg.stream, StreamBackend(node.containers, node.sandboxes))
    try:
        await streams.start()
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc
    try:
        await _serve_grpc(cfg, health, network, images, node, streams)
    finally:
        # Sessions end (exec'd commands killed, attach and pod sockets closed); containers are untouched.
        await streams.close()


async def _serve_grpc(cfg: Config, health: Health, network: CNIManager, images: ImageService, node: Node,
                      streams: StreamServer) -> None:
    sock = cfg.socket_path
    server = build_server(RuntimeServicer(cfg=cfg, health=health, network=network, sandboxes=node.sandboxes,
                                          containers=node.containers, streams=streams), ImageServicer(images))
    add_service(server, EXT_SERVICE, ext_handlers(ImageExtServicer(images)))
    old_umask = os.umask(0o117)  # the socket is born 0660: no window where others could connect
    try:
        await server.start(sock)
    except OSError as exc:
        raise StartupError(f"cannot listen on {cfg.listen}: {exc}") from exc
    finally:
        os.umask(old_umask)
    os.chmod(sock, SOCKET_MODE)
    try:
        endpoint = await _start_metrics(cfg, node, streams)
    except BaseException:
        await server.stop(grace=0)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _settle_heap()
    log.event(_log, 20, "crib daemon serving", version=__version__, listen=cfg.listen, root=cfg.root,
              runroot=cfg.runroot, pid=os.getpid())
    try:
        await stop.wait()
        log.event(_log, 20, "shutting down", grace_s=SHUTDOWN_GRACE_SECONDS)
        if endpoint is not None:
            await endpoint.stop()
        await server.stop(grace=SHUTDOWN_GRACE_SECONDS)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
    _log.info("crib daemon stopped")


def _settle_heap() -> None:
    """Collect start-up's garbage once, then move every object alive now out of the cyclic collector's
    reach (gc.freeze).

    Why: the modules, descriptors and restored state of a serving daemon live as long as it does, and
    every full collection walked them all again, with the event loop stopped: 60-70 ms measured on the
    test VM under load (a relist or a status call caught behind it waits that long), ~6 ms frozen. Frozen
    objects are still freed by reference counting if they ever go; only what is allocated while serving
    is scanned.
    """
    gc.collect()
    gc.freeze()


async def _start_metrics(cfg: Config, node: Node, streams: StreamServer) -> Any:
    """The Prometheus endpoint when `[metrics] address` is set (None otherwise).

    Imported here, not at the top: prometheus_client is memory an idle daemon without metrics never pays.
    """
    m = cfg.metrics
    if not m.address:
        return None
    from crib.metrics.endpoint import Endpoint, tls_context
    from crib.metrics.scrape import Scraper

    reader = node.containers.deps.sampler.reader
    try:
        scraper = Scraper(pods=lambda: list(node.store.sandboxes.values()),
                          containers=lambda: list(node.store.containers.values()),
                          readings=node.containers.metric_readings if m.container_metrics else None,
                          sessions=streams.session_counts, psi=reader.psi, hugetlb=reader.hugetlb)
        endpoint = Endpoint(m.address, scraper.render, scraper.content_type,
                            tls_context(m.tls_cert, m.tls_key, m.tls_ca))
        await endpoint.start()
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc
    return endpoint


def run(cfg: Config) -> int:
    """Entry point of `crib daemon`: returns the process exit code."""
    try:
        asyncio.run(serve(cfg))
    except StartupError as exc:
        _log.error("cannot start: %s", exc)
        return 1
    return 0


__all__ = ["StartupError", "acquire_lock", "prepare_socket", "run", "serve"]
