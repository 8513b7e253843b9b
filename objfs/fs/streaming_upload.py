"""Early publishing: a file written sequentially from its start is uploaded while it is being
written, so that close returns soon after the last write.

Why: an upload at close reads the whole spool file and sends it, so ``dd`` or ``cp`` of a
large file waited for the write and then for the whole upload. Here, once a file's new content
has grown sequentially from offset 0 to ``EARLY_MIN_BYTES``, a streaming ``put`` starts (a
store ``Feed`` as its source): what was written so far is sent from the spool, and each
further write is passed on as it comes (the put holds the writer back when the store is
slower, which bounds memory). The spool still receives every write.

What stays as before:

- The atomic publish: the store publishes the meta only when the source ends, which happens
  in the close's (or fsync's, or unmount's) upload, with the meta computed then. Until then
  no reader, here or in any other client, sees the new version: the old one stays intact.
- Anything but an append at the end (a write before the end, a truncate, a rename, a put that
  failed or was cancelled) abandons the streaming put (the store purges its chunks) and the
  close uploads the spool in the ordinary way.

Small files never start one (under ``EARLY_MIN_BYTES`` a put at close is one round trip).
Everything runs on the trio thread; ``Early.lock`` orders one file's writes into the feed.
Lock order: ``Early.lock`` before ``Spool.lock`` (the start reads the spool); ``finish`` runs
under the spool's lock, so it never waits for ``Early.lock``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import trio

from objfs.bridge import Feed, TrioStore
from objfs.fs.inodes import Node
from objfs.fs.spool import Spool
from objfs.fs.stats import Stats, Upload
from objfs.store.api import ObjectInfo, ObjectMeta

log = logging.getLogger(__name__)

Spawner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]

EARLY_MIN_BYTES = 4 << 20
PIECE = 1 << 20
"""How much of the spool one push sends when a streaming put starts."""


class Abandoned(Exception):
    """Raised into a streaming put's source to abandon it (its chunks are purged)."""


class Early:
    """One file's sequential write from offset 0, and its streaming put once it started."""

    def __init__(self, end: int) -> None:
        self.end = end
        """Bytes written so far, all of them in order from offset 0."""
        self.lock = trio.Lock()
        self.feed: Feed | None = None
        self.name = ""
        self.meta = ObjectMeta()
        """Handed to the put; filled in with the final meta just before the source ends."""
        self.done = trio.Event()
        self.result: ObjectInfo | None = None
        self.failed = False
        self.pushed = 0
        """Bytes handed to the streaming put so far."""
        self.upload: Upload | None = None
        """Its entry among the uploads in flight (``objfs status``), once the put runs."""

    async def push(self, feed: Feed, data: bytes) -> None:
        await feed.push(data)
        self.pushed += len(data)
        if self.upload is not None:
            self.upload.done = self.pushed
            self.upload.size = max(self.upload.size, self.end)


class EarlyUploads:
    """The early uploads of the files being written (see the module docstring)."""

    def __init__(
        self,
        store: TrioStore,
        chunk_size: int | None,
        stats: Stats,
        display: Callable[[Node], str],
    ) -> None:
        """``display``: the path a user knows the node by (``Files._display``)."""
        self.store = store
        self.chunk_size = chunk_size
        self.stats = stats
        self.display = display
        self.spawn: Spawner | None = None
        """Set while ``Filesystem.run_background`` runs; without it nothing starts early."""
        self._files: dict[int, Early] = {}

    async def wrote(self, node: Node, spool: Spool, offset: int, size: int, data: bytes) -> None:
        """After ``data`` was written to ``spool`` at ``offset`` (``size``: the spool's size)."""
        early = self._files.get(node.ino)
        if early is None:
            if offset == 0 and size == len(data):  # the content is exactly these bytes
                self._files[node.ino] = Early(size)
                await self._maybe_start(node, spool, self._files[node.ino])
            return
        async with early.lock:
            if offset != early.end or size != offset + len(data):
                self.discard(node)
                return
            early.end += len(data)
            if early.feed is not None:
                await early.push(early.feed, data)
                return
        await self._maybe_start(node, spool, early)

    async def _maybe_start(self, node: Node, spool: Spool, early: Early) -> None:
        if early.feed is not None or early.end < EARLY_MIN_BYTES or self.spawn is None:
            return
        bucket = node.bucket
        if bucket is None or not node.attached:
            return
        async with early.lock:  # before the feed exists: later writes queue behind the spool's
            if early.feed is not None or self._files.get(node.ino) is not early:
                return
            feed = early.feed = self.store.feed()
            name = early.name = node.path
            shown = self.display(node)

            async def run() -> None:
                try:
                    # In flight from its start: status shows it moving while the file is
                    # still being written (its size: what is written so far).
                    with self.stats.upload(shown, early.end) as upload:
                        upload.done, early.upload = early.pushed, upload
                        early.result = await self.store.put(
                            bucket, name, feed, meta=early.meta, chunk_size=self.chunk_size
                        )
                except BaseException as e:
                    early.failed = True
                    log.debug("early upload of %s abandoned: %r", name, e)
                    if not isinstance(e, Exception):
                        raise  # trio's Cancelled (unmount): the close's upload takes over
                finally:
                    with trio.CancelScope(shield=True):
                        await feed.close()
                    early.done.set()

            try:
                self.spawn(run)
            except RuntimeError:  # the background nursery is closing
                early.feed = None
                self.discard(node)
                return
            # What was written before the put started, from the spool.
            sent = 0
            while sent < early.end and not feed.closed:
                piece = await spool.read(sent, min(PIECE, early.end - sent))
                if not piece:
                    break
                await early.push(feed, piece)
                sent += len(piece)
            if sent != early.end:
                self.discard(node)

    def discard(self, node: Node) -> None:
        """Give up the early upload of ``node`` (if any): the close uploads the spool."""
        early = self._files.pop(node.ino, None)
        if early is not None and early.feed is not None and not early.done.is_set():
            feed = early.feed
            spawn = self.spawn

            async def abandon() -> None:
                await feed.fail(Abandoned())

            if spawn is not None:
                try:
                    spawn(abandon)
                    return
                except RuntimeError:
                    pass
            # No background tasks any more: the put was (or is being) cancelled with them.

    async def finish(self, node: Node, spool: Spool, meta: ObjectMeta) -> ObjectInfo | None:
        """End ``node``'s streaming put with ``meta`` if it holds all of ``spool`` under the
        node's current name: the stored object. None: there is none (or it could not be used,
        and is abandoned); the caller uploads the spool as usual."""
        early = self._files.get(node.ino)
        if early is None or early.feed is None:
            return None
        if early.lock.locked():
            # Still sending the spool's start (it reads the spool, whose lock our caller
            # holds: waiting would deadlock), or another handle's write: the ordinary upload.
            self.discard(node)
            return None
        async with early.lock:
            usable = early.end == spool.size and early.name == node.path and not early.done.is_set()
            if not usable:
                self.discard(node)
                return None
            del self._files[node.ino]
            early.meta.description = meta.description
            early.meta.headers = meta.headers
            early.meta.metadata = meta.metadata
            await early.feed.end()
        await early.done.wait()
        if early.failed or early.result is None:
            return None  # the ordinary upload retries from the spool, and reports a failure
        return early.result
