"""Read-only mounts and sealed buckets: every modifying call answers EROFS before it starts.

``WriteGuard`` is the first base of ``Filesystem``: it wraps each modifying operation (create,
mknod, open for writing, write, mkdir, rmdir, unlink, rename, symlink, link, setxattr,
removexattr; ``Filesystem.setattr`` calls ``refuse_changes`` itself) and refuses it with
EROFS when

- the mount is ``--read-only`` (nothing is asked of the server: the answer is local), or
- the bucket it would change is sealed. Which buckets are sealed is learnt from every bucket
  status the mount reads (start-up, the all-buckets listing, statfs, bucket xattrs), from
  a seal made through this mount, and from the bucket-list watch of an all-buckets mount.
  A bucket sealed by another client while a ``--bucket`` mount runs is refused by the server
  instead (the store's ReadOnly is EROFS too); a file created before the mount learns of the
  seal gets its EROFS at close.

Reads, lookups, listings and getxattr are never wrapped: they keep working.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from objfs.fs.errors import FsError
from objfs.fs.inodes import InodeTable, Node
from objfs.store.api import BucketStatus

if TYPE_CHECKING:
    from objfs.fs.handles import HandleTable
    from objfs.options import MountOptions


class WriteGuard:
    """Mixed into ``Filesystem`` first; see the module docstring."""

    options: MountOptions
    table: InodeTable
    handles: HandleTable
    sealed_buckets: set[str]
    """Buckets known to be sealed (also fed by the bucket-list watch)."""

    def note_status(self, status: BucketStatus) -> None:
        """Remember ``status``'s bucket if it is sealed (for ever: sealing is irreversible)."""
        if status.sealed:
            self.sealed_buckets.add(status.name)

    def refuse_changes(self, *nodes: Node | None) -> None:
        """EROFS if the mount is read-only or any of ``nodes`` lives in a sealed bucket."""
        if self.options.read_only:
            raise FsError(errno.EROFS, "the mount is read-only")
        for node in nodes:
            if node is not None and node.bucket is not None and node.bucket in self.sealed_buckets:
                raise FsError(errno.EROFS, f"bucket {node.bucket} is sealed")

    def _entry(self, parent_ino: int, name: str) -> tuple[Node | None, Node | None]:
        """The directory ``parent_ino`` and its child ``name`` (either may be None)."""
        parent = self.table.find(parent_ino)
        return parent, (self.table.child(parent, name) if parent is not None else None)

    def _guard_entry(self, parent_ino: int, name: str) -> None:
        self.refuse_changes(*self._entry(parent_ino, name))

    # -- wrapped operations --------------------------------------------------------------------
    async def create(self, parent_ino: int, name: str, *args: Any, **kw: Any) -> Any:
        self._guard_entry(parent_ino, name)
        return await super().create(parent_ino, name, *args, **kw)  # type: ignore[misc]

    async def mknod(self, parent_ino: int, name: str, *args: Any, **kw: Any) -> Any:
        self._guard_entry(parent_ino, name)
        return await super().mknod(parent_ino, name, *args, **kw)  # type: ignore[misc]

    async def mkdir(self, parent_ino: int, name: str, *args: Any, **kw: Any) -> Any:
        self._guard_entry(parent_ino, name)
        return await super().mkdir(parent_ino, name, *args, **kw)  # type: ignore[misc]

    async def rmdir(self, parent_ino: int, name: str, *args: Any, **kw: Any) -> Any:
        self._guard_entry(parent_ino, name)
        return await super().rmdir(parent_ino, name, *args, **kw)  # type: ignore[misc]

    async def unlink(self, parent_ino: int, name: str, *args: Any, **kw: Any) -> Any:
        self._guard_entry(parent_ino, name)
        return await super().unlink(parent_ino, name, *args, **kw)  # type: ignore[misc]

    async def symlink(self, parent_ino: int, name: str, *args: Any, **kw: Any) -> Any:
        self._guard_entry(parent_ino, name)
        return await super().symlink(parent_ino, name, *args, **kw)  # type: ignore[misc]

    async def link(self, ino: int, parent_ino: int, name: str, *args: Any, **kw: Any) -> Any:
        self.refuse_changes(self.table.find(ino), *self._entry(parent_ino, name))
        return await super().link(ino, parent_ino, name, *args, **kw)  # type: ignore[misc]

    async def rename(
        self, old_parent_ino: int, old_name: str, new_parent_ino: int, new_name: str, **kw: Any
    ) -> Any:
        self.refuse_changes(*self._entry(old_parent_ino, old_name))
        self.refuse_changes(*self._entry(new_parent_ino, new_name))
        return await super().rename(  # type: ignore[misc]
            old_parent_ino, old_name, new_parent_ino, new_name, **kw
        )

    async def open(self, ino: int, flags: int, *args: Any, **kw: Any) -> Any:
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            self.refuse_changes(self.table.find(ino))
        return await super().open(ino, flags, *args, **kw)  # type: ignore[misc]

    async def write(self, fh: int, *args: Any, **kw: Any) -> Any:
        self.refuse_changes(self.handles.get(fh).node)
        return await super().write(fh, *args, **kw)  # type: ignore[misc]

    async def setxattr(self, ino: int, *args: Any, **kw: Any) -> Any:
        self.refuse_changes(self.table.find(ino))
        return await super().setxattr(ino, *args, **kw)  # type: ignore[misc]

    async def removexattr(self, ino: int, *args: Any, **kw: Any) -> Any:
        self.refuse_changes(self.table.find(ino))
        return await super().removexattr(ino, *args, **kw)  # type: ignore[misc]
