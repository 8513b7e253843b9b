"""Keeps the tree in step with the store: one watch per bucket, applied to the inode table.

A watch delivers the bucket's current objects, ``snapshot_end``, then live changes. The
snapshot builds the bucket's tree (``load``); later events (``follow``) update it and queue
kernel invalidations, so lookups and readdir are answered from memory without a round trip
and stay fresh across clients.

This mount's own writes come back through the watch too. They are recognised and not
invalidated: a put whose revision is not newer than what the node already holds is ours (or
stale), and a tombstone whose nuid is not the node's current one is for an older version.
A name this mount removed (unlink, rmdir, or renamed away) has no node left to compare with,
so the removal's revision is kept (``removed``) until the watch delivers the tombstone: a put
of that name from before the removal (the upload of a ``config.lock`` that git then renamed,
delivered late on a busy machine) would otherwise bring the name back until the tombstone
arrived, and git's next ``O_EXCL`` create of it would fail with EEXIST.

What each remote change invalidates in the kernel, and nothing more:

- a new name: the parent's dentry for it (a negative dentry may be cached) and the parent's
  attributes and listing;
- a deleted or renamed-away name: the parent's dentry (with the inode it named) and listing;
- a new version of an object (new nuid: overwrite): the inode's attributes and page cache;
- a meta-only change (same nuid: rename target, chmod, metadata, description): the inode's
  attributes only;
- a change of kind (a file replaced by a link, or the other way): the old inode goes (dentry
  invalidated), a new inode takes the name.

Only inodes and directories the kernel holds (lookup count > 0, or the root) are invalidated.

A node being written here (it has a spool) is not overwritten from outside while the local
writer works: the remote versions are remembered (``Node.file.remote``) and, when the writer is done
(``local_done``), the newest is applied if it is newer than what this mount uploaded, or
logged as overwritten (last close wins, as on any object store; both uploads happened and
other clients saw the first one). The watch may report this mount's own upload before the
put returns; ``uploaded`` then takes it out of the remembered versions, so only changes
made elsewhere are applied or reported.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import trio

from objfs.bridge import TrioStore
from objfs.fs.chunk_cache import ChunkCache
from objfs.fs.inodes import ROOT_INO, InodeTable, Node
from objfs.fs.invalidation import InvalidateEntry, InvalidateInode, InvalidationQueue
from objfs.fs.stats import Stats
from objfs.fs.tree import Tree, kind_of
from objfs.store.api import ObjectInfo, WatchEvent
from objfs.store.errors import NotFound, StoreError

log = logging.getLogger(__name__)

RETRY_DELAY = 1.0
"""Seconds between attempts to re-establish a failed watch (of a bucket or the bucket list)."""

DEFER_BOUND = 1.0
"""Seconds a remote change may wait behind overlapping local operations of its bucket before
new ones wait for the running ones to end (see ``Watcher.hold``)."""


class Watcher:
    """Applies watch events of any bucket to the tree."""

    def __init__(
        self,
        table: InodeTable,
        tree: Tree,
        queue: InvalidationQueue,
        cache: ChunkCache,
        stats: Stats,
    ) -> None:
        self.table = table
        self.stats = stats
        self.tree = tree
        self.queue = queue
        self.cache = cache
        # Concurrency: ``hold`` spans the awaits of an operation's store calls; the counts in
        # ``_held`` (and the tasks holding, ``_holders``), the ``_deferred`` list and
        # ``_deferred_since`` are changed only by code that does not await, so an event is
        # either applied at once or deferred and applied when the last hold of its bucket
        # ends, never in the middle of an operation on that bucket. ``hold`` awaits only
        # before it counts itself, at the barrier (``_idle``: set when the bucket's last hold
        # ends), so that deferred events cannot wait without bound.
        self.defer_bound = DEFER_BOUND
        self._held: dict[str, int] = {}
        self._holders: dict[str, dict[trio.lowlevel.Task, int]] = {}
        self._deferred: list[tuple[Node, WatchEvent]] = []
        self._deferred_since: dict[str, float] = {}
        self._idle: dict[str, trio.Event] = {}
        # (bucket, name) -> the revision at which this mount removed the name; changed only
        # by code that does not await (see ``removed``).
        self._removed: dict[tuple[str, str], int] = {}
        self._quiet = False
        """True while a first snapshot is applied: no invalidations (see apply_snapshot)."""

    def removed(self, bucket: str, name: str, revision: int) -> None:
        """This mount removed ``name`` with a store change of ``revision`` (a tombstone, or a
        rename's new meta): older puts of the name the watch still delivers are stale."""
        key = (bucket, name)
        self._removed[key] = max(revision, self._removed.get(key, 0))

    @contextlib.asynccontextmanager
    async def hold(self, bucket: str) -> AsyncIterator[None]:
        """Defer events of ``bucket`` while this mount changes it, then apply them.

        The watch may deliver the events of our own store calls before those calls return
        (and before the tree shows their outcome): applied then, a rename's tombstone would
        remove the moved node and its put would add a duplicate. Applied afterwards they
        are recognised as ours and skipped.

        Deferred events are applied when the bucket has no hold left, so local operations
        that keep overlapping (a ``cp -r`` or ``git checkout`` into the mount) would hide
        other clients' changes for as long as they run. Once the oldest deferred event has
        waited ``defer_bound``, a new hold first waits for the running ones to end (a
        barrier, as a writer-preferring lock lets a waiting writer in): the deferred events
        are applied in that gap, which the tree's consistency needs (an event applied while
        some operation is between its store call and its tree update could duplicate or
        drop a node). Applying only the events of names no running operation touches would
        avoid the wait, but holds do not say which names they touch (a directory rename
        touches a whole prefix).

        The barrier wait is bounded by ``defer_bound`` too: an operation may wait at it while
        holding a spool lock (an xattr update takes the lock, then the hold) that a running
        one needs (a rename takes the hold, then the lock); the bound turns that cycle into
        a short delay instead of a deadlock. A task that holds the bucket already (a nested
        hold: ``ln -s`` falling back to a plain symlink) never waits at it.
        """
        task = trio.lowlevel.current_task()
        holders = self._holders.setdefault(bucket, {})
        if task not in holders and self.draining(bucket):
            with trio.move_on_after(self.defer_bound) as waited:
                await self._idle.setdefault(bucket, trio.Event()).wait()
            if waited.cancelled_caught and bucket in self._deferred_since:
                # A running hold outlasted the wait (a long directory rename, or the lock
                # cycle above): go on, and try the barrier again a bound later rather than
                # delay every operation that comes meanwhile.
                self._deferred_since[bucket] = trio.current_time()
            holders = self._holders.setdefault(bucket, {})
        self._held[bucket] = self._held.get(bucket, 0) + 1
        holders[task] = holders.get(task, 0) + 1
        try:
            yield
        finally:
            holders[task] -= 1
            if not holders[task]:
                del holders[task]
            self._held[bucket] -= 1
            if not self._held[bucket]:
                del self._held[bucket]
                del self._holders[bucket]
                self._deferred_since.pop(bucket, None)
                mine: list[tuple[Node, WatchEvent]] = []
                rest: list[tuple[Node, WatchEvent]] = []
                for root, event in self._deferred:  # only events with an info are deferred
                    assert event.info is not None
                    (mine if event.info.bucket == bucket else rest).append((root, event))
                self._deferred = rest
                for root, event in mine:
                    self.apply(root, event)
                idle = self._idle.pop(bucket, None)
                if idle is not None:
                    idle.set()

    def draining(self, bucket: str) -> bool:
        """Whether a deferred event of ``bucket`` has waited ``defer_bound`` (new holds wait)."""
        since = self._deferred_since.get(bucket)
        return since is not None and trio.current_time() - since >= self.defer_bound

    def apply_snapshot(self, root: Node, infos: list[ObjectInfo], *, reconcile: bool) -> None:
        """Show every object of ``infos``; with ``reconcile`` also drop what is gone.

        A first snapshot (not ``reconcile``) queues no invalidation per name: the kernel
        cannot hold a dentry (positive or negative) below a bucket directory that was never
        loaded, since every lookup and readdir there waits for this load. Only the bucket
        directory's own attributes may have been cached (an all-buckets root listed it):
        one request for it. Per-name requests here, at 100,000 objects, were 200,000 pushes
        to a queue of 4,096 that dropped the rest (with a log line per thousand).

        Into an empty bucket directory no local operation holds (nor removed a name of), the
        first snapshot goes to ``Tree.add_all`` directly: each of ``apply``'s checks (a newer
        node there, a name this mount removed, a change to defer) compares with nothing. The cyclic
        garbage collector is off meanwhile: building 100,000 nodes (each with its attributes
        and file state) set off its collections over and over, a quarter of the build's time,
        and they found nothing to free. The new objects then join the oldest generation
        (they are long-lived), which the next full collection examines as usual."""
        if not reconcile:
            bucket = root.bucket
            if (
                not root.children
                and bucket not in self._held
                and not any(key[0] == bucket for key in self._removed)
            ):
                collecting = gc.isenabled()
                gc.disable()
                try:
                    self.tree.add_all(root, infos)
                finally:
                    # Straight into the oldest generation, unscanned (freeze and unfreeze
                    # move lists, nothing is examined): else the first collections after
                    # this scanned every new node again, young then middle-aged, during the
                    # first listing (a sort of its 100,000 entries took 0.5 s).
                    gc.freeze()
                    gc.unfreeze()
                    if collecting:
                        gc.enable()
            else:
                self._quiet = True
                try:
                    for info in infos:
                        self.apply(root, WatchEvent("put", info))
                finally:
                    self._quiet = False
            if root.lookups > 0 or root.ino == ROOT_INO:
                self.queue.push(InvalidateInode(root.ino, attr_only=False))
            return
        for info in infos:
            self.apply(root, WatchEvent("put", info))
        # A new watch starts after every change it replaces: no stale put can follow it.
        for key in [k for k in self._removed if k[0] == root.bucket]:
            del self._removed[key]
        live = {info.name for info in infos}
        for node in list(self.table.walk(root)):
            if node.info is not None and node.info.name not in live and node.spool is None:
                self.apply(root, WatchEvent("delete", node.info))

    def apply(self, root: Node, event: WatchEvent) -> None:
        if event.info is None:
            return
        if event.info.bucket in self._held:
            self._deferred.append((root, event))
            self._deferred_since.setdefault(event.info.bucket, trio.current_time())
            return
        if event.kind == "put":
            self._put(root, event.info)
        elif event.kind == "delete":
            self._delete(root, event.info)

    def _put(self, root: Node, info: ObjectInfo) -> None:
        node = self.tree.find(root, info.name)
        if node is None and info.revision <= self._removed.get((info.bucket, info.name), -1):
            return  # from before this mount removed the name
        if node is not None:
            if node.info is not None and node.info.revision >= info.revision:
                return  # our own write, already applied, or an older version
            if node.spool is not None:
                self._remember(node, info)  # being written here: see local_done
                return
            if not node.is_dir and kind_of(info) is not node.kind:
                # A file became a link (or back): a new inode, never a type change in place.
                self._remove(node, info.bucket)
                node = None
        old_nuid = node.info.nuid if node is not None and node.info is not None else None
        first_new = self.table.next_ino
        new = self.tree.add(root, info)
        if new is None:
            return
        if node is not new:
            self._entries_added(new, first_new)
        elif old_nuid != info.nuid and not new.is_dir:
            if old_nuid is not None and new.file.handles == 0:
                # Open handles may still read that version (while its chunks exist).
                self.cache.forget(info.bucket, old_nuid)
            self._inode(new, attr_only=False)
        else:
            self._inode(new, attr_only=True)

    def _delete(self, root: Node, info: ObjectInfo) -> None:
        key = (info.bucket, info.name)
        if info.revision >= self._removed.get(key, info.revision + 1):
            del self._removed[key]  # the tombstone is here: every older event came before it
        node = self.tree.find(root, info.name)
        held = node.file.remote if node is not None and node.spool is not None else []
        if node is not None and any(version.nuid == info.nuid for version in held):
            self._remember(node, info)  # deletes a version held for the writer here
            return
        if node is None or node.info is None or node.info.nuid != info.nuid:
            return  # gone already (our own delete or rename), or a newer version is there
        if node.info.name != info.name:
            return  # the tombstone a rename leaves: the node has its new name already
        if info.name.endswith("/"):
            if not node.is_dir:
                return
            node.info = None
            self._prune(node)
            return
        if node.is_dir:
            return
        if node.spool is not None:
            # Written here while deleted elsewhere: it stays until the local writer is done;
            # then a close that uploaded re-created it (last close wins), else it goes.
            self._remember(node, info)
            return
        self._remove(node, info.bucket)

    def _remove(self, node: Node, bucket: str) -> None:
        """Take a file or symlink node out of the tree; invalidate its parent's entry."""
        parent = self.table.find(node.parent)
        self.table.detach(node)
        if node.info is not None and node.file.handles == 0:
            self.cache.forget(bucket, node.info.nuid)
        if parent is not None:
            self._entry(parent, node.name, node.ino)
            self._prune(parent)

    @staticmethod
    def _remember(node: Node, info: ObjectInfo) -> None:
        node.file.remote.append(info)

    @staticmethod
    def uploaded(node: Node, info: ObjectInfo) -> None:
        """This mount stored ``info`` as ``node``'s object: if the watch reported it already
        (before the put returned), that event was this upload, not a change made elsewhere."""
        pending = node.file.remote
        pending[:] = [i for i in pending if i.revision != info.revision]

    def local_done(self, node: Node) -> None:
        """The local writer of ``node`` is done (its spool is gone): settle the newest remote
        version that arrived meanwhile (see the module docstring)."""
        pending, node.file.remote = node.file.remote, []
        if not pending or node.spool is not None or not node.attached:
            return
        info = max(pending, key=lambda i: i.revision)
        if info.deleted and (node.info is None or node.info.revision < info.revision):
            self._remove(node, info.bucket)  # nothing uploaded here since: the delete stands
            return
        if node.info is not None and node.info.revision >= info.revision:
            log.warning(
                "%s/%s was changed elsewhere while open for writing here; this mount's close "
                "replaced that version (last close wins)",
                info.bucket,
                info.name,
            )
            return
        old_nuid = node.info.nuid if node.info is not None else None
        self.tree.set_info(node, info)
        if old_nuid is not None and old_nuid != info.nuid and node.file.handles == 0:
            self.cache.forget(info.bucket, old_nuid)
        self._inode(node, attr_only=old_nuid == info.nuid)

    def _prune(self, directory: Node) -> None:
        for gone in self.tree.prune(directory):
            parent = self.table.find(gone.parent)
            if parent is not None:
                self._entry(parent, gone.name, gone.ino)

    def _entries_added(self, node: Node, first_new: int) -> None:
        """Invalidate the dentry of the topmost node created by this event (and its dir)."""
        top = node
        while True:
            parent = self.table.find(top.parent)
            if parent is None or parent.ino < first_new:
                break
            top = parent
        parent = self.table.find(top.parent)
        if parent is not None:
            self._entry(parent, top.name, 0)

    def _entry(self, parent: Node, name: str, deleted: int) -> None:
        if self._quiet:
            return
        if parent.lookups > 0 or parent.ino == ROOT_INO:
            self.queue.push(InvalidateEntry(parent.ino, name, deleted))
            self.queue.push(InvalidateInode(parent.ino, attr_only=False))

    def _inode(self, node: Node, *, attr_only: bool) -> None:
        if self._quiet:
            return
        if node.lookups > 0:
            self.queue.push(InvalidateInode(node.ino, attr_only=attr_only))


class BucketWatch:
    """The watch of one bucket: ``load`` (snapshot) once, then ``follow`` until cancelled."""

    def __init__(self, store: TrioStore, bucket: str, root: Node, watcher: Watcher) -> None:
        self.store = store
        self.bucket = bucket
        self.root = root
        self.watcher = watcher
        self.scope = trio.CancelScope()
        self._iter: AsyncIterator[WatchEvent] | None = None
        self.closed = False
        self._following = False

    async def load(self, *, reconcile: bool = False) -> None:
        """Start the watch and apply its snapshot (returns at ``snapshot_end``)."""
        started = trio.current_time()
        # Batched: a big snapshot crosses the bridge as one item, not one per object.
        self._iter = aiter(self.store.watch(self.bucket, batched=True))
        infos: list[ObjectInfo] = []
        async for event in self._iter:
            if event.kind == "snapshot_end":
                break
            if event.kind == "snapshot":
                infos.extend(event.infos)
            elif event.kind == "put" and event.info is not None:
                infos.append(event.info)
        received = trio.current_time()
        self.watcher.apply_snapshot(self.root, infos, reconcile=reconcile)
        log.debug(
            "snapshot of bucket %s: %d objects received in %.2f s, applied in %.2f s",
            self.bucket,
            len(infos),
            received - started,
            trio.current_time() - received,
        )

    async def follow(self) -> None:
        """Apply live changes until cancelled; a failed watch is re-established."""
        self._following = True
        try:
            await self._follow()
        finally:
            # The iterator is closed here, by the task that iterates it: closing it from
            # another task while this one waits inside it fails ("already running").
            self._following = False
            await self._close_iter()

    async def _follow(self) -> None:
        with self.scope:
            while not self.closed:
                try:
                    if self._iter is None:
                        await self.load(reconcile=True)
                    assert self._iter is not None
                    async for event in self._iter:
                        self.watcher.apply(self.root, event)
                        if event.info is not None:
                            self.watcher.stats.watched(event.info.mtime_ns)
                    log.warning("watch of bucket %s ended; restarting", self.bucket)
                except NotFound:
                    log.warning("bucket %s is gone; its watch stops", self.bucket)
                    return
                except StoreError as e:
                    log.warning("watch of bucket %s failed (%s); retrying", self.bucket, e)
                except Exception:  # a bug here must not end run_background, and the mount
                    log.exception("watch of bucket %s: unexpected error; restarting", self.bucket)
                await self._close_iter()
                await trio.sleep(RETRY_DELAY)

    async def _close_iter(self) -> None:
        it, self._iter = self._iter, None
        await close_watch(it)

    async def close(self) -> None:
        self.closed = True
        self.scope.cancel()  # a running follow() closes the iterator as it ends
        if not self._following:
            await self._close_iter()


async def close_watch(it: object) -> None:
    """Close a store watch iterator (shielded, bounded: closing ends its consumer)."""
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await aclose()
