"""Where a mount keeps its write spool files, and how a later mount knows it is gone.

Each mount spools into a directory of its own, ``mount-<pid>-<random>`` under the spool base
(``--spool-dir``, default ``DATA_DIR/spool``: on disk, not in a tmpfs that a reboot empties).
A clean unmount removes it; an unmount with uploads that failed keeps it, with their data,
and says so; a mount that is killed or whose machine goes down leaves it as it was. The next
mount stores what such directories hold (``recovery``).

A directory's owner is alive while it holds an exclusive ``flock`` on the directory's
``lock`` file (taken at ``create``, released by the kernel however the process ends), so a
pid reused after a reboot cannot make a dead mount look alive. ``owner.json`` says which
store the mount wrote to (``origin``), so its data is only ever stored through a mount of
the same store. A directory without a lock file (made by an older objfs, or being made right
now) is judged by its pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from objfs.fs.spool_record import boot_id
from objfs.options import MountOptions

log = logging.getLogger(__name__)

PREFIX = "mount-"
LOCK = "lock"
OWNER = "owner.json"
SPOOL_FILES = "objfs-*.spool"
"""The spool files in a directory (``spool`` names them; sidecars and the lock are not)."""

_locks: dict[Path, int] = {}
"""Lock file descriptors this process holds, by directory (closed by ``remove``)."""


def base_for(options: MountOptions) -> Path:
    """The spool base of a mount: ``--spool-dir``, else ``DATA_DIR/spool``."""
    if options.spool_dir is not None:
        return Path(options.spool_dir)
    return options.connect.data_dir / "spool"


def origin_of(options: MountOptions) -> str:
    """Which store a mount writes to: its servers, or its embedded server's data dir."""
    c = options.connect
    if c.servers:
        return ",".join(sorted(c.servers))
    return f"embedded:{os.path.realpath(c.data_dir)}"


def create(base: Path, origin: str = "") -> Path:
    """A new spool directory for this mount under ``base`` (made if missing), locked."""
    base.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # new and ours: never blocks
    _locks[directory] = fd
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": boot_id()}
    (directory / OWNER).write_text(json.dumps({**owner, "origin": origin}))
    return directory


def remove(directory: Path) -> None:
    """Remove a spool directory (after a clean unmount, or once recovered)."""
    shutil.rmtree(directory, ignore_errors=True)
    release(directory)


def release(directory: Path) -> None:
    """Give up this process's lock on ``directory`` (kept or removed)."""
    fd = _locks.pop(directory, None)
    if fd is not None:
        os.close(fd)


def origin(directory: Path) -> str | None:
    """The store a spool directory's mount wrote to (None: not recorded)."""
    try:
        return str(json.loads((directory / OWNER).read_text())["origin"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def claimed(base: Path, own: Path | None = None) -> Iterator[list[Path]]:
    """Spool directories under ``base`` of mounts no longer running, locked by this process
    for the ``with`` block (another mount starting at once skips them)."""
    found: list[Path] = []
    try:
        for entry in leftovers(base):
            if entry == own:
                continue
            lock = entry / LOCK
            if not lock.exists():
                found.append(entry)  # judged dead by its pid (``leftovers``)
                continue
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its mount is alive (or another one is recovering it)
                continue
            _locks[entry] = fd
            found.append(entry)
        yield found
    finally:
        for entry in found:
            release(entry)


def leftovers(base: Path) -> list[Path]:
    """Spool directories under ``base`` whose mount may be gone (not this process's).

    A directory with a lock file is listed whatever its pid says (``claimed`` takes the lock
    to know); one without is listed when its pid is not running.
    """
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in sorted(base.iterdir()):
            pid = _pid_of(entry.name)
            if pid is None or not entry.is_dir() or entry in _locks:
                continue
            if not (entry / LOCK).exists() and _alive(pid):
                continue
            found.append(entry)
    return found


def abandoned(base: Path) -> list[tuple[Path, int]]:
    """Spool directories of dead mounts and how many spool files each holds (for ``objfs
    status``): ``leftovers``, less those of mounts running beside this one. A directory whose
    pid runs is judged by its lock, probed with a shared lock let go at once; one whose pid is
    gone is not probed: a recovery claiming it at that instant would find it locked and leave
    it for the next mount."""
    found: list[tuple[Path, int]] = []
    for entry in leftovers(base):
        pid = _pid_of(entry.name)
        if pid is not None and _alive(pid) and _held(entry / LOCK):
            continue  # a running mount's (another mount sharing this spool base)
        with contextlib.suppress(OSError):
            found.append((entry, sum(1 for _ in entry.glob(SPOOL_FILES))))
    return found


def _held(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # lets the probe's lock go
    return False


def _pid_of(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    digits = name[len(PREFIX) :].split("-", 1)[0]
    return int(digits) if digits.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
