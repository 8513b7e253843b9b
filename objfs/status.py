"""``objfs status``: what a running mount is doing, asked of the mount itself over a socket.

Each mount serves its status on a unix socket named after its mount point in the runtime
directory (``$OBJFS_RUNTIME_DIR``, else ``/run/objfs`` for root, else
``$XDG_RUNTIME_DIR/objfs``, else ``/tmp/objfs-UID``): the directory is the user's alone
(0700), the socket 0600, and the server also refuses a peer whose uid (``SO_PEERCRED``) is not
the mount's or root's, so a status (paths of files being written, errors) never reaches
another user. A client connects and reads one JSON document; nothing is sent to the mount.

``collect`` builds the document from the filesystem's ``Stats`` and the store connection's
state, on the trio thread (it reads the inode table); the metrics server calls it there too.
The JSON keys are stable (documented in docs/operations.md); ``format_status`` is the human
form. No secret is in it: server URLs carry no credentials (``connected_server``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import socket
import stat
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from objfs import __version__
from objfs.fs import spool_dir
from objfs.fs.stats import size_text

if TYPE_CHECKING:
    from objfs.fs.core import Filesystem

log = logging.getLogger(__name__)

Status = dict[str, Any]

SOCKET_PATH_MAX = 107
"""Longest unix socket path (sun_path is 108 bytes with its NUL)."""


def runtime_dir() -> Path:
    """Where this user's mounts put their status sockets (see the module docstring)."""
    if explicit := os.environ.get("OBJFS_RUNTIME_DIR"):
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/run/objfs")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "objfs"
    return Path(tempfile.gettempdir()) / f"objfs-{os.geteuid()}"


def socket_path(mountpoint: Path | str, directory: Path | None = None) -> Path:
    """The status socket of ``mountpoint``: its path, readable, plus a hash (unique, short:
    a unix socket path has at most 107 bytes)."""
    # The parent resolved, not the mount point itself: asking a hung mount would hang.
    full = os.path.abspath(mountpoint)
    text = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
    directory = directory or runtime_dir()
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    room = SOCKET_PATH_MAX - len(os.fsencode(directory)) - len(f"/-{digest}.sock")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/"))[-min(48, max(room, 0)) :]
    return directory / (f"{readable.lstrip('_')}-{digest}.sock" if room > 0 else f"{digest}.sock")


# -- the document ----------------------------------------------------------------------------


def collect(fs: Filesystem, connection: Callable[[], dict[str, Any]]) -> Status:
    """The status of the mount ``fs`` (call on the trio thread)."""
    stats = fs.stats
    options = fs.options
    now = time.time()
    used, capacity = stats.cache_bytes()
    lookups = stats.cache_hits + stats.cache_misses
    base = spool_dir.base_for(options)
    retrying = fs.files.pending_uploads()
    return {
        "mountpoint": str(options.mountpoint),
        "pid": os.getpid(),
        "version": __version__,
        "started": round(stats.started, 3),
        "uptime": round(now - stats.started, 3),
        "read_only": options.read_only,
        "buckets": [options.bucket] if options.bucket else sorted(fs.coherence.watches),
        "server": connection(),
        "cache": {
            "used": used,
            "capacity": capacity,
            "hits": stats.cache_hits,
            "misses": stats.cache_misses,
            "hit_ratio": round(stats.cache_hits / lookups, 4) if lookups else None,
        },
        "io": {"bytes_read": stats.bytes_read, "bytes_written": stats.bytes_written},
        "uploads": {
            "in_flight": [
                {
                    "path": u.path,
                    "size": u.size,
                    "done": u.done,
                    "started": round(u.started, 3),
                    "rate": round(u.rate(now), 1),
                }
                for u in stats.uploads()
            ],
            "pending": [
                {"path": path, "size": size}
                for path, size in stats.pending()
                if not any(u.path == path for u in stats.uploads())
                and not any(r[0] == path for r in retrying)
            ],
            "retrying": [
                {"path": path, "size": size, "attempts": attempts, "last_error": error}
                for path, size, attempts, error in retrying
            ],
            "done": stats.uploads_done,
            "failed": stats.uploads_failed,
            "bytes": stats.bytes_uploaded,
        },
        "watch": {
            "events": stats.watch_events,
            "lag": round(stats.watch_lag, 3),
            # A --bucket mount loads its tree after it is ready (coherence.py).
            "loaded": fs.coherence.loading.is_set() and fs.coherence.load_error is None,
            "load_error": None if fs.coherence.load_error is None else str(fs.coherence.load_error),
        },
        "spool": {
            "dir": str(fs.spool_dir),
            "leftovers": [
                {"dir": str(d), "files": files} for d, files in spool_dir.abandoned(base)
            ],
        },
        "errors": list(stats.recent_errors),
    }


