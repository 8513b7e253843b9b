"""Rules every operation that makes a name shares: valid components, object names, new attrs.

Plain functions, no state: ``names``, ``links`` and ``files`` all create entries and must
check and spell them the same way.
"""

from __future__ import annotations

import errno
import time

from objfs.fs.errors import FsError
from objfs.fs.inodes import Node, child_path
from objfs.fs.permissions import new_owner
from objfs.fs.posix_attrs import Attrs
from objfs.fs.tree import NAME_MAX
from objfs.fs.values import Caller
from objfs.store.names import MAX_NAME_BYTES


def check_component(name: str) -> None:
    """EINVAL/ENAMETOOLONG unless ``name`` can be one path component."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise FsError(errno.EINVAL, "name is not valid UTF-8") from None
    if size > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise FsError(errno.EINVAL)


def check_symlink_target(target: str) -> None:
    """EINVAL unless ``target`` can be stored: it travels as JSON text (a header or a link's
    name), so it must be UTF-8, as names must."""
    try:
        target.encode("utf-8")
    except UnicodeEncodeError:
        raise FsError(errno.EINVAL, "symlink target is not valid UTF-8") from None


def object_name(
    parent: Node, name: str, *, directory: bool = False, limit: int = MAX_NAME_BYTES
) -> str:
    """The object name of ``parent``'s new child ``name`` (checked against the limits:
    ``limit`` is the server's, ``options.max_name_bytes``)."""
    check_component(name)
    full = child_path(parent, name)
    if directory:
        full += "/"
    if len(full.encode("utf-8")) > limit:
        raise FsError(errno.ENAMETOOLONG, f"object names are at most {limit} bytes here")
    return full


def in_bucket(parent: Node) -> str:
    """The bucket a new entry of ``parent`` goes to (EPERM at the all-buckets root)."""
    if parent.bucket is None:
        raise FsError(errno.EPERM, "the root holds only buckets")
    return parent.bucket


def new_attrs(
    file_type: int, mode: int, caller: Caller, parent: Node | None = None, rdev: int = 0
) -> Attrs:
    """The attributes of an entry ``caller`` creates now in directory ``parent``."""
    now = time.time_ns()
    inherit = parent is not None and parent.bucket is not None
    gid, perm = new_owner(
        file_type,
        mode & 0o7777 & ~caller.umask,
        caller,
        parent.attrs.mode if parent is not None and inherit else None,
        parent.attrs.gid if parent is not None else 0,
    )
    return Attrs(
        mode=file_type | perm,
        uid=caller.uid,
        gid=gid,
        mtime_ns=now,
        ctime_ns=now,
        atime_ns=now,
        rdev=rdev,
    )


def touch(node: Node | None) -> None:
    """Move mtime and ctime of ``node`` (a directory whose entries changed) to now."""
    if node is not None:
        now = time.time_ns()
        node.attrs.mtime_ns = node.attrs.ctime_ns = now


def display_path(node: Node, *, multi_bucket: bool) -> str:
    """``node``'s path below the mount point, for messages."""
    if node.bucket is None:
        return "/"
    return f"/{node.bucket}/{node.path}" if multi_bucket else f"/{node.path}"
