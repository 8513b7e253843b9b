"""The backend-neutral object store API that the filesystem is written against.

``ObjectStore`` is the one typed contract. Two backends subclass it:
``objfs.store.nats_store.NatsObjectStore`` (ADR-20 on a real server; it and the ``nats_``
modules it is built from are objfs's only nats importers) and
``objfs.store.memory.MemoryObjectStore`` (in-process, for fast tests and fault injection).
Both run on an asyncio event loop; the filesystem, which runs under trio, reaches them through
``objfs.bridge.TrioStore`` (one hop per call, so calls are coarse: a batch of chunks, a whole
put), which has the same methods and is checked against this contract structurally (it is a
``Protocol``, so a class matches it without inheriting).

Semantics every implementation honours (the contract tests in tests/store/ check them):

- A put replaces atomically: chunks go under a fresh nuid, then the meta is published (rollup),
  then the old chunks are purged. Readers see the old or the new object, never a mix.
- A put or rename whose answer was lost never destroys what it stored: chunks are purged
  only when no live meta refers to them.
- Errors are ``objfs.store.errors`` classes only; a missing or short chunk is ``Corrupt``,
  never a hang; a server that does not answer is ``Unavailable``/``Timeout`` within the
  configured timeout.
- Deleted objects are tombstones: ``info(deleted=True)`` and ``list(deleted=True)`` show them,
  everything else treats them as missing.
- Links follow the Go client's rules: no link to a link, none to a deleted object; a link may
  replace a link but not an object.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, Protocol

DEFAULT_CHUNK_SIZE = 128 * 1024

Chunks = list[bytes]
"""Chunk payloads in order: what ``read_chunks`` returns and ``read_stream`` yields (named, as
the store classes' ``list`` method shadows the builtin in their bodies)."""


@dataclass(frozen=True, slots=True)
class Link:
    """An object's link: to an object (``name`` set) or to a whole bucket (``name`` None)."""

    bucket: str
    name: str | None = None

    @property
    def is_bucket_link(self) -> bool:
        return self.name is None


@dataclass(slots=True)
class ObjectMeta:
    """The part of an object's meta a writer controls (kept by rename, replaced by put)."""

    description: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ObjectInfo:
    """One object's meta as the store holds it (ADR-20's ObjectInfo)."""

    bucket: str
    name: str
    nuid: str
    size: int = 0
    chunks: int = 0
    digest: str = ""
    """``SHA-256=`` + padded base64url of the hash; empty for links and tombstones."""
    mtime_ns: int = 0
    """The meta's modification time, nanoseconds since the epoch."""
    deleted: bool = False
    description: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    link: Link | None = None
    chunk_size: int | None = None
    """``options.max_chunk_size`` as the writer recorded it (None if it did not)."""
    revision: int = 0
    """Stream sequence of the meta message (a strictly increasing version of this name)."""

    @property
    def is_link(self) -> bool:
        return self.link is not None

    @property
    def meta(self) -> ObjectMeta:
        return ObjectMeta(self.description, dict(self.headers), dict(self.metadata))

    def tombstone(self, **changes: Any) -> ObjectInfo:
        """The deleted form of this object (no data, same nuid), with ``changes`` applied."""
        return dataclasses.replace(self, deleted=True, size=0, chunks=0, digest="", **changes)


@dataclass(frozen=True, slots=True)
class ChunkLayout:
    """Where an object's chunks are: their stream sequences and byte offsets.

    ``offsets`` has ``chunks + 1`` entries: chunk ``i`` holds bytes
    ``offsets[i]:offsets[i + 1]``; the last entry is the object's size. ``seqs`` are opaque
    positions the backend uses to fetch chunk ``i`` (stream sequences for NATS).
    """

    bucket: str
    nuid: str
    seqs: Sequence[int]
    offsets: Sequence[int]

    @property
    def chunks(self) -> int:
        return len(self.seqs)

    @property
    def size(self) -> int:
        return self.offsets[-1] if self.offsets else 0

    def chunk_at(self, offset: int) -> int:
        """Index of the chunk holding byte ``offset`` (``chunks`` at or past the end)."""
        if offset >= self.size:
            return self.chunks
        return bisect.bisect_right(self.offsets, offset) - 1


@dataclass(frozen=True, slots=True)
class BucketConfig:
    """What a bucket is created or updated with."""

    name: str
    description: str = ""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_bytes: int = -1
    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    compression: bool = False
    ttl: float = 0.0
    """Seconds an object lives (the stream's max_age); 0 keeps objects forever."""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BucketStatus:
    """A bucket's configuration and usage."""

    config: BucketConfig
    size: int
    """Bytes the backing stream holds (chunks and meta, tombstones included)."""
    sealed: bool = False
    objects: int = 0
    """Live objects (meta subjects that are not tombstones), when the backend can count."""

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True, slots=True)
class AccountUsage:
    """The file storage of the account the store lives in: bytes its file-backed streams use
    (every such bucket, and any other stream of the account), and its limit (None: the
    account has none). Memory buckets count against the account's memory, not this."""

    used: int
    limit: int | None


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One item of a bucket watch.

    ``put``: ``info`` is the object's new meta (a new object, an overwrite, a meta update, a
    link, or the new name of a rename). ``delete``: ``info`` is the tombstone, or for a rename
    done by purging the old meta subject (as the Go client does), a synthetic tombstone of the
    old name that the watch infers from the nuid reappearing under a new name.
    ``snapshot_end``: every object that existed when the watch started has been delivered;
    ``info`` is None.
    ``snapshot``: only in a ``batched`` watch, before ``snapshot_end``: many objects of the
    snapshot at once (``infos``; ``info`` is None), as their ``put`` events would say.
    """

    kind: Literal["put", "delete", "snapshot", "snapshot_end"]
    info: ObjectInfo | None = None
    infos: Sequence[ObjectInfo] = ()


@dataclass(frozen=True, slots=True)
class BucketEvent:
    """One item of the bucket-list watch (``ObjectStore.watch_buckets``).

    ``put``: bucket ``name`` exists (first seen, or its sealed state changed). ``delete``: it is
    gone. ``snapshot_end``: every bucket that existed when the watch started has been
    delivered (``name`` empty).
    """

    kind: Literal["put", "delete", "snapshot_end"]
    name: str = ""
    sealed: bool = False


BUCKET_POLL_INTERVAL = 2.0
"""Seconds between bucket listings of the default (polling) ``watch_buckets``."""


class ObjectStore(Protocol):
    """An object store: buckets of named, chunked, immutable-once-written objects.

    Backends subclass it (and inherit ``get``, ``resolve`` and a polling ``watch_buckets``);
    ``TrioStore`` matches it structurally.
    """

    @property
    def max_chunk_size(self) -> int | None:
        """Largest chunk a put may use (NATS: the server's max_payload); None: no limit."""
        return None

    # -- buckets ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_bucket(self, config: BucketConfig) -> BucketStatus:
        """Create a bucket; Exists if it is there already, InvalidName for a bad name."""

    @abc.abstractmethod
    async def update_bucket(self, config: BucketConfig) -> BucketStatus:
        """Change description, max_bytes, replicas, compression, ttl or metadata."""

    @abc.abstractmethod
    async def delete_bucket(self, name: str) -> None:
        """Delete a bucket and everything in it; NotFound if missing."""

    @abc.abstractmethod
    async def bucket_status(self, name: str, *, count: bool = True) -> BucketStatus:
        """Configuration and usage; NotFound if missing.

        ``count=False``: ``objects`` need not be counted (it may be 0), for callers that want
        the configuration and the sealed flag only; a backend whose count costs O(objects)
        (NATS: a listing of every meta subject) then answers in one round trip."""

    @abc.abstractmethod
    async def list_buckets(self) -> list[BucketStatus]:
        """Every object store bucket on the server (an empty list when there are none)."""

    @abc.abstractmethod
    async def seal_bucket(self, name: str) -> BucketStatus:
        """Make a bucket read-only for ever; later writes raise ReadOnly."""

    @abc.abstractmethod
    async def account_usage(self) -> AccountUsage:
        """The account's storage use and limit (NATS: JetStream account info), for df."""

    # -- objects: metadata -----------------------------------------------------------------
    @abc.abstractmethod
    async def info(self, bucket: str, name: str, *, deleted: bool = False) -> ObjectInfo:
        """An object's meta; NotFound if missing (or deleted, unless ``deleted``)."""

    @abc.abstractmethod
    async def list(self, bucket: str, *, deleted: bool = False) -> list[ObjectInfo]:
        """Every object of a bucket (empty bucket: empty list); tombstones if ``deleted``."""

    @abc.abstractmethod
    async def update_meta(self, bucket: str, name: str, meta: ObjectMeta) -> ObjectInfo:
        """Replace description, headers and metadata; no data is copied."""

    @abc.abstractmethod
    async def rename(
        self, bucket: str, old: str, new: str, *, replace: bool = False, keep_replaced: bool = False
    ) -> ObjectInfo:
        """Give an object a new name without copying data.

        Exists if ``new`` is a live object and ``replace`` is false; with ``replace`` the
        object that was at ``new`` is deleted (its chunks purged) after the rename, or with
        ``keep_replaced`` only its name is: its chunks stay for readers that have it open,
        until ``purge``.
        """

    @abc.abstractmethod
    async def purge(self, bucket: str, nuid: str) -> None:
        """Drop the chunks ``nuid`` of an object no name refers to any more (one replaced
        with ``keep_replaced``, once its last reader is gone)."""

    @abc.abstractmethod
    async def delete(self, bucket: str, name: str) -> ObjectInfo:
        """Tombstone an object, then purge its chunks; returns the tombstone."""

    @abc.abstractmethod
    async def add_link(
        self, bucket: str, name: str, target_bucket: str, target_name: str
    ) -> ObjectInfo:
        """Make ``name`` a link to object ``target_name`` of ``target_bucket``."""

    @abc.abstractmethod
    async def add_bucket_link(self, bucket: str, name: str, target_bucket: str) -> ObjectInfo:
        """Make ``name`` a link to the bucket ``target_bucket``."""

    # -- objects: data ---------------------------------------------------------------------
    @abc.abstractmethod
    async def put(
        self,
        bucket: str,
        name: str,
        source: Source,
        *,
        meta: ObjectMeta | None = None,
        chunk_size: int | None = None,
        if_revision: int | None = None,
    ) -> ObjectInfo:
        """Store ``source`` (read to EOF from its current position) as ``name``.

        Memory stays bounded by the window of in-flight chunks whatever the size. With
        ``if_revision`` the put fails with Exists unless the name's current meta revision is
        that (0: the name must not exist), and nothing is left behind. The check is the
        server's, atomic with the write: ``if_revision=0`` is an exclusive create, of two
        clients racing for one name exactly one wins (O_EXCL across machines).

        ``source`` may be an async iterable of bytes (a streaming put: chunks are published
        as the bytes come, the meta when it ends; an exception it raises abandons the put and
        its chunks). ``meta`` is read only once the source is exhausted, so a streaming
        writer may still change it in place until it ends the source.
        """

    @abc.abstractmethod
    async def layout(self, info: ObjectInfo) -> ChunkLayout:
        """Where the chunks of this version (``info.nuid``) are."""

    @abc.abstractmethod
    async def read_chunks(self, layout: ChunkLayout, first: int, count: int) -> Chunks:
        """Chunks ``first`` .. ``first + count - 1`` (clipped at the end), in one round trip
        where the backend can; Corrupt if one is missing or not the size the layout says."""

    @abc.abstractmethod
    def read_stream(self, info: ObjectInfo, *, window: int = 64) -> AsyncIterator[Chunks]:
        """The object's chunks in order, in batches (fetching ahead up to ``window`` chunks).

        The digest is verified at the end; a mismatch raises Corrupt after the last batch.
        """

    async def get(self, bucket: str, name: str, sink: BinaryIO) -> ObjectInfo:
        """Write the whole object into ``sink``; digest verified. Links are followed."""
        info = await self.resolve(bucket, name)
        async for batch in self.read_stream(info):
            for chunk in batch:
                sink.write(chunk)
        return info

    async def resolve(self, bucket: str, name: str) -> ObjectInfo:
        """The object ``name`` designates: itself, or the object its link points at."""
        info = await self.info(bucket, name)
        if info.link is not None and info.link.name is not None:
            info = await self.info(info.link.bucket, info.link.name)
        return info

    # -- change notices --------------------------------------------------------------------
    @abc.abstractmethod
    def watch(self, bucket: str, *, batched: bool = False) -> AsyncIterator[WatchEvent]:
        """Current state (one ``put`` per live object), ``snapshot_end``, then live changes.

        ``batched``: the current state may come (wholly or in part) as ``snapshot`` events
        of many objects each instead of one ``put`` per object: one item instead of 100,000
        for a big bucket, where each item costs (the bridge carries them one by one)."""

    def watch_buckets(self) -> AsyncIterator[BucketEvent]:
        """Every bucket (``put``), ``snapshot_end``, then buckets created, sealed or deleted.

        This default polls (``poll_buckets``); a backend with change notices (NATS: stream
        advisories) overrides it.
        """
        return poll_buckets(self, BUCKET_POLL_INTERVAL)

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


Source = BinaryIO | bytes | AsyncIterable[bytes]
"""What ``put`` stores: a file, bytes, or bytes arriving over time (see ``put``)."""


async def apieces(source: Source, size: int) -> AsyncIterator[bytes]:
    """``pieces`` of any ``Source``: an async iterable's bytes regrouped into ``size``-byte
    pieces (every piece but the last full), sliced, never joined more than needed."""
    if not isinstance(source, AsyncIterable):
        for piece in pieces(source, size):
            yield piece
        return
    rest = b""
    async for data in source:
        if rest:
            need = size - len(rest)
            rest += data[:need]
            data = data[need:]
            if len(rest) < size:
                continue
            yield rest
            rest = b""
        off = 0
        while len(data) - off >= size:
            yield data[off : off + size]
            off += size
        rest = data[off:]
    if rest:
        yield rest


def pieces(source: BinaryIO | bytes | bytearray | memoryview, size: int) -> Iterator[bytes]:
    """``source`` (read to EOF from its current position) in ``size``-byte pieces, the last
    one shorter; bytes are sliced, not copied."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else bytes(source)
        for off in range(0, len(data), size):
            yield data[off : off + size]
        return
    while True:
        piece = source.read(size)
        if not piece:
            return
        # A raw/non-blocking file or a pipe may return short reads: top up to a full chunk
        # so that every chunk but the last has the bucket's size (readers rely on it).
        while len(piece) < size:
            more = source.read(size - len(piece))
            if not more:
                break
            piece += more
        yield piece


async def poll_buckets(store: ObjectStore, interval: float) -> AsyncIterator[BucketEvent]:
    """``watch_buckets`` by listing the buckets every ``interval`` seconds and reporting the
    differences."""
    known: dict[str, bool] = {}
    first = True
    while True:
        now = {s.name: s.sealed for s in await store.list_buckets()}
        for event in listing_events(known, now, first=first):
            yield event
        known, first = now, False
        await asyncio.sleep(interval)


def listing_events(
    known: dict[str, bool], now: dict[str, bool], *, first: bool
) -> list[BucketEvent]:
    """Events of a bucket-list watch for a fresh listing ``now``: the changes since ``known``,
    then, after the ``first`` listing, ``snapshot_end``."""
    events = bucket_changes(known, now)
    if first:
        events.append(BucketEvent("snapshot_end"))
    return events


def bucket_changes(known: dict[str, bool], now: dict[str, bool]) -> list[BucketEvent]:
    """Events that turn the bucket list ``known`` (name -> sealed) into ``now``."""
    events = [BucketEvent("delete", name) for name in sorted(known.keys() - now.keys())]
    events += [
        BucketEvent("put", name, sealed)
        for name, sealed in sorted(now.items())
        if known.get(name) != sealed
    ]
    return events
