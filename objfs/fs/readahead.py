"""Readahead for the read path: a window that grows on sequential access, and a streaming
read for a long object read from its start.

Why: the kernel asks for a file 128 KiB at a time; fetching only what it asks for makes each
read a round trip, and a fixed readahead window is either too small for a long copy or too
big for a reader that jumps around. Like mountpoint-s3's prefetcher, the window starts small
(``INITIAL_BYTES``) and doubles each time a read continues at the chunk after the last one,
up to ``max_bytes``; a read anywhere else (a seek) resets it and prefetches nothing, so a
random reader never gets chunks it did not ask for.

A read that goes on sequentially from the start of an object of ``STREAM_MIN_BYTES`` or more
is switched to the store's streaming read (``read_stream``: a push consumer on the lean reader,
the digest verified at the end), which costs the server and the daemon less per byte than
batches of direct gets. The stream feeds the chunk cache in order and stays at most
``ahead`` chunks in front of the reader (it waits for the reader, and the store's flow
control holds the server back meanwhile), so memory stays within the cache's bound plus that
window. A seek, an idle reader (``IDLE_SECONDS``) or ``forget`` ends it; readers waiting for
a chunk the stream had claimed then fetch it themselves.

Everything here runs on the trio thread: state changes happen between awaits, without locks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio
from cachetools import LRUCache

from objfs.bridge import TrioStore
from objfs.store.api import ChunkLayout, ObjectInfo

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""An object version: ``(bucket, nuid)``."""

INITIAL_BYTES = 1 << 20
MAX_BYTES = 8 << 20
MAX_STREAMS = 1
"""Streams at once: each holds the store's push credit (16 MiB) besides its lead, outside the
cache's bound; more readers at once read through the window (measured: four streams took the
daemon 80 MiB over the cache size, BENCHMARKS.md)."""
STREAM_MIN_BYTES = 16 << 20
STREAM_START_CHUNKS = 4
"""A stream starts only while the reader is within the first few chunks: it always begins at
chunk 0, and what the reader has passed would be fetched for nothing."""
IDLE_SECONDS = 10.0


class Sink(Protocol):
    """What a stream needs from the chunk cache."""

    def claim(self, layout: ChunkLayout, indexes: list[int]) -> dict[int, trio.Event]: ...

    def wanted(self, layout: ChunkLayout, start: int, stop: int) -> list[int]: ...

    def deliver(self, layout: ChunkLayout, index: int, data: bytes) -> None: ...

    def release(self, layout: ChunkLayout, claimed: dict[int, trio.Event]) -> None: ...


@dataclass
class Access:
    """How one object version is being read."""

    next: int
    """The chunk after the last one read."""
    window: int
    """Bytes to prefetch beyond the last chunk read (0 until the access looks sequential)."""
    from_start: bool
    hits: int = 0
    """Reads in a row that continued at ``next``."""
    stream: Stream | None = None


