"""Keeps the tree in step with the store: bucket loading, the watches, the invalidation worker.

``Coherence`` owns everything that runs in the background or reconciles the tree with the
store: one ``BucketWatch`` per loaded bucket (started the first time the bucket is entered),
the ``BucketListWatch`` of an all-buckets mount (or, without one, re-listing the buckets on
demand at the root), and the worker that hands queued invalidations to the adapter. The
operations find directories through ``directory`` so that a bucket is loaded before its
first lookup; lookups and readdir are then answered from memory, no store round trip.

``run(nursery)`` starts the background tasks; watches of buckets loaded before it (during
``start``) wait in ``_pending_follow`` until then.

A ``--bucket`` mount may load its bucket in the background (``start(background=True)``, what
``objfs mount`` does): ``start`` then only checks (or creates) the bucket, one round trip,
and ``run`` starts the load. Every operation that needs the bucket's tree (lookup, readdir,
create, ...) goes through ``directory``, so it waits for the load under the bucket's lock,
exactly as the first entry of a bucket in an all-buckets mount waits for its snapshot; a
``getattr`` of the root does not wait (it shows the directory, not its entries). Why: the
snapshot is one message per object (at 100,000 objects ~3 s on a two-core machine), and the
kernel mount, hence readiness, used to wait for it; a mount that answers at once lets a
service manager or ``mount -a`` go on while the tree comes in, and what needs the tree waits
for it anyway. A failed load is logged (an error, with the reason) and kept in
``load_error``; it is not retried in the background, and not papered over with an empty
tree: each operation in the bucket tries the load again and fails with the store's error
(EIO, ETIMEDOUT...) while it keeps failing, so users see an error, never a hang or an empty
directory.
"""

from __future__ import annotations

import errno
import logging

import trio

from objfs.bridge import TrioStore
from objfs.fs.bucket_watch import BucketListWatch
from objfs.fs.errors import FsError
from objfs.fs.guard import WriteGuard
from objfs.fs.inodes import ROOT_INO, InodeTable, Node
from objfs.fs.invalidation import InvalidateEntry, InvalidationQueue, Invalidator
from objfs.fs.tree import Tree
from objfs.fs.watcher import BucketWatch, Watcher
from objfs.options import MountOptions
from objfs.store.api import BucketConfig
from objfs.store.errors import NotFound, StoreError

log = logging.getLogger(__name__)


