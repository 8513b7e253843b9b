"""Open file handles: which inode, and whether the handle may write.

A handle is small on purpose: the data being written lives in the inode's shared spool (all
handles of an inode see the same bytes), so a handle only records its mode. Reading handles
read through the chunk cache, or the spool while the inode has one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from objfs.fs.errors import FsError
from objfs.fs.inodes import Node

EBADF = 9


class Mode(enum.Enum):
    READING = "reading"
    WRITING = "writing"


@dataclass(eq=False, slots=True)
class Handle:
    fh: int
    node: Node
    mode: Mode

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
        node.handles += 1
        if writable:
            node.writers += 1
        return handle

    def get(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise FsError(EBADF, f"no file handle {fh}")
        return handle

    def close(self, fh: int) -> Handle:
        handle = self._handles.pop(fh, None)
        if handle is None:
            raise FsError(EBADF, f"no file handle {fh}")
        handle.node.handles -= 1
        if handle.writable:
            handle.node.writers -= 1
        return handle

    def __len__(self) -> int:
        return len(self._handles)
