"""Extended attribute operations of the core: get, list, set and remove ``user.*`` names.

What the names mean is ``objfs.fs.xattrs``; this module reads them from the node's object
meta (no round trip: the tree holds the meta, the watch keeps it fresh) or from the bucket's
status (one round trip, on bucket directories only), and persists changes with one
``update_meta`` (objects: no data is copied) or ``update_bucket`` (bucket directories).

- A file not uploaded yet (created, still only in its spool, as ``cp -a`` leaves it when it
  copies xattrs before close) is uploaded first, so that its metadata has an object to live on.
- An implicit directory (no marker object) gets its marker object on the first set.
- Setting ``user.objfs.sealed`` to 1 on a bucket directory seals the bucket: irreversible,
  and the kernel asks for no confirmation.

Read-only mounts and sealed buckets are refused before these run (``guard``).

Concurrency: an update of a node with a spool takes ``spool.lock``, so it never runs under
that node's upload (which would publish the meta it read before this change); each store
call that changes an object runs under ``watcher.hold`` of its bucket.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Awaitable, Callable

from objfs.bridge import TrioStore
from objfs.fs import xattrs
from objfs.fs.errors import FsError
from objfs.fs.inodes import InodeTable, Node
from objfs.fs.posix_attrs import attrs_to_headers
from objfs.fs.watcher import Watcher
from objfs.store.api import BucketStatus, ObjectMeta


class Xattrs:
    """getxattr, listxattr, setxattr, removexattr (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        table: InodeTable,
        watcher: Watcher,
        upload: Callable[[Node], Awaitable[None]],
        note_status: Callable[[BucketStatus], None],
    ) -> None:
        self.store = store
        self.table = table
        self.watcher = watcher
        self.upload = upload
        """``Files.upload``: a file not uploaded yet gets its object before its meta changes."""
        self.note_status = note_status
        """``WriteGuard.note_status``: a bucket status read or returned may say it is sealed."""

    # -- reading -------------------------------------------------------------------------------
    async def _bucket_status(self, node: Node) -> BucketStatus:
        assert node.bucket is not None
        status: BucketStatus = await self.store.bucket_status(node.bucket)
        self.note_status(status)
        return status

    async def getxattr(self, ino: int, name: str) -> bytes:
        node = self.table.get(ino)
        x = xattrs.parse(name)
        if node.bucket is None:
            raise FsError(errno.ENODATA)  # the all-buckets root has no object
        if node.is_bucket_root:
            status = await self._bucket_status(node)
            if x.kind == "fact":
                return xattrs.fact(xattrs.bucket_facts(status), x)
            if x.kind == "header":
                raise FsError(errno.ENODATA)
            return xattrs.get(xattrs.bucket_meta(status), x)
        if x.kind == "fact":
            return xattrs.fact(xattrs.object_facts(node.bucket, node.info), x)
        if node.info is None:
            raise FsError(errno.ENODATA)
        return xattrs.get(node.info.meta, x)

    async def listxattr(self, ino: int) -> list[str]:
        node = self.table.get(ino)
        if node.bucket is None:
            return []
        if node.is_bucket_root:
            return xattrs.names(xattrs.bucket_meta(await self._bucket_status(node)), headers=False)
        if node.info is None:
            return []
        return xattrs.names(node.info.meta)

    # -- changing ------------------------------------------------------------------------------
    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        node = self.table.get(ino)
        x = xattrs.parse(name)
        if node.bucket is None:
            raise FsError(errno.EOPNOTSUPP, "the all-buckets root has no metadata")
        if node.is_bucket_root:
            await self._set_bucket(node, x, value)
            return
        xattrs.decode_value(value)  # E2BIG/EINVAL before any upload
        if node.info is None:
            if node.spool is not None and node.spool.dirty:
                await self.upload(node)
            elif node.is_dir:
                await self._make_marker(node, x, value)
                return
        await self._update(node, lambda meta: xattrs.with_value(meta, x, value))

    async def removexattr(self, ino: int, name: str) -> None:
        node = self.table.get(ino)
        x = xattrs.parse(name)
        if node.bucket is None:
            raise FsError(errno.ENODATA)
        if node.is_bucket_root:
            status = await self._bucket_status(node)
            if x.kind == "header":
                raise FsError(errno.ENODATA)
            meta = xattrs.without(xattrs.bucket_meta(status), x)
            self.note_status(await self.store.update_bucket(xattrs.bucket_config(status, meta)))
            return
        if node.info is None:
            if x.kind == "fact":
                raise FsError(errno.EPERM, "user.objfs.* attributes are read-only facts")
            raise FsError(errno.ENODATA)
        await self._update(node, lambda meta: xattrs.without(meta, x))

    async def _update(self, node: Node, change: Callable[[ObjectMeta], ObjectMeta]) -> None:
        """Replace the node's object meta by ``change(meta)``: one update_meta, no data copied."""
        assert node.bucket is not None
        # Never under a running upload: it would publish the meta it read before this change.
        lock: contextlib.AbstractAsyncContextManager[None] = (
            node.spool.lock if node.spool is not None else contextlib.nullcontext()
        )
        async with lock:
            info = node.info
            if info is None:
                raise FsError(errno.ENOENT, "the object is gone")
            meta = change(info.meta)
            async with self.watcher.hold(node.bucket):
                node.info = await self.store.update_meta(node.bucket, info.name, meta)
        node.attrs.ctime_ns = time.time_ns()

    async def _make_marker(self, node: Node, x: xattrs.XName, value: bytes) -> None:
        """Give an implicit directory its marker object, carrying the new attribute."""
        assert node.bucket is not None
        meta = xattrs.with_value(ObjectMeta(headers=attrs_to_headers(node.attrs)), x, value)
        async with self.watcher.hold(node.bucket):
            node.info = await self.store.put(node.bucket, node.object_name, b"", meta=meta)
        node.attrs.ctime_ns = time.time_ns()

    async def _set_bucket(self, node: Node, x: xattrs.XName, value: bytes) -> None:
        assert node.bucket is not None
        if x.kind == "fact":
            if x.key != "sealed":
                raise FsError(errno.EPERM, "user.objfs.* attributes are read-only facts")
            if xattrs.seal_request(value):
                self.note_status(await self.store.seal_bucket(node.bucket))
            return  # "0" on a bucket that is not sealed (a sealed one answered EROFS above)
        if x.kind == "header":
            raise FsError(errno.EOPNOTSUPP, "buckets have no headers")
        status = await self._bucket_status(node)
        meta = xattrs.with_value(xattrs.bucket_meta(status), x, value)
        self.note_status(await self.store.update_bucket(xattrs.bucket_config(status, meta)))
