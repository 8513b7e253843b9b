"""The filesystem core: lifecycle, the tree of buckets, attributes and directory listing.

``Filesystem`` is what the pyfuse3 adapter (``fuse_ops``) calls; it has no pyfuse3 and no nats
imports, raises ``FsError``/``StoreError`` (both carry an errno) and is driven directly by the
tests. Operations are split by subject into mixins: files (``files.FileOps``: open, read,
write, upload), names (``namespace.NamespaceOps``: mkdir, rename, unlink; ``links.LinkOps``:
symlinks and NATS links), extended attributes (``xattr_ops.XattrOps``), and the EROFS guard
of read-only mounts and sealed buckets (``write_guard.WriteGuard``).

Lookups and readdir are answered from the in-memory tree, which the bucket watches keep in
step with the store; no store round trip happens on those paths (except to load a bucket's
tree the first time it is entered, or to refresh the bucket list at the all-buckets root).

Entry and attribute timeouts are ``options.attr_timeout`` (``--attr-timeout``, default 1 s):
short, because another client's change must become visible soon even if an invalidation is
lost (the queue is bounded), and not zero, because every ``stat`` of a tool like ``ls -l`` or
``rsync`` would otherwise be a kernel round trip. The watcher's invalidations are what make
the view fresh in practice.
"""

from __future__ import annotations

import errno
import itertools
import logging
import stat
import time
from typing import Any

import trio

from objfs.fs import spool_dir
from objfs.fs.bucket_watch import BucketListWatch
from objfs.fs.chunk_cache import ChunkCache
from objfs.fs.errors import FsError
from objfs.fs.files import DELETE_ON_CLOSE, FileOps
from objfs.fs.handles import HandleTable
from objfs.fs.inodes import ROOT_INO, InodeTable, Kind, Node
from objfs.fs.invalidation import (
    InvalidateEntry,
    InvalidationQueue,
    Invalidator,
)
from objfs.fs.links import LinkOps
from objfs.fs.posix_attrs import Attrs, Defaults, attrs_to_headers
from objfs.fs.tree import NAME_MAX, Tree
from objfs.fs.values import Caller, SetAttr, Stat, StatFs
from objfs.fs.watcher import BucketWatch, Watcher
from objfs.fs.write_guard import WriteGuard
from objfs.fs.xattr_ops import XattrOps
from objfs.options import MountOptions
from objfs.store.api import BucketConfig, ObjectMeta
from objfs.store.errors import NotFound, StoreError
from objfs.store.names import MAX_NAME_BYTES

log = logging.getLogger(__name__)

UNLIMITED_BYTES = 1 << 50
"""Free space statfs reports for a bucket without max_bytes (1 PiB: "plenty")."""
UNLIMITED_FILES = 1 << 32


