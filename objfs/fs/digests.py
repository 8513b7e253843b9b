"""Digest checks of the read path: an object read from start to end is checked whole.

Reads go through the chunk cache chunk by chunk, in any order, so a single read cannot check
an object's ADR-20 digest (a SHA-256 of all of it). But most reads are whole-file sequential
ones (``cat``, ``cp``, ``rsync``, ``tar c``): each version being read from its first chunk
on has a running hash here, fed as the chunks are returned in order. When the last chunk
arrives the hash is compared with the digest; a mismatch fails that read and every later
read of the version with EIO (``Corrupt``), and is logged once, naming the object. A read
that skips ahead stops the check for that version (random access is not checked: that
would mean reading the whole object). Objects without a digest are not checked.

State is per ``(bucket, nuid)`` in a bounded LRU; trio runs one task at a time and a feed
has no await, so no lock is needed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from objfs.store.api import ChunkLayout, ObjectInfo
from objfs.store.errors import Corrupt
from objfs.store.wire import parse_digest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Running:
    sha: Any
    next_chunk: int = 0


class DigestCheck:
    """Running digests of the object versions being read in order (module docstring)."""

    def __init__(self, versions: int = 256) -> None:
        self._running: LRUCache[tuple[str, str], _Running] = LRUCache(maxsize=versions)
        self._bad: LRUCache[tuple[str, str], str] = LRUCache(maxsize=versions)

    def feed(self, info: ObjectInfo, layout: ChunkLayout, first: int, chunks: list[bytes]) -> None:
        """Chunks ``first`` .. of ``info`` were read; Corrupt if the version is known bad."""
        key = (info.bucket, info.nuid)
        bad = self._bad.get(key)
        if bad is not None:
            raise Corrupt(bad)
        want = parse_digest(info.digest)
        if want is None:
            return
        running = self._running.get(key)
        if running is None:
            if first != 0:
                return
            running = self._running[key] = _Running(hashlib.sha256())
        if first > running.next_chunk:
            self._running.pop(key, None)  # skipped ahead: not checked
            return
        for i, data in enumerate(chunks, start=first):
            if i == running.next_chunk:
                running.sha.update(data)
                running.next_chunk += 1
        if running.next_chunk < layout.chunks:
            return
        self._running.pop(key, None)
        if running.sha.digest() != want:
            message = f"{info.bucket}/{info.name}: content does not match its digest"
            self._bad[key] = message
            log.error("%s (nuid %s): reads of it fail with EIO", message, info.nuid)
            raise Corrupt(message)