def format_status(status: Status) -> str:
    """The human form: a header line, then short aligned lines."""
    lines = [
        f"{status['mountpoint']}  (pid {status['pid']}, up {_duration(status['uptime'])}"
        f"{', read-only' if status['read_only'] else ''})"
    ]

    def row(name: str, text: str) -> None:
        lines.append(f"  {name:<9} {text}")

    server = status["server"]
    state = "connected" if server.get("connected") else "DISCONNECTED"
    reconnects = server.get("reconnects", 0)
    row("server", f"{server.get('url') or '-'} {state}, {reconnects} reconnect(s)")
    if server.get("last_error"):
        row("", f"last connection error: {server['last_error']}")
    row("buckets", ", ".join(status["buckets"]) or "(none loaded yet)")
    cache = status["cache"]
    ratio = cache["hit_ratio"]
    row(
        "cache",
        f"{size_text(cache['used'])} of {size_text(cache['capacity'])}, "
        f"hit ratio {'-' if ratio is None else f'{ratio:.0%}'} "
        f"({cache['hits']} hits, {cache['misses']} misses)",
    )
    io = status["io"]
    row("io", f"{size_text(io['bytes_read'])} read, {size_text(io['bytes_written'])} written")
    up = status["uploads"]
    row(
        "uploads",
        f"{len(up['in_flight'])} in flight, {len(up['pending'])} pending, "
        f"{len(up['retrying'])} to retry, {up['done']} done ({size_text(up['bytes'])}), "
        f"{up['failed']} failed",
    )
    for u in up["in_flight"]:
        share = u["done"] / u["size"] if u["size"] else 1.0
        row(
            "",
            f"{u['path']}: {size_text(u['done'])} of {size_text(u['size'])} ({share:.0%}), "
            f"{size_text(u['rate'])}/s",
        )
    for p in up["pending"]:
        row("", f"{p['path']}: {size_text(p['size'])} not stored yet (open for writing)")
    for r in up["retrying"]:
        row(
            "",
            f"{r['path']}: {size_text(r['size'])} to retry after {r['attempts']} failed "
            f"attempt(s): {r['last_error']}",
        )
    watch = status["watch"]
    row("watch", f"{watch['events']} change(s) applied, lag {watch['lag']:.3f}s")
    if watch.get("load_error"):
        row("", f"the bucket could not be loaded: {watch['load_error']}")
    elif not watch.get("loaded", True):
        row("", "loading the bucket (lookups wait for it)")
    spool = status["spool"]
    row("spool", spool["dir"])
    for left in spool["leftovers"]:
        row("", f"left by a dead mount: {left['dir']} ({left['files']} file(s))")
    if status["errors"]:
        row("errors", status["errors"][-1])
        for line in reversed(status["errors"][-5:-1]):
            row("", line)
    else:
        row("errors", "none")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# -- the server (in the mount) ---------------------------------------------------------------


def _private_dir(directory: Path) -> None:
    """Make ``directory`` (0700) or check that an existing one is ours and closed to others."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(errno.EPERM, "not owned by this user, or writable by others")


def peer_uid(sock: socket.socket | trio.socket.SocketType) -> int:
    """The uid of the process at the other end of a unix socket (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


async def serve(path: Path, document: Callable[[], Status]) -> None:
    """Serve ``document()`` on the unix socket ``path`` until cancelled (then remove it).

    A failure to set it up is logged and the mount goes on without a status socket.
    """
    try:
        _private_dir(path.parent)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a killed mount of this mount point (it was not mounted)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600, never briefly open to others
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old)
        sock.listen(16)
    except OSError as e:
        log.warning("no status socket (objfs status will not see this mount): %s: %s", path, e)
        return
    log.debug("status socket %s", path)
    me = os.geteuid()
    try:
        while True:
            conn, _ = await sock.accept()
            stream = trio.SocketStream(conn)
            try:
                uid = peer_uid(conn)
                if uid not in (me, 0):
                    log.warning("status request from uid %d refused", uid)
                    body = {"error": "permission denied: not the mount's user"}
                else:
                    body = document()
                with trio.move_on_after(10):  # a client that does not read is dropped
                    await stream.send_all(json.dumps(body).encode() + b"\n")
            except (OSError, trio.BrokenResourceError) as e:  # the client went away
                log.debug("status client: %s", e)
            finally:
                await stream.aclose()
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()


# -- the client (objfs status) ---------------------------------------------------------------


class StatusError(Exception):
    """A mount that cannot be asked; the message is one line."""


def query(path: Path, timeout: float = 10.0) -> Status:
    """The status document served on ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            chunks = []
            while data := s.recv(1 << 16):
                chunks.append(data)
        except FileNotFoundError:
            raise StatusError("not an objfs mount of this user (no status socket)") from None
        except ConnectionRefusedError:
            raise StatusError("its mount process is gone (stale status socket)") from None
        except PermissionError:
            raise StatusError("permission denied (the mount belongs to another user)") from None
        except OSError as e:
            raise StatusError(f"cannot ask the mount: {e.strerror or e}") from None
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        raise StatusError("the mount answered something that is not a status") from None
    if not isinstance(doc, dict):
        raise StatusError("the mount answered something that is not a status")
    if "error" in doc:
        raise StatusError(str(doc["error"]))
    return doc


def main(mountpoint: Path | None, *, as_json: bool) -> int:
    """``objfs status [MOUNTPOINT] [--json]``: exit 1 if a mount named cannot be asked."""
    if mountpoint is not None:
        paths = [socket_path(mountpoint)]
    else:
        directory = runtime_dir()
        paths = sorted(directory.glob("*.sock")) if directory.is_dir() else []
    docs: list[Status] = []
    code = 0
    for path in paths:
        try:
            docs.append(query(path))
        except StatusError as e:
            if mountpoint is not None:
                print(f"objfs: {mountpoint}: {e}", file=sys.stderr)
                code = 1
            # else: a socket left by a killed mount; nothing runs there to report on.
    if as_json and mountpoint is not None:
        if docs:
            print(json.dumps(docs[0], indent=2))
    elif as_json:
        print(json.dumps(docs, indent=2))
    elif docs:
        print("\n\n".join(format_status(d) for d in docs))
    elif mountpoint is None:
        print("no objfs mounts of this user are running")
    return code
