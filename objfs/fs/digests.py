"""Digest checks of the read path: an object read from start to end is checked whole.

Reads go through the chunk cache chunk by chunk, in any order, so a single read cannot check
an object's ADR-20 digest (a SHA-256 of all of it). But most reads are whole-file sequential
ones (``cat``, ``cp``, ``rsync``, ``tar c``): each version being read from its first chunk
on has a running hash here, fed as the chunks are returned in order. When the last chunk
arrives the hash is compared with the digest; a mismatch fails that read and every later
read of the version with EIO (``Corrupt``), and is logged once, naming the object. A read
that skips ahead stops the check for that version (random access is not checked: that
would mean reading the whole object). Objects without a digest are not checked, nor objects
over ``CHECK_MAX_BYTES``: SHA-256 runs at about 280 MB/s on the test machine (no SHA
extensions), slower than the read path, so hashing every large file would cost reads half
their speed; the store's own whole-object reads (``read_stream``) check every size.

Hashing runs in a worker thread (hashlib releases the GIL) for chunks of ``THREAD_MIN``
bytes or more, so the event loop goes on serving reads meanwhile.

Concurrency: state is per ``(bucket, nuid)`` in a bounded LRU. ``feed`` decides which chunks
to hash and advances ``next_chunk`` before its first await, so concurrent reads of one
version agree on the order; the hashing itself happens under the version's ``trio.Lock``,
which is FIFO, so chunks are hashed in the order they were taken, and the feed that takes
the last chunk compares only after all earlier hashing is done.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import trio
from cachetools import LRUCache

from objfs.store.api import ChunkLayout, ObjectInfo
from objfs.store.errors import Corrupt
from objfs.store.wire import parse_digest

log = logging.getLogger(__name__)

CHECK_MAX_BYTES = 64 * 1024 * 1024
"""Objects larger than this are not checked by the read path (see the module docstring)."""
THREAD_MIN = 64 * 1024
"""Chunks at least this large are hashed in a worker thread."""


@dataclass(slots=True)
class _Running:
    sha: Any
    next_chunk: int = 0
    lock: trio.Lock = field(default_factory=trio.Lock)


class DigestCheck:
    """Running digests of the object versions being read in order (module docstring)."""

    def __init__(self, versions: int = 256) -> None:
        self._running: LRUCache[tuple[str, str], _Running] = LRUCache(maxsize=versions)
        self._bad: LRUCache[tuple[str, str], str] = LRUCache(maxsize=versions)

    async def feed(
        self, info: ObjectInfo, layout: ChunkLayout, first: int, chunks: list[bytes]
    ) -> None:
        """Chunks ``first`` .. of ``info`` were read; Corrupt if the version is known bad."""
        key = (info.bucket, info.nuid)
        bad = self._bad.get(key)
        if bad is not None:
            raise Corrupt(bad)
        if layout.size > CHECK_MAX_BYTES:
            return
        running = self._running.get(key)
        if running is None:
            # The digest is decoded only where a check starts (and ends), not on every read.
            if first != 0 or parse_digest(info.digest) is None:
                return
            running = self._running[key] = _Running(hashlib.sha256())
        if first > running.next_chunk:
            self._running.pop(key, None)  # skipped ahead: not checked
            return
        pieces = []
        for i, data in enumerate(chunks, start=first):
            if i == running.next_chunk:
                pieces.append(data)
                running.next_chunk += 1
        last = running.next_chunk >= layout.chunks
        if last:
            self._running.pop(key, None)
        async with running.lock:
            if sum(len(p) for p in pieces) >= THREAD_MIN:
                await trio.to_thread.run_sync(_update, running.sha, pieces)
            else:
                _update(running.sha, pieces)
        if last and running.sha.digest() != parse_digest(info.digest):
            message = f"{info.bucket}/{info.name}: content does not match its digest"
            self._bad[key] = message
            log.error("%s (nuid %s): reads of it fail with EIO", message, info.nuid)
            raise Corrupt(message)


def _update(sha: Any, pieces: list[bytes]) -> None:
    for piece in pieces:
        sha.update(piece)