class Readahead:
    """Per object version: the growing window, and the stream when there is one."""

    def __init__(self, max_bytes: int = MAX_BYTES, initial_bytes: int = INITIAL_BYTES) -> None:
        self.max_bytes = max_bytes
        self._initial_bytes = initial_bytes
        self._access: LRUCache[Key, Access] = LRUCache(maxsize=1024)

    @property
    def initial_bytes(self) -> int:
        return min(self._initial_bytes, self.max_bytes)

    def observe(self, key: Key, first: int, last: int) -> Access:
        """Record a read of chunks ``first`` .. ``last``; the access with its window now."""
        access = self._access.get(key)
        if access is None:
            # A first read at the start is taken as the start of a sequential read (cat, cp,
            # dd): prefetch a small window at once. Anywhere else, wait for a second read.
            window = self.initial_bytes if first == 0 else 0
            access = self._access[key] = Access(last + 1, window, first == 0)
        elif first == access.next:
            access.window = min(self.max_bytes, max(self.initial_bytes, 2 * access.window))
            access.next = last + 1
            access.hits += 1
        elif first == access.next - 1:
            access.next = max(access.next, last + 1)  # more of the same chunk: no change
        else:
            self._seek(access, last)
        if access.stream is not None:
            access.stream.advance(access.next)
        return access

    def _seek(self, access: Access, last: int) -> None:
        access.next = last + 1
        access.window = 0
        access.hits = 0
        access.from_start = False
        if access.stream is not None:
            access.stream.stop()
            access.stream = None

    def may_stream(self, access: Access, layout: ChunkLayout) -> bool:
        running = sum(
            1 for a in self._access.values() if a.stream is not None and not a.stream.finished
        )
        return (
            running < MAX_STREAMS
            and access.stream is None
            and access.from_start
            and access.hits > 0  # a second sequential read
            and access.next <= STREAM_START_CHUNKS
            and layout.size >= STREAM_MIN_BYTES
        )

    def start_stream(
        self,
        access: Access,
        store: TrioStore,
        sink: Sink,
        info: ObjectInfo,
        layout: ChunkLayout,
        spawn: Callable[[Stream], None],
    ) -> None:
        chunk = max(1, layout.size // max(1, layout.chunks))
        stream = Stream(store, sink, info, layout, ahead=max(2, self.max_bytes // chunk))
        stream.advance(access.next)
        access.stream = stream
        spawn(stream)

    def forget(self, key: Key) -> None:
        access = self._access.pop(key, None)
        if access is not None and access.stream is not None:
            access.stream.stop()


class Stream:
    """One ``read_stream`` of an object version into the cache, at most ``ahead`` chunks in
    front of the reader. Chunks it will deliver soon are claimed in the cache (marked in
    flight), so readers wait for them instead of fetching them again."""

    def __init__(
        self, store: TrioStore, sink: Sink, info: ObjectInfo, layout: ChunkLayout, ahead: int
    ) -> None:
        self.store = store
        self.sink = sink
        self.info = info
        self.layout = layout
        self.ahead = ahead
        self.reader = 0
        self.delivered = 0
        self._progress = trio.Event()
        self._scope = trio.CancelScope()
        self._claimed: dict[int, trio.Event] = {}
        self.finished = False

    def advance(self, next_chunk: int) -> None:
        if next_chunk > self.reader:
            self.reader = next_chunk
            self._progress.set()

    def stop(self) -> None:
        self._scope.cancel()

    def _claim_ahead(self, start: int) -> None:
        stop = min(self.layout.chunks, self.reader + self.ahead)
        wanted = self.sink.wanted(self.layout, start, stop)
        if wanted:
            self._claimed.update(self.sink.claim(self.layout, wanted))

    async def run(self) -> None:
        index = 0
        batches = self.store.read_stream(self.info)
        with self._scope:
            try:
                self._claim_ahead(0)
                async for batch in batches:
                    for data in batch:
                        self.sink.deliver(self.layout, index, data)
                        event = self._claimed.pop(index, None)
                        if event is not None:
                            self.sink.release(self.layout, {index: event})
                        index += 1
                    self.delivered = index
                    while index >= self.reader + self.ahead:
                        self._progress = trio.Event()
                        with trio.move_on_after(IDLE_SECONDS) as idle:
                            await self._progress.wait()
                        if idle.cancelled_caught:
                            return  # the reader stopped reading: end the stream
                    self._claim_ahead(index)
            except Exception as e:  # readahead is a hint: a failure only costs later fetches
                log.debug("streaming read of %s failed: %r", self.info.name, e)
            finally:
                self.finished = True
                self.sink.release(self.layout, self._claimed)
                self._claimed = {}
                # Stopped or done: end the store's read now (its pump on the asyncio side
                # would otherwise wait until the garbage collector finds the iterator).
                aclose = getattr(batches, "aclose", None)
                if aclose is not None:
                    with trio.CancelScope(shield=True):
                        await aclose()
