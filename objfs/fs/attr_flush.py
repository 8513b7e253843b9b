"""Merged attribute updates: chmod, chown and utime of a stored file, stored together shortly
after, instead of one meta update (a store round trip) each while the caller waits.

Why: ``tar x`` closes each file and then sets its owner, mode and times, three calls; each was
an ``update_meta`` round trip on the extracting process's path. Here ``mark`` records that a
file's attributes changed (the mount shows them at once, from memory), and a background task
stores every marked file's attributes after ``DELAY`` seconds, many at once (``PARALLEL``), one
meta update per file whatever the number of changes.

Durability: ``settle`` stores a file's pending attributes now; the façade calls it before
``fsync`` returns, before anything else touches the file's object (open for writing, rename,
unlink, link, extended attributes), and ``settle_all`` before unmount. Without a background
task (``spawn`` None) nothing is deferred.

Runs on the trio thread. ``_pending``, ``_queued`` and ``_busy`` change only between awaits;
one file's attributes are stored by one task at a time (``_busy`` holds its lock). From
``mark`` until it is stored a file is pending (waiting for the delay), queued (in a batch,
waiting for its turn) or busy (being stored; if marked again meanwhile, pending as well).
``settle`` takes a pending or queued file over and waits for a busy one, so nothing is stored
after it returned (a queued file stored after a rename had checked the name's revision made
git's rename of config.lock over config fail with EEXIST).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import trio

from objfs.fs.inodes import Node

log = logging.getLogger(__name__)

Spawner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]

DELAY = 0.02
PARALLEL = 16


class DeferredAttrs:
    def __init__(self, persist: Callable[[Node], Awaitable[None]]) -> None:
        self._persist = persist
        self.spawn: Spawner | None = None
        self._pending: dict[int, Node] = {}
        self._queued: dict[int, Node] = {}
        self._busy: dict[int, trio.Lock] = {}
        self._scheduled = False

    def mark(self, node: Node) -> bool:
        """Defer storing ``node``'s attributes; False: not possible now (store them now)."""
        if self.spawn is None:
            return False
        self._pending[node.ino] = node
        if not self._scheduled:
            try:
                self.spawn(self._flush_later)
            except RuntimeError:  # the background nursery is closing
                self._pending.pop(node.ino, None)
                return False
            self._scheduled = True
        return True

    async def _flush_later(self) -> None:
        try:
            await trio.sleep(DELAY)
        finally:
            self._scheduled = False
        batch, self._pending = list(self._pending.values()), {}
        for node in batch:
            self._queued[node.ino] = node
        limit = trio.Semaphore(PARALLEL)

        async def one(node: Node) -> None:
            taken = False
            try:
                async with limit:
                    # Taken from the queue and locked (``_store``) with no await between.
                    taken = self._queued.pop(node.ino, None) is not None
                    if taken:
                        await self._store(node, quiet=True)
            except BaseException:
                # Cancelled (unmount): back to pending for settle_all, or its attributes
                # would be lost. Taken: the cancel may have come at ``_store``'s lock,
                # before the store began (a chmod lost across a remount, in a loaded run).
                # Not taken: its queued entry, still there, goes back (only on a cancel: a
                # file stored may have been queued again by a later batch, the later one's).
                if taken:
                    self._pending.setdefault(node.ino, node)
                else:
                    queued = self._queued.pop(node.ino, None)
                    if queued is not None:
                        self._pending.setdefault(node.ino, queued)
                raise

        async with trio.open_nursery() as nursery:
            for node in batch:
                nursery.start_soon(one, node)

    async def _store(self, node: Node, *, quiet: bool) -> None:
        lock = self._busy.setdefault(node.ino, trio.Lock())
        async with lock:
            try:
                if node.attached:
                    await self._persist(node)
            except Exception as e:
                if not quiet:
                    raise
                # Nobody waits for this one: keep it pending, for fsync or unmount to retry.
                log.warning("storing the attributes of %s failed: %s", node.path, e)
                self._pending.setdefault(node.ino, node)
            except BaseException:
                self._pending.setdefault(node.ino, node)  # cancelled (unmount): settle_all
                raise
            finally:
                if not lock.statistics().tasks_waiting:
                    self._busy.pop(node.ino, None)

    async def settle(self, node: Node | None) -> None:
        """Store ``node``'s pending attributes now (and wait for a store in progress)."""
        if node is None:
            return
        pending = self._pending.pop(node.ino, None)
        queued = self._queued.pop(node.ino, None)
        if pending is None:
            pending = queued
        if pending is not None:
            await self._store(pending, quiet=False)
        elif node.ino in self._busy:
            async with self._busy[node.ino]:
                pass

    async def settle_all(self) -> None:
        """Store everything pending (at unmount): a failure is logged, the rest goes on."""
        for lock in list(self._busy.values()):
            async with lock:
                pass
        for node in [*self._pending.values(), *self._queued.values()]:
            try:
                await self.settle(node)
            except Exception as e:
                log.error("the attributes of %s were not stored: %s", node.path, e)