class Coherence:
    """Loads buckets into the tree and keeps them fresh (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        options: MountOptions,
        table: InodeTable,
        tree: Tree,
        root: Node,
        watcher: Watcher,
        queue: InvalidationQueue,
        guard: WriteGuard,
    ) -> None:
        self.store = store
        self.options = options
        self.table = table
        self.tree = tree
        self.root = root
        self.watcher = watcher
        self.queue = queue
        self.guard = guard
        self.invalidator: Invalidator | None = None
        """Set by the adapter (through the façade): carries out invalidations (pyfuse3)."""
        self.watches: dict[str, BucketWatch] = {}
        """The watch of each loaded bucket; an entry exists from its snapshot on."""
        self.bucket_list: BucketListWatch | None = None
        """The bucket-list watch of an all-buckets mount (None with --bucket)."""
        # Bucket roots (by inode) whose objects are in the tree. A bucket is loaded by one
        # task at a time: its lock in ``_load_locks`` is held across the snapshot's awaits,
        # and a lookup that arrives meanwhile waits for the snapshot instead of answering
        # from a half-built tree.
        self._loaded: set[int] = set()
        self._load_locks: dict[str, trio.Lock] = {}
        self._pending_follow: list[BucketWatch] = []
        self._nursery: trio.Nursery | None = None
        self._load_later = False
        """``start(background=True)`` left the root bucket's load to ``run``."""
        self.loading = trio.Event()
        """Set once the background load of a ``--bucket`` mount's bucket ended (loaded or
        failed: see ``load_error``); set at once when ``start`` loaded it itself."""
        self.load_error: StoreError | None = None
        """Why the background load failed (None: it did not, or has not ended)."""

    @property
    def multi_bucket(self) -> bool:
        return self.options.bucket is None

    @property
    def root_polled(self) -> bool:
        """An all-buckets root without a live bucket-list watch: list buckets on demand."""
        return self.multi_bucket and (self.bucket_list is None or not self.bucket_list.live)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, *, background: bool = False) -> None:
        """Check (or create) the bucket and load the tree; raises StoreError (NotFound...).

        ``background`` (a ``--bucket`` mount): return once the bucket is known to exist; the
        tree is loaded by ``run`` (see the module docstring)."""
        bucket = self.options.bucket
        if bucket is None:
            self.loading.set()
            self.bucket_list = BucketListWatch(
                self.store, self.tree, self.root, self.queue, self.guard, self.forget_bucket
            )
            try:
                await self.bucket_list.load()
            except StoreError as e:  # e.g. no permission for advisories: list on demand
                log.warning("no bucket-list watch (%s); the root re-lists buckets", e)
                self.bucket_list = None
                await self.reload_buckets()
            return
        try:
            # Not counted: that would read every meta subject once more, before the watch
            # snapshot reads them all again (at 100,000 objects ~3 s of the start-up).
            status = await self.store.bucket_status(bucket, count=False)
        except NotFound:
            if not self.options.create:
                raise
            status = await self.store.create_bucket(
                BucketConfig(name=bucket, chunk_size=self.options.chunk_size)
            )
        self.guard.note_status(status)
        if background:
            self._load_later = True
            return
        await self.ensure_loaded(self.root)
        self.loading.set()

    def run(self, nursery: trio.Nursery) -> None:
        """Start the invalidation worker and the watches in ``nursery`` (which outlives the
        mount's requests); watches of buckets loaded later start there too."""
        self._nursery = nursery
        nursery.start_soon(self.queue.serve, self.invalidator)
        pending, self._pending_follow = self._pending_follow, []
        for watch in pending:
            nursery.start_soon(watch.follow)
        if self.bucket_list is not None:
            nursery.start_soon(self.bucket_list.follow)
        if self._load_later:
            self._load_later = False
            nursery.start_soon(self._load_in_background)

    async def _load_in_background(self) -> None:
        """Load the ``--bucket`` mount's bucket once; a failure is logged and kept (the
        operations that need the tree try again, and fail with the store's error)."""
        started = trio.current_time()
        try:
            await self.ensure_loaded(self.root)
        except StoreError as e:
            self.load_error = e
            log.error(
                "bucket %s could not be loaded: %s; operations in it fail until a load works "
                "(each one tries again)",
                self.options.bucket,
                e,
            )
        except Exception:  # a bug must not end run_background, and the mount, either
            log.exception("bucket %s: unexpected error loading it", self.options.bucket)
        else:
            log.info(
                "bucket %s loaded: %d inodes in %.1f s",
                self.options.bucket,
                len(self.table),
                trio.current_time() - started,
            )
        finally:
            self.loading.set()

    def stopped(self) -> None:
        """``run``'s nursery is gone: watches loaded from now on wait for the next ``run``."""
        self._nursery = None

    async def close(self) -> None:
        """Stop every watch."""
        for watch in list(self.watches.values()):
            await watch.close()
        self.watches.clear()
        if self.bucket_list is not None:
            await self.bucket_list.close()

    # -- loading -----------------------------------------------------------------------------
    def loaded(self, node: Node) -> bool:
        """False for a bucket directory whose objects are not in the tree yet."""
        return not node.is_bucket_root or node.ino in self._loaded

    async def directory(self, ino: int) -> Node:
        """Directory ``ino``, its bucket loaded (ENOENT, ENOTDIR)."""
        node = self.table.get(ino)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        await self.ensure_loaded(node)
        return node

    async def ensure_loaded(self, node: Node) -> None:
        """Load a bucket directory's tree from its watch snapshot, once."""
        if self.loaded(node) or node.bucket is None:
            return
        lock = self._load_locks.setdefault(node.bucket, trio.Lock())
        async with lock:
            if self.loaded(node):
                return
            watch = BucketWatch(self.store, node.bucket, node, self.watcher)
            try:
                await watch.load()
            except BaseException:
                # A failed (or cancelled) load: end its consumer now, not at the server's
                # inactivity threshold; the next operation starts a new watch.
                await watch.close()
                raise
            self.load_error = None
            self.watches[node.bucket] = watch
            self._loaded.add(node.ino)
            if self._nursery is not None:
                self._nursery.start_soon(watch.follow)
            else:
                self._pending_follow.append(watch)

    # -- the bucket list ---------------------------------------------------------------------
    async def reload_buckets(self) -> None:
        """Refresh the all-buckets root from the server's bucket list."""
        statuses = await self.store.list_buckets()
        names = {s.name for s in statuses}
        for status in statuses:
            self.guard.note_status(status)
            if self.table.child(self.root, status.name) is None:
                self.tree.new_bucket_dir(self.root, status.name)
                self.queue.push(InvalidateEntry(ROOT_INO, status.name))
        for name in list(self.root.children or {}):
            if name not in names:
                await self.forget_bucket(name)

    async def forget_bucket(self, name: str) -> None:
        """Bucket ``name`` is gone: stop its watch, take its directory out of the root."""
        node = self.table.child(self.root, name)
        watch = self.watches.pop(name, None)
        if watch is not None:
            await watch.close()
        if node is not None:
            self.table.detach(node)
            self.queue.push(InvalidateEntry(ROOT_INO, name, node.ino))
