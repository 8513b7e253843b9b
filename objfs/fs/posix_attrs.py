"""POSIX attributes of a node and how they persist as object headers.

objfs keeps what ``cp -p``, ``rsync -a`` and ``tar`` care about in headers of the object
itself, so every client sees them and a remount keeps them:

- ``Objfs-Mode``: permission bits (``st_mode & 0o7777``), octal; for a fifo, socket or device
  node the whole ``st_mode`` (type bits too), which is how such an object is recognised.
- ``Objfs-Uid`` / ``Objfs-Gid``: decimal owner and group.
- ``Objfs-Mtime``: modification time, decimal nanoseconds since the epoch.
- ``Objfs-Symlink``: present on a plain symlink object; the value is the link target.
- ``Objfs-Rdev``: the device number (``st_rdev``, decimal) of a character or block device.

Objects written by other clients carry none of these; they get the mount's defaults (owner
and group of the mount options, ``0o666 & ~umask`` for files, ``0o777 & ~umask`` for
directories) and the server's time of the meta message as mtime.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

from objfs.store.api import ObjectInfo

H_MODE = "Objfs-Mode"
H_UID = "Objfs-Uid"
H_GID = "Objfs-Gid"
H_MTIME = "Objfs-Mtime"
H_SYMLINK = "Objfs-Symlink"
H_RDEV = "Objfs-Rdev"
OUR_HEADERS = (H_MODE, H_UID, H_GID, H_MTIME, H_SYMLINK, H_RDEV)

SPECIAL_TYPES = frozenset((stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK))
"""File types stored as an empty object whose ``Objfs-Mode`` carries the type bits."""


@dataclass(frozen=True, slots=True)
class Defaults:
    """Mount-wide attributes for objects (and implicit directories) that carry none."""

    uid: int
    gid: int
    umask: int

    @property
    def file_mode(self) -> int:
        return 0o666 & ~self.umask

    @property
    def dir_mode(self) -> int:
        return 0o777 & ~self.umask


@dataclass(slots=True)
class Attrs:
    """The POSIX attributes of one node (size lives with the data, not here)."""

    mode: int
    """Full ``st_mode``: file type bits and permission bits."""
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    rdev: int = 0

    @property
    def perm(self) -> int:
        return self.mode & 0o7777


def header(headers: dict[str, list[str]], key: str) -> str | None:
    """First value of header ``key``; header names are matched case-insensitively."""
    if not headers:
        return None  # objects of other clients: six calls per object of a snapshot
    values = headers.get(key)
    if values is None:
        lower = key.lower()
        for k, v in headers.items():
            if k.lower() == lower:
                values = v
                break
    return values[0] if values else None


def _int(value: str | None, base: int = 10) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip(), base)
    except ValueError:
        return None  # a foreign or damaged header: fall back to the default


def special_type(info: ObjectInfo) -> int | None:
    """The ``stat.S_IF*`` type of a fifo/socket/device object, or None for any other object."""
    mode = _int(header(info.headers, H_MODE), 8)
    if mode is None or stat.S_IFMT(mode) not in SPECIAL_TYPES:
        return None
    return stat.S_IFMT(mode)


def symlink_target(info: ObjectInfo) -> str | None:
    """The target of a plain symlink object, or None if ``info`` is not one."""
    return header(info.headers, H_SYMLINK)


def attrs_from_info(
    info: ObjectInfo | None, file_type: int, defaults: Defaults, now_ns: int
) -> Attrs:
    """Attributes of an object (``info``) shown as a node of ``file_type`` (``stat.S_IF*``).

    ``info`` None (an implicit directory, a file not uploaded yet) takes the defaults and
    ``now_ns``.
    """
    if file_type == stat.S_IFDIR:
        perm = defaults.dir_mode
    elif file_type == stat.S_IFLNK:
        perm = 0o777
    else:
        perm = defaults.file_mode
    uid, gid, mtime, rdev = defaults.uid, defaults.gid, now_ns, 0
    if info is not None and not info.headers:
        # An object of another client (no headers): once per object of a snapshot.
        mtime = info.mtime_ns or now_ns
        return Attrs(file_type | perm, uid, gid, mtime, mtime, mtime, 0)
    if info is not None:
        h = info.headers
        mode = _int(header(h, H_MODE), 8)
        if mode is not None and file_type != stat.S_IFLNK:
            perm = mode & 0o7777
        stored_uid, stored_gid = _int(header(h, H_UID)), _int(header(h, H_GID))
        uid = stored_uid if stored_uid is not None else uid
        gid = stored_gid if stored_gid is not None else gid
        stored = _int(header(h, H_MTIME))
        mtime = stored if stored is not None else (info.mtime_ns or now_ns)
        if file_type in (stat.S_IFCHR, stat.S_IFBLK):
            rdev = _int(header(h, H_RDEV)) or 0
    return Attrs(
        mode=file_type | perm,
        uid=uid,
        gid=gid,
        mtime_ns=mtime,
        ctime_ns=info.mtime_ns if info is not None and info.mtime_ns else mtime,
        atime_ns=mtime,
        rdev=rdev,
    )


def attrs_to_headers(
    attrs: Attrs, base: dict[str, list[str]] | None = None, *, symlink: str | None = None
) -> dict[str, list[str]]:
    """``base`` (foreign headers are kept) with our attribute headers set from ``attrs``."""
    out = {k: list(v) for k, v in (base or {}).items() if k.lower() not in _OURS_LOWER}
    special = stat.S_IFMT(attrs.mode) in SPECIAL_TYPES
    out[H_MODE] = [f"{attrs.mode if special else attrs.perm:o}"]
    out[H_UID] = [str(attrs.uid)]
    out[H_GID] = [str(attrs.gid)]
    out[H_MTIME] = [str(attrs.mtime_ns)]
    if symlink is not None:
        out[H_SYMLINK] = [symlink]
    if stat.S_IFMT(attrs.mode) in (stat.S_IFCHR, stat.S_IFBLK):
        out[H_RDEV] = [str(attrs.rdev)]
    return out


_OURS_LOWER = frozenset(h.lower() for h in OUR_HEADERS)
