"""The EROFS guard: read-only mounts and sealed buckets refuse every change, before it starts.

``Filesystem`` calls one of these checks as the first line of every operation that may
change something (create, mknod, mkdir, rmdir, unlink, symlink, link, rename, open for
writing or with O_TRUNC, write, setattr, setxattr, removexattr): one mechanism for all of
them. A change is refused with EROFS when

- the mount is ``--read-only`` (nothing is asked of the server: the answer is local), or
- the bucket it would change is sealed. Which buckets are sealed is learnt from every bucket
  status the mount reads (start-up, the all-buckets listing, statfs, bucket xattrs), from
  a seal made through this mount, and from the bucket-list watch of an all-buckets mount.
  A bucket sealed by another client while a ``--bucket`` mount runs is refused by the server
  instead (the store's ReadOnly is EROFS too); a file created before the mount learns of the
  seal gets its EROFS at close.

Reads, lookups, listings and getxattr are never guarded: they keep working.
"""

from __future__ import annotations

import errno
import os

from objfs.fs.errors import FsError
from objfs.fs.handles import HandleTable
from objfs.fs.inodes import InodeTable, Node
from objfs.fs.values import SetAttr
from objfs.store.api import BucketStatus


class WriteGuard:
    """Knows which buckets are sealed and refuses changes to them (see the module docstring)."""

    def __init__(self, read_only: bool, table: InodeTable, handles: HandleTable) -> None:
        self.read_only = read_only
        self.table = table
        self.handles = handles
        self.sealed: set[str] = set()
        """Buckets known to be sealed. Sealing is irreversible: a name leaves the set only
        when its bucket is deleted (``forget_sealed``, from the bucket-list watch)."""

    # -- what is sealed -----------------------------------------------------------------------
    def note_status(self, status: BucketStatus) -> None:
        """Remember ``status``'s bucket if it is sealed."""
        if status.sealed:
            self.sealed.add(status.name)

    def note_sealed(self, bucket: str) -> bool:
        """Record ``bucket`` as sealed; True if this is news."""
        if bucket in self.sealed:
            return False
        self.sealed.add(bucket)
        return True

    def forget_sealed(self, bucket: str) -> None:
        """``bucket`` was deleted (a new bucket of that name starts unsealed)."""
        self.sealed.discard(bucket)

    # -- refusing -----------------------------------------------------------------------------
    def refuse_changes(self, *nodes: Node | None) -> None:
        """EROFS if the mount is read-only or any of ``nodes`` lives in a sealed bucket."""
        if self.read_only:
            raise FsError(errno.EROFS, "the mount is read-only")
        for node in nodes:
            if node is not None and node.bucket is not None and node.bucket in self.sealed:
                raise FsError(errno.EROFS, f"bucket {node.bucket} is sealed")

    def entry(self, parent_ino: int, name: str) -> None:
        """Guard a change of entry ``name`` of directory ``parent_ino`` (either may be gone:
        the operation itself then answers ENOENT)."""
        parent = self.table.find(parent_ino)
        child = self.table.child(parent, name) if parent is not None else None
        self.refuse_changes(parent, child)

    def inode(self, ino: int) -> None:
        """Guard a change of inode ``ino`` (its data or its metadata)."""
        self.refuse_changes(self.table.find(ino))

    def link(self, ino: int, parent_ino: int, name: str) -> None:
        self.inode(ino)
        self.entry(parent_ino, name)

    def open(self, ino: int, flags: int) -> None:
        """Only an open that may write (a writable mode or O_TRUNC) is a change."""
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            self.inode(ino)

    def write(self, fh: int) -> None:
        self.refuse_changes(self.handles.get(fh).node)

    def setattr(self, ino: int, changes: SetAttr) -> None:
        """A setattr of atime alone is no change (atime is not persisted); ENOENT first."""
        node = self.table.get(ino)
        if not changes.only_atime:
            self.refuse_changes(node)
