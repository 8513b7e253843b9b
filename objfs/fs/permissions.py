"""Ownership and mode rules that Linux leaves to the filesystem when it creates an entry.

The kernel checks access itself (``default_permissions``): read/write/search bits, chmod and
chown by a non-owner (EPERM), the sticky bit on unlink and rename, and it turns a chown or a
write by a non-owner into a mode change that clears setuid/setgid. What it cannot do for a
FUSE filesystem is choose the owner of a new entry, because the filesystem makes the inode:

- a new entry in a setgid directory takes the directory's group (BSD semantics), and a new
  directory there is setgid itself (``inode_init_owner``);
- a new file that would be setgid and group-executable in a group its creator is not in
  loses the setgid bit unless the creator is root (``mode_strip_sgid``; recent kernels do it
  before asking the filesystem, older ones do not).

Group membership is the caller's fsgid and its supplementary groups. The FUSE request has no
groups, only the caller's pid, so they are read from ``/proc/<pid>/status``. If that file is
gone (the caller exited) only the fsgid counts: the bit is cleared rather than kept wrongly.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from objfs.fs.values import Caller

PROC = Path("/proc")


def supplementary_groups(pid: int) -> frozenset[int]:
    """The supplementary groups of process ``pid`` (empty if it cannot be read)."""
    if pid <= 0:
        return frozenset()
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("Groups:"):
            return frozenset(int(g) for g in line.split()[1:])
    return frozenset()


def in_group(caller: Caller, gid: int) -> bool:
    """Whether ``caller`` is in group ``gid`` or may act as if it were (root)."""
    return caller.uid == 0 or caller.gid == gid or gid in supplementary_groups(caller.pid)


def new_owner(
    file_type: int, perm: int, caller: Caller, parent_mode: int | None, parent_gid: int
) -> tuple[int, int]:
    """The ``(gid, permission bits)`` of an entry ``caller`` creates with ``perm``.

    ``parent_mode`` is the ``st_mode`` of the directory it is created in (None: no parent
    attributes apply, as for a bucket directory made at the all-buckets root).
    """
    gid = caller.gid
    if parent_mode is not None and parent_mode & stat.S_ISGID:
        gid = parent_gid
        if file_type == stat.S_IFDIR:
            perm |= stat.S_ISGID
    sgid_exec = stat.S_ISGID | stat.S_IXGRP
    if file_type != stat.S_IFDIR and perm & sgid_exec == sgid_exec and not in_group(caller, gid):
        perm &= ~stat.S_ISGID
    return gid, perm


def may_open(mode: int, uid: int, gid: int, caller: Caller, flags: int) -> bool:
    """Whether ``caller`` may open a file of ``mode``/``uid``/``gid`` with ``flags``.

    The kernel checks this itself on open(2), but not when it sends a create: a create that
    finds the file made meanwhile (another client's, seen after the kernel's lookup) and
    opens it must check what open(2) would have."""
    if caller.uid == 0:
        return True
    if caller.uid == uid:
        bits = mode >> 6
    elif in_group(caller, gid):
        bits = mode >> 3
    else:
        bits = mode
    access = flags & os.O_ACCMODE
    want = 0
    if access in (os.O_RDONLY, os.O_RDWR):
        want |= 4
    if access in (os.O_WRONLY, os.O_RDWR) or flags & os.O_TRUNC:
        want |= 2
    return bits & want == want
