"""Where a mount keeps its write spool files, and what survives the mount.

Each mount spools into a directory of its own, ``mount-<pid>-<random>`` under the spool base
(``--spool-dir``, default ``DATA_DIR/spool``: on disk, not in a tmpfs that a reboot empties).
A clean unmount removes it; an unmount with uploads that failed keeps it, with their data,
and says so. The next mount warns about such directories left by mounts that are no longer
running (a failed unmount, or a crash), so that their data is not forgotten.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from objfs.options import MountOptions

log = logging.getLogger(__name__)

PREFIX = "mount-"


def base_for(options: MountOptions) -> Path:
    """The spool base of a mount: ``--spool-dir``, else ``DATA_DIR/spool``."""
    if options.spool_dir is not None:
        return Path(options.spool_dir)
    return options.connect.data_dir / "spool"


def create(base: Path) -> Path:
    """A new spool directory for this mount under ``base`` (made if missing)."""
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))


def remove(directory: Path) -> None:
    """Remove a spool directory after a clean unmount."""
    shutil.rmtree(directory, ignore_errors=True)


def leftovers(base: Path) -> list[Path]:
    """Spool directories under ``base`` of mounts no longer running that still hold files."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in sorted(base.iterdir()):
            pid = _pid_of(entry.name)
            if pid is None or _alive(pid) or not entry.is_dir():
                continue
            with contextlib.suppress(OSError):
                if any(entry.iterdir()):
                    found.append(entry)
    return found


def warn_leftovers(base: Path) -> None:
    for entry in leftovers(base):
        count = sum(1 for _ in entry.iterdir())
        log.warning(
            "%s holds %d file(s) an earlier mount could not upload; copy back what you need "
            "and delete the directory",
            entry,
            count,
        )


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
