"""The filesystem core's façade: ``Filesystem`` builds the components and delegates to them.

``Filesystem`` is what the pyfuse3 adapter (``fuse_ops``) calls; it has no pyfuse3 and no nats
imports, raises ``FsError``/``StoreError`` (both carry an errno) and is driven directly by the
tests. Each operation is a few lines: the write guard's check first if it may change
something (one mechanism for every such operation), then the component that owns it:

- ``guard.WriteGuard``: EROFS on read-only mounts and sealed buckets;
- ``names.Names``: lookup, readdir, mkdir, rmdir, unlink, rename, plain symlinks;
- ``links.Links``: ``ln -s`` as NATS links, readlink;
- ``special.Special``: mknod (regular files, fifos, sockets, device nodes);
- ``files.Files``: handles, open/create/read/write/flush/fsync/release, uploads;
- ``attributes.Attributes``: stat, setattr, statfs;
- ``xattr_ops.Xattrs``: extended attributes;
- ``coherence.Coherence``: bucket loading, the watches, the invalidation worker.

Each component gets what it uses as constructor arguments (the shared tables and the store,
other components, or a single callable where only one of their operations is needed, as
mountpoint-s3's ``S3Filesystem`` holds its metablock, prefetcher and uploader). docs/design.md
has the graph of who holds whom and the concurrency contract.
"""

from __future__ import annotations

import logging
import os
import stat
import time

import trio

from objfs.bridge import TrioStore
from objfs.fs import spool_dir
from objfs.fs.attributes import Attributes
from objfs.fs.bucket_watch import BucketListWatch
from objfs.fs.chunk_cache import ChunkCache
from objfs.fs.coherence import Coherence
from objfs.fs.files import Failure, Files
from objfs.fs.guard import WriteGuard
from objfs.fs.handles import Handle, HandleTable
from objfs.fs.inodes import ROOT_INO, InodeTable, Kind, Node
from objfs.fs.invalidation import InvalidationQueue, Invalidator
from objfs.fs.links import Links
from objfs.fs.names import Names
from objfs.fs.naming import display_path
from objfs.fs.posix_attrs import Attrs, Defaults
from objfs.fs.special import Special
from objfs.fs.stats import Stats
from objfs.fs.tree import Tree
from objfs.fs.values import Caller, SetAttr, Stat, StatFs
from objfs.fs.watcher import Watcher
from objfs.fs.xattr_ops import Xattrs
from objfs.options import MountOptions

log = logging.getLogger(__name__)

