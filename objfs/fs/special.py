"""mknod: regular files, fifos, unix sockets and character/block device nodes.

Each is an empty object made at once (a regular file made by mknod has no open handle whose
close would upload it). A fifo, socket or device keeps its file type in ``Objfs-Mode`` (the
whole ``st_mode``) and a device its number in ``Objfs-Rdev`` (``posix_attrs``), so a remount
and other objfs mounts show the same node; other NATS clients see a zero-size object with
those headers. objfs stores no data for them: the kernel opens them itself (a fifo is a pipe
in the kernel, a socket is bound to its node, a device is the driver's), so no read or
write of one ever reaches objfs. Permission to make a device node (CAP_MKNOD) is the
kernel's check too.
"""

from __future__ import annotations

import errno
import stat

from objfs.bridge import TrioStore
from objfs.fs.coherence import Coherence
from objfs.fs.errors import FsError
from objfs.fs.inodes import InodeTable, Kind, Node
from objfs.fs.naming import in_bucket, new_attrs, object_name, touch
from objfs.fs.posix_attrs import SPECIAL_TYPES, attrs_to_headers
from objfs.fs.values import Caller
from objfs.fs.watcher import Watcher
from objfs.options import MountOptions
from objfs.store.api import ObjectMeta


class Special:
    """The mknod operation (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        options: MountOptions,
        table: InodeTable,
        watcher: Watcher,
        coherence: Coherence,
    ) -> None:
        self.store = store
        self.options = options
        self.table = table
        self.watcher = watcher
        self.coherence = coherence

    async def mknod(self, parent_ino: int, name: str, mode: int, rdev: int, caller: Caller) -> Node:
        file_type = stat.S_IFMT(mode) or stat.S_IFREG  # mknod(2): type 0 is a regular file
        if file_type != stat.S_IFREG and file_type not in SPECIAL_TYPES:
            raise FsError(errno.EINVAL, f"mknod of file type {file_type:o}")
        parent = await self.coherence.directory(parent_ino)
        bucket = in_bucket(parent)
        full = object_name(parent, name, limit=self.options.max_name_bytes)
        if self.table.child(parent, name) is not None:
            raise FsError(errno.EEXIST)
        device = file_type in (stat.S_IFCHR, stat.S_IFBLK)
        attrs = new_attrs(file_type, mode, caller, parent, rdev=rdev if device else 0)
        async with self.watcher.hold(bucket):
            info = await self.store.put(
                bucket,
                full,
                b"",
                meta=ObjectMeta(headers=attrs_to_headers(attrs)),
                chunk_size=self.options.chunk_size,
            )
            node = self.table.new(Kind(file_type), parent, name, attrs, info=info)
        self.table.ref(node)
        touch(parent)
        return node
