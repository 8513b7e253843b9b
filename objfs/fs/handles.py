"""Open file handles: which inode, and whether the handle may write.

A handle is small on purpose: the data being written lives in the inode's shared spool (all
handles of an inode see the same bytes), so a handle only records its mode and the object
version it reads. Reading handles read through the chunk cache, or the spool while the inode
has one.

``info`` pins the version a handle was opened on: a remote overwrite or delete does not move
an open reader to other bytes mid-file (it keeps reading its version while the chunks exist,
then gets ESTALE), whereas this mount's own uploads move the pins of the inode's handles to
the version just stored (those readers saw the new bytes through the spool already).

The table counts each node's handles and writers in ``Node.file`` (``open``/``close`` are
the only writers of those counts; they never await, so the counts and the table agree at
every await).
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass

from objfs.fs.errors import FsError
from objfs.fs.inodes import Node
from objfs.store.api import ObjectInfo


class Mode(enum.Enum):
    READING = "reading"
    WRITING = "writing"


@dataclass(eq=False, slots=True)
class Handle:
    fh: int
    node: Node
    mode: Mode
    info: ObjectInfo | None = None
    """The object version this handle reads when the inode has no spool (see above)."""

    @property
    def writable(self) -> bool:
        return self.mode is Mode.WRITING


class HandleTable:
    def __init__(self) -> None:
        self._handles: dict[int, Handle] = {}
        self._next = 1

    def open(self, node: Node, writable: bool) -> Handle:
        handle = Handle(self._next, node, Mode.WRITING if writable else Mode.READING)
        self._next += 1
        self._handles[handle.fh] = handle
        node.file.handles += 1
        if writable:
            node.file.writers += 1
        return handle

    def get(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise FsError(errno.EBADF, f"no file handle {fh}")
        return handle

    def close(self, fh: int) -> Handle:
        handle = self._handles.pop(fh, None)
        if handle is None:
            raise FsError(errno.EBADF, f"no file handle {fh}")
        handle.node.file.handles -= 1
        if handle.writable:
            handle.node.file.writers -= 1
        return handle

    def of(self, node: Node) -> list[Handle]:
        """The open handles of ``node``."""
        return [h for h in self._handles.values() if h.node is node] if node.file.handles else []

    def __len__(self) -> int:
        return len(self._handles)
