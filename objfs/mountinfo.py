"""The mount table of this mount namespace, from ``/proc/self/mountinfo``.

Used to refuse a mount point that is mounted already, to recognise a dead objfs mount (its
type is ``fuse.objfs``: someone else's FUSE mount is never cleared), and to tell whether a
file is on objfs at all (``objfs info``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

OBJFS_TYPE = "fuse.objfs"


@dataclass(frozen=True, slots=True)
class Mount:
    path: str
    fstype: str
    source: str


def mounts() -> list[Mount]:
    """Every mount, in the kernel's order (later ones are on top)."""
    found: list[Mount] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            fields = line.rstrip("\n").split(" ")
            if len(fields) < 5 or "-" not in fields[5:]:
                continue
            rest = fields[fields.index("-", 5) + 1 :]
            fstype = rest[0] if rest else ""
            source = _unescape(rest[1]) if len(rest) > 1 else ""
            found.append(Mount(_unescape(fields[4]), fstype, source))
    return found


def at(path: str) -> Mount | None:
    """The topmost mount whose mount point is exactly ``path`` (absolute), if any."""
    hits = [m for m in mounts() if m.path == path]
    return hits[-1] if hits else None


def containing(path: str) -> Mount | None:
    """The mount ``path`` (absolute, resolved) is on: the longest mount point above it."""
    best: Mount | None = None
    for m in mounts():
        inside = path == m.path or path.startswith(m.path.rstrip("/") + "/")
        if inside and (best is None or len(m.path) >= len(best.path)):
            best = m
    return best


def _unescape(path: str) -> str:
    # The kernel escapes space, tab, newline and backslash as \ooo.
    if "\\" not in path:
        return path
    return path.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` resolved where it can be (a dead mount point cannot be: made absolute)."""
    try:
        return os.path.realpath(path, strict=True)
    except OSError:
        full = os.path.abspath(path)
        return os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
