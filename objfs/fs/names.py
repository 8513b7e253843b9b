"""Name operations of the core: lookup, readdir, mkdir, rmdir, unlink, rename, plain symlinks.

- Lookups and readdir are answered from the in-memory tree, which the bucket watches keep in
  step with the store; no store round trip happens on those paths (except to load a bucket's
  tree the first time it is entered, or to refresh the bucket list at the all-buckets root).
- Directories: an empty directory made here persists as a zero-size marker object ``dir/``;
  directories implied by deeper names need none. rmdir removes the marker, so nothing is
  left behind. At the all-buckets root, mkdir creates a bucket and rmdir deletes an empty one.
- Rename of a file is the store's zero-copy rename (same nuid, new name). Rename of a
  directory renames every object below it (and its marker), up to ``RENAME_PARALLEL`` at a
  time. A file not uploaded yet (still only in its spool) is renamed in the tree only: its
  upload goes to the new name.
- Symlinks: a plain symlink is an empty object whose ``Objfs-Symlink`` header holds the
  target (``links.Links`` decides when ``ln -s`` makes a NATS link instead, and reads
  links). Hard links are refused with EPERM (an object has one name). Fifos, sockets and
  device nodes are ``special.Special``'s.

Concurrency: the kernel holds the directory's lock (``i_rwsem``) for the whole of a name
operation on it (both directories' for a rename, plus the filesystem's rename lock), so no
two operations here change the same entry at once; a check made before an await (EEXIST,
ENOTEMPTY, the rename target) still holds after it, except against the watch, which is why
each store call that changes names runs under ``watcher.hold`` of its bucket (remote events
of that bucket wait until the tree shows this operation's outcome). Lookups and readdir
take only a shared lock and may run during a change: they see the tree before or after it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import stat
import time

import trio

from objfs.bridge import TrioStore
from objfs.fs.coherence import Coherence
from objfs.fs.errors import FsError
from objfs.fs.inodes import InodeTable, Kind, Node
from objfs.fs.naming import check_component, in_bucket, new_attrs, object_name, touch
from objfs.fs.posix_attrs import attrs_to_headers
from objfs.fs.tree import Tree
from objfs.fs.values import Caller
from objfs.fs.watcher import Watcher
from objfs.options import MountOptions
from objfs.store.api import BucketConfig, ObjectInfo, ObjectMeta
from objfs.store.errors import InvalidName, NotFound, StoreError
from objfs.store.names import check_bucket

log = logging.getLogger(__name__)

RENAME_PARALLEL = 16
"""Objects of a directory rename renamed at once (bounded so a big tree does not flood)."""


class Names:
    """The directory tree's operations (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        options: MountOptions,
        table: InodeTable,
        tree: Tree,
        root: Node,
        watcher: Watcher,
        coherence: Coherence,
    ) -> None:
        self.store = store
        self.options = options
        self.table = table
        self.tree = tree
        self.root = root
        self.watcher = watcher
        self.coherence = coherence
        """Loads buckets before their first lookup; re-lists the all-buckets root."""

    # -- looking up ----------------------------------------------------------------------------
    async def lookup(self, parent_ino: int, name: str) -> Node:
        """The child ``name`` of ``parent_ino``; bumps its lookup count."""
        parent = await self.coherence.directory(parent_ino)
        node: Node | None
        if name == ".":
            node = parent
        elif name == "..":
            node = self.table.get(parent.parent)
        else:
            check_component(name)
            node = self.table.child(parent, name)
            if node is None and parent is self.root and self.coherence.root_polled:
                # Perhaps made by another client since we last looked.
                await self.coherence.reload_buckets()
                node = self.table.child(parent, name)
        if node is None:
            raise FsError(errno.ENOENT)
        self.table.ref(node)
        return node

    async def readdir(
        self, ino: int, start_id: int, limit: int | None = None
    ) -> list[tuple[int, Node]]:
        """Entries after readdir offset ``start_id`` (at most ``limit``: the kernel takes a
        few dozen per call, so building the whole rest each time made big listings
        quadratic); the caller refs those it returns."""
        directory = await self.coherence.directory(ino)
        if directory is self.root and self.coherence.root_polled and start_id == 0:
            await self.coherence.reload_buckets()
        return list(itertools.islice(self.table.entries(directory, start_id), limit))

    def _existing(self, parent: Node, name: str) -> Node:
        node = self.table.child(parent, name)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    # -- directories ---------------------------------------------------------------------------
    async def mkdir(self, parent_ino: int, name: str, mode: int, caller: Caller) -> Node:
        parent = await self.coherence.directory(parent_ino)
        if self.table.child(parent, name) is not None:
            raise FsError(errno.EEXIST)
        if parent.bucket is None:
            return await self._make_bucket(name)
        full = object_name(parent, name, directory=True, limit=self.options.max_name_bytes)
        attrs = new_attrs(stat.S_IFDIR, mode, caller, parent)
        async with self.watcher.hold(parent.bucket):
            info = await self.store.put(
                parent.bucket, full, b"", meta=ObjectMeta(headers=attrs_to_headers(attrs))
            )
            node = self.table.new(Kind.DIR, parent, name, attrs, info=info)
        self.table.ref(node)
        touch(parent)
        return node

    async def _make_bucket(self, name: str) -> Node:
        try:
            check_bucket(name)
        except InvalidName as e:
            raise FsError(errno.EINVAL, str(e)) from None
        await self.store.create_bucket(BucketConfig(name=name, chunk_size=self.options.chunk_size))
        node = self.tree.new_bucket_dir(self.root, name)
        self.table.ref(node)
        touch(self.root)
        return node

    async def rmdir(self, parent_ino: int, name: str, caller: Caller | None = None) -> None:
        parent = await self.coherence.directory(parent_ino)
        node = self._existing(parent, name)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        if node.is_bucket_root:
            await self.coherence.ensure_loaded(node)
            assert node.bucket is not None
            if node.children or await self.store.list(node.bucket):
                raise FsError(errno.ENOTEMPTY)
            await self.store.delete_bucket(node.bucket)
            await self.coherence.forget_bucket(node.bucket)
            touch(parent)
            return
        if node.children:
            raise FsError(errno.ENOTEMPTY)
        assert node.bucket is not None
        async with self.watcher.hold(node.bucket):
            if node.info is not None:
                # NotFound: someone else removed the marker; the goal is reached.
                with contextlib.suppress(NotFound):
                    await self._delete(node.bucket, node.info.name)
            self.table.detach(node)
        touch(parent)

    # -- files ---------------------------------------------------------------------------------
    async def unlink(self, parent_ino: int, name: str, caller: Caller | None = None) -> None:
        parent = await self.coherence.directory(parent_ino)
        node = self._existing(parent, name)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        assert node.bucket is not None
        async with self.watcher.hold(node.bucket):
            spool = node.spool
            if node.info is not None and node.file.handles > 0 and not (spool and spool.filled):
                # Open here: as on a local disk, its readers go on reading until the last one
                # closes, and the object is deleted then (release), not under them. So is a
                # file open for writing but not changed yet: its spool copies the object at
                # the first change (spool.fill), which a delete now would leave nothing to
                # copy (the write started from an empty file, reads failed with ESTALE).
                node.file.delete_on_close = node.info
            elif node.info is not None:
                with contextlib.suppress(NotFound):
                    await self._delete(node.bucket, node.info.name)
            self.table.detach(node)  # open handles keep the node; its spool is never uploaded
        if node.spool is not None and node.file.handles == 0:
            spool = node.spool
            async with spool.lock:  # an upload of the last close may still be reading it
                spool.close()
            node.file.spool = None
        touch(parent)
        node.attrs.ctime_ns = parent.attrs.ctime_ns  # its link count went to 0 (fstat shows it)

    async def link(
        self, ino: int, parent_ino: int, name: str, caller: Caller | None = None
    ) -> Node:
        raise FsError(errno.EPERM, "objects cannot have two names")

    async def symlink(self, parent_ino: int, name: str, target: str, caller: Caller) -> Node:
        parent = await self.coherence.directory(parent_ino)
        bucket = in_bucket(parent)
        full = object_name(parent, name, limit=self.options.max_name_bytes)
        if self.table.child(parent, name) is not None:
            raise FsError(errno.EEXIST)
        attrs = new_attrs(stat.S_IFLNK, 0o777, Caller(caller.uid, caller.gid, 0), parent)
        headers = attrs_to_headers(attrs, symlink=target)
        async with self.watcher.hold(bucket):
            info = await self.store.put(bucket, full, b"", meta=ObjectMeta(headers=headers))
            node = self.table.new(Kind.SYMLINK, parent, name, attrs, info=info)
        node.symlink = target
        self.table.ref(node)
        touch(parent)
        return node

    # -- rename --------------------------------------------------------------------------------
    async def rename(
        self,
        old_parent_ino: int,
        old_name: str,
        new_parent_ino: int,
        new_name: str,
        *,
        noreplace: bool = False,
        exchange: bool = False,
        caller: Caller | None = None,
    ) -> None:
        if exchange:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        old_parent = await self.coherence.directory(old_parent_ino)
        new_parent = await self.coherence.directory(new_parent_ino)
        node = self._existing(old_parent, old_name)
        if node.bucket is None or node.is_bucket_root or new_parent.bucket is None:
            raise FsError(errno.EPERM, "buckets cannot be renamed")
        if new_parent.bucket != node.bucket:
            raise FsError(errno.EXDEV)
        new_full = object_name(
            new_parent, new_name, directory=node.is_dir, limit=self.options.max_name_bytes
        )
        if node.is_dir:
            self._check_moved_names(node, new_full)
            ancestor: Node | None = new_parent
            while ancestor is not None and not ancestor.is_bucket_root:
                if ancestor is node:
                    raise FsError(errno.EINVAL, "cannot move a directory into itself")
                ancestor = self.table.find(ancestor.parent)
        target = self.table.child(new_parent, new_name)
        if target is node:
            return
        if target is not None:
            if noreplace:
                raise FsError(errno.EEXIST)
            if target.is_dir and not node.is_dir:
                raise FsError(errno.EISDIR)
            if node.is_dir and not target.is_dir:
                raise FsError(errno.ENOTDIR)
            if target.is_dir and target.children:
                raise FsError(errno.ENOTEMPTY)
        async with self.watcher.hold(node.bucket):
            if node.is_dir:
                await self._rename_dir(node, new_parent, new_name, target)
            else:
                await self._rename_file(node, new_parent, new_name, new_full, target, noreplace)
        touch(old_parent)
        touch(new_parent)
        node.attrs.ctime_ns = new_parent.attrs.ctime_ns  # a rename is a change of the inode

    def _check_moved_names(self, node: Node, new_prefix: str) -> None:
        """ENAMETOOLONG if an object below directory ``node`` would get too long a name."""
        grow = len(new_prefix.encode()) - len(node.object_name.encode())
        if grow <= 0:
            return
        longest = max(len(n.object_name.encode()) for n in self.table.walk(node))
        if longest + grow > self.options.max_name_bytes:
            raise FsError(errno.ENAMETOOLONG, "a name below the directory would be too long")

    async def _rename_file(
        self,
        node: Node,
        new_parent: Node,
        new_name: str,
        new_full: str,
        target: Node | None,
        noreplace: bool,
    ) -> None:
        assert node.bucket is not None
        if node.spool is not None:
            async with node.spool.lock:  # never rename under a running upload
                await self._rename_object(node, new_full, target, noreplace)
        else:
            await self._rename_object(node, new_full, target, noreplace)
        if target is not None:
            self.table.detach(target)
            target.attrs.ctime_ns = time.time_ns()  # its link count went to 0 (fstat shows it)
        self.table.move(node, new_parent, new_name)

    async def _rename_object(
        self, node: Node, new_full: str, target: Node | None, noreplace: bool
    ) -> None:
        assert node.bucket is not None
        if node.info is None:
            # Not uploaded yet: the upload will use the new name. The object it replaces is
            # gone now, as rename(2) says; left for the upload to overwrite, it would stay
            # for good if the file were unlinked before its close.
            if target is not None and target.info is not None:
                with contextlib.suppress(NotFound):
                    await self._delete(node.bucket, new_full)
            return
        # rename(2) replaces whatever has the new name, also an object another client stored
        # that the tree does not show yet (EEXIST would be no answer rename(2) ever gives).
        # A replaced file open here keeps its chunks for its readers until its last close,
        # as on a local disk ("write a copy, rename it over the original" under a reader).
        keep = (
            target is not None
            and target.file.handles > 0
            and target.info is not None
            and target.info.nuid != node.info.nuid
            and not target.info.is_link
        )
        node.info = await self._rename(
            node.bucket, node.info.name, new_full, replace=not noreplace, keep_replaced=keep
        )
        if keep and target is not None:
            target.file.purge_on_close = target.info

    async def _delete(self, bucket: str, name: str) -> None:
        tomb = await self.store.delete(bucket, name)
        self.watcher.removed(bucket, name, tomb.revision)

    async def _rename(
        self, bucket: str, old: str, new: str, *, replace: bool, keep_replaced: bool = False
    ) -> ObjectInfo:
        moved = await self.store.rename(
            bucket, old, new, replace=replace, keep_replaced=keep_replaced
        )
        self.watcher.removed(bucket, old, moved.revision)
        return moved

    async def _rename_dir(
        self, node: Node, new_parent: Node, new_name: str, target: Node | None
    ) -> None:
        assert node.bucket is not None
        bucket = node.bucket
        old_prefix = node.path + "/"
        new_prefix = (f"{new_parent.path}/{new_name}" if new_parent.path else new_name) + "/"
        movers = [n for n in self.table.walk(node) if n.info is not None]
        limiter = trio.CapacityLimiter(RENAME_PARALLEL)
        failed: list[tuple[ObjectInfo, StoreError]] = []

        async def move(n: Node) -> None:
            info = n.info
            assert info is not None
            new = (
                new_prefix + info.name[len(old_prefix) :] if info.name != old_prefix else new_prefix
            )
            async with limiter:
                try:
                    if n.spool is not None:
                        async with n.spool.lock:
                            n.info = await self._rename(bucket, info.name, new, replace=False)
                    else:
                        n.info = await self._rename(bucket, info.name, new, replace=False)
                except StoreError as e:
                    failed.append((info, e))

        if target is not None and target.info is not None:
            with contextlib.suppress(NotFound):
                await self._delete(bucket, target.info.name)
        async with trio.open_nursery() as nursery:
            for n in movers:
                nursery.start_soon(move, n)
        if target is not None:
            self.table.detach(target)
        self.table.move(node, new_parent, new_name)
        if failed:
            # Show what stayed behind where it still is, so the tree matches the store.
            root = self._bucket_root(node)
            for info, _ in failed:
                for n in self.table.walk(node):
                    if n.info is info:
                        n.info = None if n.is_dir else n.info
                        if not n.is_dir:
                            self.table.detach(n)
                self.tree.add(root, info)
            log.error("rename of %s: %d objects failed: %s", old_prefix, len(failed), failed[0][1])
            raise FsError(failed[0][1].errno)

    def _bucket_root(self, node: Node) -> Node:
        while not node.is_bucket_root:
            node = self.table.get(node.parent)
        return node