class Filesystem(WriteGuard, FileOps, LinkOps, XattrOps):
    """objfs as a set of async operations on inode numbers (see the package docstring)."""

    def __init__(self, store: Any, options: MountOptions) -> None:
        self.store = store
        self.options = options
        self.defaults = Defaults(options.uid, options.gid, options.umask)
        self.table = InodeTable()
        self.tree = Tree(self.table, self.defaults)
        self.handles = HandleTable()
        self.cache = ChunkCache(store, options.cache_size)
        self.queue = InvalidationQueue()
        self.watcher = Watcher(self.table, self.tree, self.queue, self.cache)
        self.invalidator: Invalidator | None = None
        """Set by the adapter: carries out invalidation requests (pyfuse3 calls)."""
        self.watches: dict[str, BucketWatch] = {}
        self.bucket_list: BucketListWatch | None = None
        """The bucket-list watch of an all-buckets mount (None with --bucket)."""
        self.sealed_buckets: set[str] = set()
        """Buckets the bucket-list watch has seen sealed."""
        self._load_locks: dict[str, trio.Lock] = {}
        self._pending_follow: list[BucketWatch] = []
        self._nursery: trio.Nursery | None = None
        self.spool_dir = spool_dir.create(spool_dir.base_for(options))
        self._shut_down = False
        now = time.time_ns()
        root_attrs = Attrs(
            mode=stat.S_IFDIR | self.defaults.dir_mode,
            uid=options.uid,
            gid=options.gid,
            mtime_ns=now,
            ctime_ns=now,
            atime_ns=now,
        )
        root = Node(ROOT_INO, Kind.DIR, "", ROOT_INO, options.bucket, "", root_attrs)
        root.children, root.child_ids = {}, {}
        root.lookups = 1  # the kernel always knows the root
        self.root = self.table.add_root(root)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Check (or create) the bucket and load the tree; raises StoreError (NotFound...)."""
        bucket = self.options.bucket
        if bucket is None:
            self.bucket_list = BucketListWatch(self)
            try:
                await self.bucket_list.load()
            except StoreError as e:  # e.g. no permission for advisories: list on demand
                log.warning("no bucket-list watch (%s); the root re-lists buckets", e)
                self.bucket_list = None
                await self._reload_buckets()
            return
        try:
            status = await self.store.bucket_status(bucket)
        except NotFound:
            if not self.options.create:
                raise
            status = await self.store.create_bucket(
                BucketConfig(name=bucket, chunk_size=self.options.chunk_size)
            )
        self.note_status(status)
        self.root.loaded = False
        await self.ensure_loaded(self.root)

    async def run_background(self) -> None:
        """Watch consumers, readahead and the invalidation worker; runs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.cache.spawn = nursery.start_soon
                nursery.start_soon(self.queue.serve, self.invalidator)
                pending, self._pending_follow = self._pending_follow, []
                for watch in pending:
                    nursery.start_soon(watch.follow)
                if self.bucket_list is not None:
                    nursery.start_soon(self.bucket_list.follow)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.cache.spawn = None

    async def shutdown(self) -> list[tuple[str, str, str]]:
        """Upload what is still dirty, stop the watches; returns the uploads that failed.

        Each failure is ``(path, spool_file, error_message)``; its spool file is kept. A second
        call does nothing (the mount runner also calls it when start-up fails half-way).
        """
        failures: list[tuple[str, str, str]] = []
        if self._shut_down:
            return failures
        self._shut_down = True
        for node in [n for n in self.table.nodes() if n.spool is not None]:
            spool = node.spool
            assert spool is not None
            if spool.dirty and node.attached:
                if node.writers > 0:
                    # Unmounted under a writer (SIGTERM during a copy): what it wrote so far is
                    # stored, as a close would; the user must know the file may be partial.
                    log.warning(
                        "%s was still open for writing at unmount: storing the %d bytes "
                        "written so far (the writer may not have finished)",
                        self.display_path(node),
                        spool.size,
                    )
                try:
                    await self.upload(node)
                except (FsError, StoreError) as e:
                    failures.append(
                        (self.display_path(node), str(spool.path), spool.last_error or str(e))
                    )
                    spool.close(delete=False)
                    node.spool = None
                    continue
            spool.close()
            node.spool = None
        for node in list(self.table.nodes()):  # unlinked while open, still open at unmount
            unlinked = node.extra.pop(DELETE_ON_CLOSE, None)
            if unlinked is not None:
                await self._retract(unlinked)
        for watch in list(self.watches.values()):
            await watch.close()
        self.watches.clear()
        if self.bucket_list is not None:
            await self.bucket_list.close()
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

    # -- buckets -----------------------------------------------------------------------------
    @property
    def multi_bucket(self) -> bool:
        return self.options.bucket is None

    @property
    def _root_polled(self) -> bool:
        """An all-buckets root without a live bucket-list watch: list buckets on demand."""
        return self.multi_bucket and (self.bucket_list is None or not self.bucket_list.live)

    async def ensure_loaded(self, node: Node) -> None:
        """Load a bucket directory's tree from its watch snapshot, once."""
        if node.loaded or node.bucket is None:
            return
        lock = self._load_locks.setdefault(node.bucket, trio.Lock())
        async with lock:
            if node.loaded:
                return
            watch = BucketWatch(self.store, node.bucket, node, self.watcher)
            await watch.load()
            self.watches[node.bucket] = watch
            node.loaded = True
            if self._nursery is not None:
                self._nursery.start_soon(watch.follow)
            else:
                self._pending_follow.append(watch)

    async def _reload_buckets(self) -> None:
        """Refresh the all-buckets root from the server's bucket list."""
        statuses = await self.store.list_buckets()
        names = {s.name for s in statuses}
        for status in statuses:
            self.note_status(status)
            if self.table.child(self.root, status.name) is None:
                self.tree.new_bucket_dir(self.root, status.name)
                self.queue.push(InvalidateEntry(ROOT_INO, status.name))
        for name in list(self.root.children or {}):
            if name not in names:
                await self.forget_bucket(name)

    async def forget_bucket(self, name: str) -> None:
        node = self.table.child(self.root, name)
        watch = self.watches.pop(name, None)
        if watch is not None:
            await watch.close()
        if node is not None:
            self.table.detach(node)
            self.queue.push(InvalidateEntry(ROOT_INO, name, node.ino))

    # -- helpers shared by the mixins ---------------------------------------------------------
    async def directory(self, ino: int) -> Node:
        node = self.table.get(ino)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        await self.ensure_loaded(node)
        return node

    @staticmethod
    def check_component(name: str) -> None:
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            raise FsError(errno.EINVAL, "name is not valid UTF-8") from None
        if size > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise FsError(errno.EINVAL)

    def object_name(self, parent: Node, name: str, *, directory: bool = False) -> str:
        """The object name of ``parent``'s new child ``name`` (checked against the limits)."""
        self.check_component(name)
        full = f"{parent.path}/{name}" if parent.path else name
        if directory:
            full += "/"
        if len(full.encode("utf-8")) > MAX_NAME_BYTES:
            raise FsError(errno.ENAMETOOLONG)
        return full

    def in_bucket(self, parent: Node) -> str:
        """The bucket a new entry of ``parent`` goes to (EPERM at the all-buckets root)."""
        if parent.bucket is None:
            raise FsError(errno.EPERM, "the root holds only buckets")
        return parent.bucket

    def new_attrs(self, file_type: int, mode: int, caller: Caller) -> Attrs:
        now = time.time_ns()
        return Attrs(
            mode=file_type | (mode & 0o7777 & ~caller.umask),
            uid=caller.uid,
            gid=caller.gid,
            mtime_ns=now,
            ctime_ns=now,
            atime_ns=now,
        )

    @staticmethod
    def touch(node: Node | None) -> None:
        """Move mtime and ctime of ``node`` (a directory whose entries changed) to now."""
        if node is not None:
            now = time.time_ns()
            node.attrs.mtime_ns = node.attrs.ctime_ns = now

    def display_path(self, node: Node) -> str:
        if node.bucket is None:
            return "/"
        return f"/{node.bucket}/{node.path}" if self.multi_bucket else f"/{node.path}"

    # -- attributes and listing ---------------------------------------------------------------
    def stat(self, node: Node) -> Stat:
        size = self.symlink_size(node) if node.kind is Kind.SYMLINK else node.size
        return Stat(
            ino=node.ino,
            mode=node.attrs.mode,
            nlink=2 if node.is_dir else 1,
            uid=node.attrs.uid,
            gid=node.attrs.gid,
            rdev=node.attrs.rdev,
            size=size,
            blksize=self.options.chunk_size,
            blocks=(size + 511) // 512,
            atime_ns=node.attrs.atime_ns,
            mtime_ns=node.attrs.mtime_ns,
            ctime_ns=node.attrs.ctime_ns,
            entry_timeout=self.options.attr_timeout,
            attr_timeout=self.options.attr_timeout,
        )

    async def lookup(self, parent_ino: int, name: str, caller: Caller | None = None) -> Node:
        """The child ``name`` of ``parent_ino``; bumps its lookup count."""
        parent = await self.directory(parent_ino)
        if name == ".":
            node = parent
        elif name == "..":
            node = self.table.get(parent.parent)
        else:
            self.check_component(name)
            node = self.table.child(parent, name)
            if node is None and parent is self.root and self._root_polled:
                await self._reload_buckets()  # made by another client since we last looked
                node = self.table.child(parent, name)
        if node is None:
            raise FsError(errno.ENOENT)
        self.table.ref(node)
        return node

    def getattr(self, ino: int) -> Node:
        return self.table.get(ino)

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
        """Entries after readdir offset ``start_id`` (at most ``limit``: the kernel takes a
        few dozen per call, so building the whole rest each time made big listings
        quadratic); the caller refs those it returns."""
        directory = await self.directory(ino)
        if directory is self.root and self._root_polled and start_id == 0:
            await self._reload_buckets()
        return list(itertools.islice(self.table.entries(directory, start_id), limit))

    async def statfs(self) -> StatFs:
        if self.options.bucket is not None:
            statuses = [await self.store.bucket_status(self.options.bucket)]
        else:
            statuses = await self.store.list_buckets()
        for status in statuses:
            self.note_status(status)
        used = sum(s.size for s in statuses)
        limits = [s.config.max_bytes for s in statuses]
        total = sum(limits) if limits and all(m > 0 for m in limits) else used + UNLIMITED_BYTES
        bsize = self.options.chunk_size
        free = max(0, total - used) // bsize
        files = sum(s.objects for s in statuses)
        return StatFs(
            bsize=bsize,
            frsize=bsize,
            blocks=total // bsize,
            bfree=free,
            bavail=free,
            files=files + UNLIMITED_FILES,
            ffree=UNLIMITED_FILES,
            favail=UNLIMITED_FILES,
            namemax=NAME_MAX,
        )

    async def setattr(self, ino: int, changes: SetAttr, fh: int | None, caller: Caller) -> Node:
        node = self.table.get(ino)
        only_atime = all(
            v is None
            for v in (changes.mode, changes.uid, changes.gid, changes.size, changes.mtime_ns)
        )
        if only_atime:
            if changes.atime_ns is not None:
                node.attrs.atime_ns = changes.atime_ns  # atime is not persisted
            return node
        self.refuse_changes(node)  # read-only mount, sealed bucket: EROFS
        now = time.time_ns()
        if changes.size is not None:
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if node.kind is not Kind.FILE:
                raise FsError(errno.EINVAL)
            await self.truncate(node, changes.size)
            node.attrs.mtime_ns = now
        if changes.mode is not None:
            node.attrs.mode = stat.S_IFMT(node.attrs.mode) | (changes.mode & 0o7777)
        if changes.uid is not None:
            node.attrs.uid = changes.uid
        if changes.gid is not None:
            node.attrs.gid = changes.gid
        if changes.atime_ns is not None:
            node.attrs.atime_ns = changes.atime_ns
        if changes.mtime_ns is not None:
            node.attrs.mtime_ns = changes.mtime_ns
        node.attrs.ctime_ns = now
        if node.spool is not None and node.spool.dirty:
            if node.writers == 0:
                await self.upload(node)  # a truncate of a file nobody has open
            return node  # otherwise the attributes travel with the pending upload
        if changes.size is None or node.spool is None:
            await self.persist_attrs(node)
        return node

    async def persist_attrs(self, node: Node) -> None:
        """Store ``node``'s attributes as headers: update_meta, no data copied."""
        if node.bucket is None or node.is_bucket_root:
            return  # the root and bucket directories have no object to carry them
        if node.info is None and not node.is_dir:
            return  # a file not uploaded yet: its upload carries them
        with self.watcher.hold(node.bucket):
            if node.info is None:
                headers = attrs_to_headers(node.attrs)
                info = await self.store.put(
                    node.bucket, node.object_name, b"", meta=ObjectMeta(headers=headers)
                )
            else:
                meta = node.info.meta
                meta.headers = attrs_to_headers(node.attrs, node.info.headers, symlink=node.symlink)
                info = await self.store.update_meta(node.bucket, node.info.name, meta)
            node.info = info