class Filesystem:
    """objfs as a set of async operations on inode numbers (see the module docstring)."""

    def __init__(self, store: TrioStore, options: MountOptions) -> None:
        self.store = store
        self.options = options
        self.defaults = Defaults(options.uid, options.gid, options.umask)
        self.table = InodeTable()
        self.tree = Tree(self.table, self.defaults)
        self.handles = HandleTable()
        self.stats = Stats()
        self.stats.pending = self._pending
        self.cache = ChunkCache(store, options.cache_size, self.stats)
        self.queue = InvalidationQueue()
        self.watcher = Watcher(self.table, self.tree, self.queue, self.cache, self.stats)
        self.spool_dir = spool_dir.create(spool_dir.base_for(options), spool_dir.origin_of(options))
        self.root = self.table.add_root(self._root_node())
        self.guard = WriteGuard(options.read_only, self.table, self.handles)
        self.coherence = Coherence(
            store, options, self.table, self.tree, self.root, self.watcher, self.queue, self.guard
        )
        self.files = Files(
            store,
            options,
            self.table,
            self.handles,
            self.cache,
            self.spool_dir,
            self.watcher,
            self.coherence.directory,
            self.stats,
        )
        self.names = Names(
            store, options, self.table, self.tree, self.root, self.watcher, self.coherence
        )
        self.special = Special(store, options, self.table, self.watcher, self.coherence)
        self.links = Links(
            store,
            options,
            self.table,
            self.root,
            self.watcher,
            self.coherence,
            self.names.symlink,
        )
        self.attributes = Attributes(
            store,
            options,
            self.table,
            self.watcher,
            self.files,
            self.links.symlink_size,
            self.guard.note_status,
        )
        self.xattrs = Xattrs(
            store, self.table, self.watcher, self.files.upload, self.guard.note_status
        )
        self._shut_down = False

    def _root_node(self) -> Node:
        now = time.time_ns()
        attrs = Attrs(
            mode=stat.S_IFDIR | self.defaults.dir_mode,
            uid=self.options.uid,
            gid=self.options.gid,
            mtime_ns=now,
            ctime_ns=now,
            atime_ns=now,
        )
        root = Node(ROOT_INO, Kind.DIR, "", ROOT_INO, self.options.bucket, "", attrs)
        root.lookups = 1  # the kernel always knows the root
        return root

    def _pending(self) -> list[tuple[str, int]]:
        """Files whose changes are not uploaded yet (for ``Stats``), by displayed path."""
        return [
            (display_path(n, multi_bucket=self.options.bucket is None), n.spool.size)
            for n in self.table.nodes()
            if n.spool is not None and n.spool.dirty and n.attached
        ]

    # -- state the adapter and the tests reach -------------------------------------------------
    @property
    def invalidator(self) -> Invalidator | None:
        """Set by the adapter: carries out invalidation requests (pyfuse3 calls)."""
        return self.coherence.invalidator

    @invalidator.setter
    def invalidator(self, invalidator: Invalidator | None) -> None:
        self.coherence.invalidator = invalidator

    @property
    def sealed_buckets(self) -> set[str]:
        return self.guard.sealed

    @property
    def bucket_list(self) -> BucketListWatch | None:
        return self.coherence.bucket_list

    @property
    def multi_bucket(self) -> bool:
        return self.coherence.multi_bucket

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, *, background: bool = False) -> None:
        """Check (or create) the bucket and load the tree; raises StoreError (NotFound...).

        ``background``: a ``--bucket`` mount's tree is loaded by ``run_background`` instead,
        operations in the bucket waiting for it (``Coherence``)."""
        await self.coherence.start(background=background)

    async def run_background(self) -> None:
        """Watch consumers, readahead and the invalidation worker; runs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self.cache.spawn = self.files.early.spawn = nursery.start_soon
                self.attributes.deferred.spawn = nursery.start_soon
                self.coherence.run(nursery)
                nursery.start_soon(self.files.retry.run)
                await trio.sleep_forever()
        finally:
            self.coherence.stopped()
            self.cache.spawn = self.files.early.spawn = None
            self.attributes.deferred.spawn = None

    async def shutdown(self) -> list[Failure]:
        """Upload what is still dirty, stop the watches; returns the uploads that failed.

        Each failure is ``(path, spool_file, error_message)``; its spool file is kept. A second
        call does nothing (the mount runner also calls it when start-up fails half-way).
        """
        if self._shut_down:
            return []
        self._shut_down = True
        await self.attributes.deferred.settle_all()
        failures = await self.files.shutdown()
        await self.coherence.close()
        if not failures:
            spool_dir.remove(self.spool_dir)
        return failures

    def fuse_options(self) -> set[str]:
        name = self.options.bucket or "all"
        opts = {f"fsname=objfs:{name}", "subtype=objfs", "default_permissions"}
        if self.options.read_only:
            opts.add("ro")
        if self.options.allow_other:
            opts.add("allow_other")
        opts.update(self.options.fuse_options)
        return opts

    # -- attributes and names ------------------------------------------------------------------
    def stat(self, node: Node) -> Stat:
        return self.attributes.stat(node)

    def getattr(self, ino: int) -> Node:
        return self.table.get(ino)

    def dots(self, ino: int) -> tuple[Node, Node] | None:
        """A directory's ``.`` and ``..`` (the root is its own parent); None once it is gone."""
        directory = self.table.find(ino)
        if directory is None:
            return None
        return directory, self.table.find(directory.parent) or directory

    async def setattr(self, ino: int, changes: SetAttr, fh: int | None, caller: Caller) -> Node:
        self.guard.setattr(ino, changes)
        return await self.attributes.setattr(ino, changes)

    async def statfs(self) -> StatFs:
        return await self.attributes.statfs()

    async def directory(self, ino: int) -> Node:
        """Directory ``ino`` (ENOTDIR), its bucket loaded: what opendir checks."""
        return await self.coherence.directory(ino)

    async def lookup(self, parent_ino: int, name: str, caller: Caller | None = None) -> Node:
        """The child ``name`` of ``parent_ino``; bumps its lookup count."""
        return await self.names.lookup(parent_ino, name)

    def ref(self, node: Node) -> None:
        """A readdirplus entry reached the kernel (one lookup reference)."""
        self.table.ref(node)

    def forget(self, items: list[tuple[int, int]]) -> None:
        """Drop kernel references; never raises (pyfuse3's rule)."""
        for ino, count in items:
            try:
                self.table.forget(ino, count)
            except Exception:
                log.exception("forget(%d, %d) failed", ino, count)

    async def readdir(
        self, ino: int, start_id: int, limit: int | None = None
    ) -> list[tuple[int, Node]]:
        """Entries after readdir offset ``start_id`` (at most ``limit``); the caller refs
        those it returns."""
        return await self.names.readdir(ino, start_id, limit)

    async def mkdir(self, parent_ino: int, name: str, mode: int, caller: Caller) -> Node:
        self.guard.entry(parent_ino, name)
        return await self.names.mkdir(parent_ino, name, mode, caller)

    async def rmdir(self, parent_ino: int, name: str, caller: Caller | None = None) -> None:
        self.guard.entry(parent_ino, name)
        await self.names.rmdir(parent_ino, name, caller)

    async def unlink(self, parent_ino: int, name: str, caller: Caller | None = None) -> None:
        self.guard.entry(parent_ino, name)
        await self._settle_entry(parent_ino, name)
        await self.names.unlink(parent_ino, name, caller)

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
        self.guard.entry(old_parent_ino, old_name)
        self.guard.entry(new_parent_ino, new_name)
        await self._settle_entry(old_parent_ino, old_name)
        await self._settle_entry(new_parent_ino, new_name)
        await self.names.rename(
            old_parent_ino,
            old_name,
            new_parent_ino,
            new_name,
            noreplace=noreplace,
            exchange=exchange,
            caller=caller,
        )

    async def link(
        self, ino: int, parent_ino: int, name: str, caller: Caller | None = None
    ) -> Node:
        self.guard.link(ino, parent_ino, name)
        await self._settle(ino)
        return await self.names.link(ino, parent_ino, name, caller)

    async def symlink(self, parent_ino: int, name: str, target: str, caller: Caller) -> Node:
        self.guard.entry(parent_ino, name)
        return await self.links.symlink(parent_ino, name, target, caller)

    def readlink(self, ino: int) -> str:
        return self.links.readlink(ino)

    async def _settle(self, ino: int) -> None:
        """Store attribute changes still pending (attr_flush) before the object is touched."""
        await self.attributes.deferred.settle(self.table.find(ino))

    async def _settle_entry(self, parent_ino: int, name: str) -> None:
        parent = self.table.find(parent_ino)
        if parent is not None:
            await self.attributes.deferred.settle(self.table.child(parent, name))

    # -- files ---------------------------------------------------------------------------------
    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, caller: Caller
    ) -> tuple[Handle, Node]:
        self.guard.entry(parent_ino, name)
        existing = self.files.made_meanwhile(parent_ino, name, flags, caller)
        if existing is None:
            return await self.files.create(parent_ino, name, mode, flags, caller)
        handle, _ = await self.open(existing.ino, flags & ~os.O_CREAT, caller)
        self.table.ref(existing)  # the kernel counts a create's entry as a lookup
        return handle, existing

    async def mknod(self, parent_ino: int, name: str, mode: int, rdev: int, caller: Caller) -> Node:
        self.guard.entry(parent_ino, name)
        return await self.special.mknod(parent_ino, name, mode, rdev, caller)

    async def open(self, ino: int, flags: int, caller: Caller | None = None) -> tuple[Handle, bool]:
        """Open inode ``ino``; returns the handle and whether the kernel may keep its cache."""
        self.guard.open(ino, flags)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            await self._settle(ino)
        return await self.files.open(ino, flags, caller)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        data = await self.files.read(fh, offset, size)
        self.stats.bytes_read += len(data)
        return data

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        self.guard.write(fh)
        written = await self.files.write(fh, offset, data)
        self.stats.bytes_written += written
        return written

    async def flush(self, fh: int) -> None:
        await self.files.flush(fh)

    async def fsync(self, fh: int, datasync: bool = False) -> None:
        await self.files.fsync(fh, datasync)
        await self.attributes.deferred.settle(self.handles.get(fh).node)

    async def release(self, fh: int) -> None:
        await self.files.release(fh)

    # -- extended attributes -------------------------------------------------------------------
    async def getxattr(self, ino: int, name: str) -> bytes:
        return await self.xattrs.getxattr(ino, name)

    async def listxattr(self, ino: int) -> list[str]:
        return await self.xattrs.listxattr(ino)

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        self.guard.inode(ino)
        await self._settle(ino)
        await self.xattrs.setxattr(ino, name, value)

    async def removexattr(self, ino: int, name: str) -> None:
        self.guard.inode(ino)
        await self._settle(ino)
        await self.xattrs.removexattr(ino, name)
