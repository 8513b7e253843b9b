"""Keeps the all-buckets root in step with the server's bucket list.

Without ``--bucket`` the mount root shows one directory per bucket. ``BucketListWatch`` runs
the store's ``watch_buckets`` (NATS: stream advisories, a few milliseconds after the change;
see ``NatsObjectStore.watch_buckets``): a bucket created anywhere appears at the root, a
deleted one disappears (its object watch is closed), and a sealed one is recorded by the
write guard and its directory shows no write permission. Each change
queues the root's dentry invalidation for that name (and the bucket directory's attributes
when it is sealed), so ``ls`` of the root needs no store round trip once the snapshot is in.

If the watch fails it is re-established and its new snapshot is reconciled with the root:
buckets no longer listed are forgotten, new ones added, nothing else invalidated.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator, Awaitable, Callable

import trio

from objfs.bridge import TrioStore
from objfs.fs.guard import WriteGuard
from objfs.fs.inodes import ROOT_INO, Node
from objfs.fs.invalidation import InvalidateEntry, InvalidateInode, InvalidationQueue
from objfs.fs.tree import Tree
from objfs.fs.watcher import RETRY_DELAY, close_watch
from objfs.store.api import BucketEvent
from objfs.store.errors import StoreError

log = logging.getLogger(__name__)

WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class BucketListWatch:
    """The bucket-list watch of an all-buckets mount: ``load`` once, then ``follow``."""

    def __init__(
        self,
        store: TrioStore,
        tree: Tree,
        root: Node,
        queue: InvalidationQueue,
        guard: WriteGuard,
        forget_bucket: Callable[[str], Awaitable[None]],
    ) -> None:
        self.store = store
        self.tree = tree
        self.root = root
        self.queue = queue
        self.guard = guard
        self.forget_bucket = forget_bucket
        """``Coherence.forget_bucket``: a deleted bucket's watch and directory go."""
        self.live = False
        """True while ``follow`` runs an established watch (the root is then answered from
        memory; before that, and while re-establishing it, the root re-lists on demand)."""
        self._iter: AsyncIterator[BucketEvent] | None = None
        self._following = False

    async def load(self, *, reconcile: bool = False) -> None:
        """Start the watch and apply its snapshot (returns at ``snapshot_end``)."""
        self._iter = aiter(self.store.watch_buckets())
        seen: set[str] = set()
        async for event in self._iter:
            if event.kind == "snapshot_end":
                break
            seen.add(event.name)
            await self.apply(event)
        if reconcile:
            for name in list(self.root.children or {}):
                if name not in seen:
                    await self.apply(BucketEvent("delete", name))

    async def follow(self) -> None:
        """Apply changes until cancelled; a failed watch is re-established and reconciled."""
        self._following = True
        try:
            await self._follow()
        finally:
            self._following = False
            self.live = False
            await self._close_iter()  # by the iterating task (see BucketWatch.follow)

    async def _follow(self) -> None:
        while True:
            try:
                if self._iter is None:
                    await self.load(reconcile=True)
                self.live = True
                assert self._iter is not None
                async for event in self._iter:
                    await self.apply(event)
                log.warning("bucket-list watch ended; restarting")
            except StoreError as e:
                log.warning("bucket-list watch failed (%s); retrying", e)
            except Exception:  # a bug here must not end run_background, and the mount
                log.exception("bucket-list watch: unexpected error; restarting")
            self.live = False
            await self._close_iter()
            await trio.sleep(RETRY_DELAY)

    async def apply(self, event: BucketEvent) -> None:
        node = self.tree.table.child(self.root, event.name)
        if event.kind == "delete":
            self.guard.forget_sealed(event.name)
            if node is not None:
                await self.forget_bucket(event.name)
            return
        if event.kind != "put":
            return
        if node is None:
            node = self.add(event.name)
        if event.sealed and self.guard.note_sealed(event.name):
            node.attrs.mode &= ~WRITE_BITS
            if node.lookups > 0:
                self.queue.push(InvalidateInode(node.ino, attr_only=True))

    def add(self, name: str) -> Node:
        """A directory for bucket ``name`` at the root (its objects load on first use)."""
        node = self.tree.new_bucket_dir(self.root, name)
        self.queue.push(InvalidateEntry(ROOT_INO, name))
        self.queue.push(InvalidateInode(ROOT_INO, attr_only=False))
        return node

    async def _close_iter(self) -> None:
        it, self._iter = self._iter, None
        await close_watch(it)

    async def close(self) -> None:
        """Stop the watch (``follow``, if it runs, must be cancelled by its nursery)."""
        self.live = False
        if not self._following:
            await self._close_iter()
