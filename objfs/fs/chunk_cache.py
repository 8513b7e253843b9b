"""The read path's chunk cache: whole store chunks, in memory, keyed by object version.

- Keys are ``(bucket, nuid, chunk index)``. Every put uses a fresh nuid, so an overwritten
  object can never be served from stale chunks, by construction.
- An LRU bounded in bytes (cachetools with ``getsizeof=len``), ``options.cache_size``.
- pyfuse3 runs up to 99 handlers at once, and the kernel splits one big read into many: a
  chunk that is already being fetched is waited for (one ``trio.Event`` per in-flight key),
  never fetched twice.
- Missing chunks of one read are fetched in one ``read_chunks`` call (one bridge hop, one
  batch request), and sequential access starts a background fetch of the next chunks
  (``readahead``: a window that grows while the access stays sequential, or a streaming read
  of an object read from its start) when a task spawner is available
  (``Filesystem.run_background`` provides one).
- Layouts (where an object's chunks are) are cached per ``(bucket, nuid)``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import trio
from cachetools import LRUCache

from objfs.bridge import TrioStore
from objfs.fs.digests import DigestCheck
from objfs.fs.readahead import MAX_BYTES, Readahead
from objfs.fs.stats import Stats
from objfs.store.api import ChunkLayout, ObjectInfo

log = logging.getLogger(__name__)

Key = tuple[str, str, int]

IN_FLIGHT_BYTES = 32 << 20
"""Kept out of the cache's capacity for readahead in flight (see ``ChunkCache.__init__``)."""
Spawner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class ChunkCache:
    def __init__(
        self,
        store: TrioStore,
        capacity: int,
        stats: Stats,
        *,
        readahead_bytes: int = MAX_BYTES,
    ) -> None:
        self.store = store
        # ``capacity`` bounds the read path's memory, readahead in flight included: a stream's
        # lead and the store's push credit (16 MiB), and the windows being fetched, are held
        # outside the LRU, so it keeps that much less (measured: four readers went past the
        # cache size + 64 MiB without it, BENCHMARKS.md).
        reserve = min(capacity // 4, IN_FLIGHT_BYTES)
        self._chunks: LRUCache[Key, bytes] = LRUCache(
            maxsize=max(capacity - reserve, 1), getsizeof=len
        )
        self.stats = stats
        # Reported against the --cache-size asked for (the readahead reserve is part of it).
        stats.cache_bytes = lambda: (int(self._chunks.currsize), capacity)
        self._layouts: LRUCache[tuple[str, str], ChunkLayout] = LRUCache(maxsize=4096)
        self._inflight: dict[Key, trio.Event] = {}
        # At most a quarter of the cache: what is read ahead must still be there when the
        # reader gets to it.
        self.readahead = Readahead(min(readahead_bytes, max(1, capacity // 4)))
        self.spawn: Spawner | None = None
        self.digests = DigestCheck()
        """Whole-file sequential reads are checked against the object's digest."""

    async def layout(self, info: ObjectInfo) -> ChunkLayout:
        key = (info.bucket, info.nuid)
        layout = self._layouts.get(key)
        if layout is None:
            layout = await self.store.layout(info)
            self._layouts[key] = layout
        return layout

    async def read(self, info: ObjectInfo, offset: int, size: int) -> bytes:
        """Bytes ``offset`` .. ``offset + size`` of the object version ``info``."""
        if size <= 0 or offset >= info.size:
            return b""
        layout = await self.layout(info)
        end = min(offset + size, layout.size)
        if offset >= end:
            return b""
        first = layout.chunk_at(offset)
        last = layout.chunk_at(end - 1)
        self._maybe_readahead(info, layout, first, last)
        chunks = await self.chunks(layout, first, last - first + 1)
        await self.digests.feed(info, layout, first, chunks)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # no copy for one chunk
        start = offset - layout.offsets[first]
        return data[start : start + (end - offset)]

    async def chunks(self, layout: ChunkLayout, first: int, count: int) -> list[bytes]:
        """Chunks ``first`` .. ``first + count - 1``, from the cache or fetched once."""
        got: dict[int, bytes] = {}
        for _attempt in range(3):
            missing: list[int] = []
            waits: list[trio.Event] = []
            for i in range(first, first + count):
                if i in got:
                    continue
                key = (layout.bucket, layout.nuid, i)
                data = self._chunks.get(key)
                if data is not None:
                    got[i] = data
                    self.stats.cache_hits += 1
                elif key in self._inflight:
                    waits.append(self._inflight[key])
                else:
                    missing.append(i)
            if missing:
                self.stats.cache_misses += len(missing)
                got.update(await self._fetch(layout, missing))
            for event in waits:
                await event.wait()
            if len(got) == count:
                break
            # Chunks another task fetched: take them from the cache (or fetch them ourselves
            # if that fetch failed or they were evicted meanwhile) on the next round.
        if len(got) != count:
            got.update(
                await self._fetch(layout, [i for i in range(first, first + count) if i not in got])
            )
        return [got[i] for i in range(first, first + count)]

    async def _fetch(self, layout: ChunkLayout, indexes: list[int]) -> dict[int, bytes]:
        """Fetch ``indexes`` (sorted), one ``read_chunks`` call per contiguous run."""
        return await self._fetch_claimed(layout, self._claim(layout, indexes))

    def _claim(self, layout: ChunkLayout, indexes: list[int]) -> dict[int, trio.Event]:
        """Mark chunks in flight, synchronously, so no other task fetches them as well."""
        claimed = {}
        for i in indexes:
            key = (layout.bucket, layout.nuid, i)
            claimed[i] = self._inflight[key] = trio.Event()
        return claimed

    async def _fetch_claimed(
        self, layout: ChunkLayout, claimed: dict[int, trio.Event]
    ) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        try:
            for start, n in _runs(sorted(claimed)):
                batch = await self.store.read_chunks(layout, start, n)
                for j, data in enumerate(batch):
                    out[start + j] = data
                    self._put(layout, start + j, data)
        finally:
            self.release(layout, claimed)
        return out

    def _put(self, layout: ChunkLayout, index: int, data: bytes) -> None:
        # ValueError: a chunk larger than the whole cache; serve it, do not keep it.
        with contextlib.suppress(ValueError):
            self._chunks[(layout.bucket, layout.nuid, index)] = data

    def _maybe_readahead(
        self, info: ObjectInfo, layout: ChunkLayout, first: int, last: int
    ) -> None:
        access = self.readahead.observe((layout.bucket, layout.nuid), first, last)
        if self.spawn is None or access.window == 0:
            return
        if access.stream is not None and not access.stream.finished:
            return  # the stream keeps ahead of this reader
        if self.readahead.may_stream(access, layout):
            spawn = self.spawn
            with contextlib.suppress(RuntimeError):  # the background nursery is closing
                self.readahead.start_stream(
                    access, self.store, self, info, layout, lambda s: spawn(s.run)
                )
            return
        chunk_len = max(1, layout.offsets[1] - layout.offsets[0]) if layout.chunks else 1
        window = max(1, access.window // chunk_len)
        start = last + 1
        wanted = self.wanted(layout, start, min(start + window, layout.chunks))
        # Top the window up in big steps, not one chunk per read (one call per half window).
        if not wanted or (len(wanted) < window // 2 and start + window < layout.chunks):
            return
        claimed = self._claim(layout, wanted)

        async def prefetch() -> None:
            try:
                await self._fetch_claimed(layout, claimed)
            except Exception as e:  # readahead is a hint: a failure only costs a later fetch
                log.debug("readahead of %s failed: %r", layout.nuid, e)

        try:
            self.spawn(prefetch)
        except RuntimeError:  # the background nursery is closing: give the claims back
            self.release(layout, claimed)

    # -- what a readahead stream uses (readahead.Sink) -----------------------------------------
    def wanted(self, layout: ChunkLayout, start: int, stop: int) -> list[int]:
        """Chunks in ``start`` .. ``stop - 1`` neither cached nor in flight."""
        return [
            i
            for i in range(start, stop)
            if (layout.bucket, layout.nuid, i) not in self._chunks
            and (layout.bucket, layout.nuid, i) not in self._inflight
        ]

    def claim(self, layout: ChunkLayout, indexes: list[int]) -> dict[int, trio.Event]:
        return self._claim(layout, indexes)

    def deliver(self, layout: ChunkLayout, index: int, data: bytes) -> None:
        self._put(layout, index, data)

    def release(self, layout: ChunkLayout, claimed: dict[int, trio.Event]) -> None:
        """End claims (delivered or given up): waiters take the chunk from the cache or fetch
        it themselves."""
        for i, event in claimed.items():
            key = (layout.bucket, layout.nuid, i)
            if self._inflight.get(key) is event:
                del self._inflight[key]
            event.set()

    def forget(self, bucket: str, nuid: str) -> None:
        """Drop the layout of an object version that no longer exists (chunks age out)."""
        self._layouts.pop((bucket, nuid), None)
        self.readahead.forget((bucket, nuid))


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of sorted ``indexes`` as (start, count)."""
    runs: list[tuple[int, int]] = []
    for i in indexes:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs
