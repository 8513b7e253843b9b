"""Abstract kernel-cache invalidation requests, queued by the core and carried out elsewhere.

The core decides *what* the kernel must forget (a changed inode's pages or attributes, a
directory entry that appeared or vanished); only the pyfuse3 adapter knows *how*. Requests
travel through a bounded trio channel to a worker (``Coherence.run``, started by
``Filesystem.run_background``): never from inside a request handler, where
``invalidate_entry`` deadlocks (docs/design.md). A full queue drops requests with a log
line; the short attribute/entry timeouts bound the staleness.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

log = logging.getLogger(__name__)

QUEUE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class InvalidateInode:
    """Forget the cached pages (or only the attributes) of inode ``ino``."""

    ino: int
    attr_only: bool = False


@dataclass(frozen=True, slots=True)
class InvalidateEntry:
    """Forget the dentry ``name`` in directory ``parent`` (``deleted``: the inode it named)."""

    parent: int
    name: str
    deleted: int = 0


Request = InvalidateInode | InvalidateEntry
Invalidator = Callable[[Request], Awaitable[None]]


class InvalidationQueue:
    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._send, self._receive = trio.open_memory_channel[Request](size)
        self.dropped = 0

    def push(self, request: Request) -> None:
        try:
            self._send.send_nowait(request)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("invalidation queue full; %d requests dropped", self.dropped)

    async def serve(self, invalidator: Invalidator | None) -> None:
        """Carry out requests until cancelled (without an invalidator they are discarded)."""
        async for request in self._receive:
            if invalidator is None:
                continue
            try:
                await invalidator(request)
            except Exception:
                log.exception("invalidation %r failed", request)
