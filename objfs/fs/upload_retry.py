"""Uploads that failed, retried in the background until they are stored or the mount ends.

A close or fsync whose upload fails answers EIO (or ENOSPC/EROFS) and keeps the data in the
spool (``files``). Without a retry that data would reach the store only if the file were
closed again or at unmount; a server that comes back after a minute would leave the file
unstored meanwhile. So each failed upload is listed here and tried again with a backoff
(``FIRST_DELAY`` doubling up to ``MAX_DELAY``) until it is stored, the file is unlinked, or the
mount ends (``Files.shutdown`` makes a last attempt; what still fails stays in the spool for
``recovery``). The log says once when a file starts failing and once when it is stored, not
at every attempt. ``pending`` is what ``objfs status`` shows.

Concurrency: ``_pending`` is changed only by code that does not await (``failed``, ``stored``,
the loop between its awaits); the uploads themselves take the spool's lock as any close does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from objfs.fs.errors import FsError
from objfs.fs.inodes import Node
from objfs.store.errors import StoreError

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0
MAX_DELAY = 30.0

PendingUpload = tuple[str, int, int, str]
"""``(path, bytes, attempts, last_error)`` of one upload waiting for its retry."""


@dataclass
class _Pending:
    node: Node
    attempts: int
    error: str
    due: float


class UploadRetry:
    """The failed uploads of one mount and the task that retries them (see the docstring)."""

    def __init__(
        self,
        upload: Callable[[Node], Awaitable[None]],
        settle: Callable[[Node], None],
        display: Callable[[Node], str],
    ) -> None:
        self._upload = upload
        self._settle = settle
        """After a stored retry: drop the spool if no writer needs it (``Files.settle``)."""
        self._display = display
        self.first_delay = FIRST_DELAY
        self.max_delay = MAX_DELAY
        self._pending: dict[int, _Pending] = {}
        self._changed = trio.Event()

    def failed(self, node: Node, error: str, spool_path: str) -> None:
        """An upload of ``node`` failed with ``error`` (its data is in ``spool_path``)."""
        entry = self._pending.get(node.ino)
        if entry is None:
            entry = self._pending[node.ino] = _Pending(node, 0, error, 0.0)
            log.error(
                "upload of %s failed, data kept in %s (retrying in the background): %s",
                self._display(node),
                spool_path,
                error,
            )
        entry.attempts += 1
        entry.error = error
        delay = min(self.max_delay, self.first_delay * 2 ** min(entry.attempts - 1, 30))
        entry.due = trio.current_time() + delay
        self._changed.set()

    def stored(self, node: Node) -> None:
        """``node``'s content is stored (by a retry, a close or an fsync)."""
        entry = self._pending.pop(node.ino, None)
        if entry is not None:
            log.warning(
                "upload of %s stored after %d failed attempt(s)",
                self._display(node),
                entry.attempts,
            )

    def pending(self) -> list[PendingUpload]:
        """What is waiting: ``(path, bytes, attempts, last_error)`` each (read-only)."""
        return [
            (self._display(e.node), e.node.size, e.attempts, e.error)
            for e in self._pending.values()
        ]

    async def run(self) -> None:
        """Retry due uploads until cancelled (run in the mount's background nursery)."""
        while True:
            self._changed = trio.Event()
            due = min((e.due for e in self._pending.values()), default=math.inf)
            with trio.move_on_at(due):
                await self._changed.wait()
                continue
            now = trio.current_time()
            for entry in [e for e in self._pending.values() if e.due <= now]:
                await self._retry(entry)

    async def _retry(self, entry: _Pending) -> None:
        node = entry.node
        if node.file.writers > 0:
            # Still open for writing (its fsync failed): its close stores it, whole; a retry
            # now would publish what the writer has written so far.
            entry.due = trio.current_time() + self.max_delay
            return
        try:
            await self._upload(node)  # a failure calls ``failed`` again (next attempt later)
        except (FsError, StoreError):
            if entry.due <= trio.current_time():  # failed without ``failed``: never spin
                entry.due = trio.current_time() + self.max_delay
            return
        except Exception:  # a bug here must not end the retries, or the mount
            log.exception("retrying the upload of %s", self._display(node))
            entry.due = trio.current_time() + self.max_delay
            return
        # Stored, or nothing left to store (unlinked, or stored by a close meanwhile).
        if self._pending.get(node.ino) is entry:
            del self._pending[node.ino]
        self._settle(node)
