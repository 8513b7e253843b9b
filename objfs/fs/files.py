"""File data operations of the core: open, create, read, write, flush, fsync, release, upload.

Writes go to the inode's spool (shared by all its handles); the spool is uploaded with one
``store.put`` (streamed from the spool file, in chunks) when the last writer closes, or on
fsync. A failed upload answers EIO (ENOSPC/EROFS when the store says so) and keeps the spool:
the next close or fsync retries, and so does ``Filesystem.shutdown``. Reads come from the
spool while the inode has local content, otherwise through the chunk cache.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objfs.fs.errors import FsError
from objfs.fs.handles import Handle, HandleTable
from objfs.fs.inodes import InodeTable, Kind, Node
from objfs.fs.posix_attrs import attrs_to_headers
from objfs.fs.spool import Spool
from objfs.fs.values import Caller
from objfs.store.api import ObjectInfo, ObjectMeta
from objfs.store.errors import NoSpace, NotFound, ReadOnly, StoreError

if TYPE_CHECKING:
    from objfs.fs.chunk_cache import ChunkCache
    from objfs.fs.watcher import Watcher
    from objfs.options import MountOptions

log = logging.getLogger(__name__)

DELETE_ON_CLOSE = "delete_on_close"
"""``Node.extra`` key: the object of a file unlinked while open, deleted at its last close."""


class FileOps:
    """Mixed into ``Filesystem``; uses its store, tables, cache and helpers."""

    store: Any
    options: MountOptions
    table: InodeTable
    handles: HandleTable
    cache: ChunkCache
    spool_dir: Path
    watcher: Watcher

    if TYPE_CHECKING:

        async def directory(self, ino: int) -> Node: ...
        def object_name(self, parent: Node, name: str, *, directory: bool = False) -> str: ...
        def in_bucket(self, parent: Node) -> str: ...
        def new_attrs(self, file_type: int, mode: int, caller: Caller) -> Any: ...
        def touch(self, node: Node | None) -> None: ...

    # -- opening -------------------------------------------------------------------------------
    async def open(self, ino: int, flags: int, caller: Caller | None = None) -> tuple[Handle, bool]:
        """Open inode ``ino``; returns the handle and whether the kernel may keep its cache."""
        node = self.table.get(ino)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if node.kind is Kind.SYMLINK:
            raise FsError(errno.ELOOP)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        keep_cache = node.info is not None and node.cached_nuid == node.info.nuid
        if writable:
            self._spool(node)
        handle = self.handles.open(node, writable)
        handle.info = node.info
        try:
            if writable and flags & os.O_TRUNC and node.size:
                await self.truncate(node, 0)
                node.attrs.mtime_ns = node.attrs.ctime_ns = time.time_ns()
        except BaseException:
            await self.release(handle.fh)
            raise
        if node.info is not None and node.spool is None:
            node.cached_nuid = node.info.nuid
        return handle, keep_cache

    def _spool(self, node: Node) -> Spool:
        if node.spool is None:
            node.spool = Spool(self.spool_dir, node.info)
        return node.spool

    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, caller: Caller
    ) -> tuple[Handle, Node]:
        """Create and open a new regular file (visible here at once, uploaded on close)."""
        parent = await self.directory(parent_ino)
        self.in_bucket(parent)
        self.object_name(parent, name)
        if self.table.child(parent, name) is not None:
            raise FsError(errno.EEXIST)
        attrs = self.new_attrs(stat.S_IFREG, mode, caller)
        node = self.table.new(Kind.FILE, parent, name, attrs)
        spool = self._spool(node)
        spool.dirty = True  # even an empty new file must reach the store
        handle = self.handles.open(node, True)
        self.table.ref(node)
        self.touch(parent)
        return handle, node

    async def mknod(self, parent_ino: int, name: str, mode: int, rdev: int, caller: Caller) -> Node:
        """Only regular files: fifos, sockets and devices cannot live in an object store."""
        if not stat.S_ISREG(mode):
            raise FsError(errno.EPERM, "objfs stores regular files, directories and symlinks only")
        parent = await self.directory(parent_ino)
        bucket = self.in_bucket(parent)
        full = self.object_name(parent, name)
        if self.table.child(parent, name) is not None:
            raise FsError(errno.EEXIST)
        attrs = self.new_attrs(stat.S_IFREG, mode, caller)
        with self.watcher.hold(bucket):
            info = await self.store.put(
                bucket,
                full,
                b"",
                meta=ObjectMeta(headers=attrs_to_headers(attrs)),
                chunk_size=self.options.chunk_size,
            )
            node = self.table.new(Kind.FILE, parent, name, attrs, info=info)
        self.table.ref(node)
        self.touch(parent)
        return node

    # -- data ----------------------------------------------------------------------------------
    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self.handles.get(fh)
        node = handle.node
        spool = node.spool
        if spool is not None and spool.filled:
            return await spool.read(offset, size)
        if spool is not None:
            info = spool.base
        else:
            info = handle.info if handle.info is not None else node.info  # see handles.py
        if info is None:
            return b""
        try:
            return await self.cache.read(info, offset, size)
        except StoreError as e:
            if node.info is None or node.info.nuid != info.nuid or not node.attached:
                # Replaced or deleted elsewhere since this handle opened, and its chunks
                # are gone: never mix in the new version's bytes.
                raise FsError(errno.ESTALE, f"{node.path}: the version opened is gone") from e
            raise

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handles.get(fh)
        if not handle.writable:
            raise FsError(errno.EBADF)
        node = handle.node
        written = await self._spool(node).write(self.store, offset, data)
        node.attrs.mtime_ns = node.attrs.ctime_ns = time.time_ns()
        return written

    async def truncate(self, node: Node, size: int) -> None:
        await self._spool(node).truncate(self.store, size)

    # -- closing -------------------------------------------------------------------------------
    async def flush(self, fh: int) -> None:
        """close(2) of one descriptor: upload if this handle is the inode's last writer."""
        handle = self.handles.get(fh)
        node = handle.node
        if handle.writable and node.writers == 1:
            await self.upload(node)

    async def fsync(self, fh: int, datasync: bool = False) -> None:
        await self.upload(self.handles.get(fh).node)

    async def release(self, fh: int) -> None:
        handle = self.handles.close(fh)
        node = handle.node
        try:
            if handle.writable and node.writers == 0:
                await self.upload(node)
        finally:
            spool = node.spool
            # A clean spool is no longer needed; a dirty one (failed upload) is kept for the
            # retry; an unlinked file's spool lives until its last reader is gone.
            if spool is not None and node.writers == 0:
                done = node.handles == 0 if not node.attached else not spool.dirty
                if done:
                    spool.close()
                    node.spool = None
                    self.watcher.local_done(node)  # a remote change held while writing
            if node.handles == 0:
                unlinked = node.extra.pop(DELETE_ON_CLOSE, None)
                if unlinked is not None:
                    await self._retract(unlinked)  # unlinked while open: its delete is now
            self.table.maybe_drop(node)

    async def _retract(self, info: ObjectInfo) -> None:
        """Delete ``info``'s object for a file unlinked here, unless it was replaced since.

        Used when the delete had to come after the unlink: the file was open (its readers
        read on until the last close), or an upload ran (its put came after the unlink's
        delete and brought the name back).
        """
        bucket = info.bucket
        with self.watcher.hold(bucket):
            try:
                current = await self.store.info(bucket, info.name)
                if current.nuid == info.nuid:
                    await self.store.delete(bucket, info.name)
            except NotFound:
                pass
            except StoreError as e:
                log.warning("%s was deleted while uploading; removing the upload: %s", info.name, e)

    async def upload(self, node: Node) -> None:
        """Store the spool's content as the node's object (if it changed); EIO on failure."""
        spool = node.spool
        if spool is None or not spool.dirty or not node.attached or node.bucket is None:
            return
        async with spool.lock:
            if not spool.dirty:
                return  # another task uploaded it while we waited
            old = node.info
            meta = old.meta if old is not None else ObjectMeta()
            meta.headers = attrs_to_headers(node.attrs, old.headers if old is not None else None)
            try:
                await spool.fill(self.store)
                info = await self.store.put(
                    node.bucket,
                    node.path,
                    spool.rewind(),
                    meta=meta,
                    chunk_size=self.options.chunk_size,
                )
            except StoreError as e:
                spool.last_error = f"{type(e).__name__}: {e}"
                log.error("upload of %s failed, data kept in %s: %s", node.path, spool.path, e)
                code = e.errno if isinstance(e, NoSpace | ReadOnly) else errno.EIO
                raise FsError(code, spool.last_error) from e
            except OSError as e:
                spool.last_error = f"spool file: {e}"
                log.error("upload of %s failed reading %s: %s", node.path, spool.path, e)
                raise FsError(errno.EIO, spool.last_error) from e
            if not node.attached:
                await self._retract(info)
                return
            spool.dirty = False
            spool.last_error = None
            spool.base = info
            node.info = info
            self.watcher.uploaded(node, info)
            # The kernel's pages were written through and match the object just stored.
            node.cached_nuid = info.nuid
            for h in self.handles.of(node):
                h.info = info  # readers here saw these bytes through the spool already
            if old is not None and old.nuid != info.nuid:
                self.cache.forget(old.bucket, old.nuid)
