"""An in-process ``ObjectStore``: the same semantics as the NATS backend, no server.

Owns fast tests of the layers above the store and fault injection for them. It mimics what a
JetStream-backed bucket does closely enough that the contract suite (tests/store/) passes on
both backends:

- One global, strictly increasing sequence counter stands in for stream sequences: every
  chunk and every meta publish takes the next number, so ``ObjectInfo.revision`` and
  ``ChunkLayout.seqs`` behave like NATS's.
- A put reads its source in ``chunk_size`` pieces (the bucket's ``chunk_size`` by default)
  under a fresh nuid, then swaps the meta in and drops the old chunks in one step, so readers
  see the old or the new object, never a mix.
- Deletes leave tombstones (deleted, size 0, chunks 0, digest "", nuid kept). A rename moves
  the meta to the new name and leaves a tombstone on the old one; a watch reports the old
  name's delete before the new name's put, as the NATS watch does (for a renamed link, the
  other way round). Like the NATS backend, put, delete and links set ``mtime_ns``; rename and
  update_meta keep it. ``list`` is sorted by name.
- ``max_bytes`` is checked the way a ``discard new`` stream checks it: the old chunks still
  count while the new ones are stored, so a replacing put needs room for both. Sizes are
  approximations of JetStream's per-message accounting (subject + headers + payload + 16).
  Meta-only writes (delete, rename, links, update_meta) are not refused for space.
- ``ttl`` is recorded but objects do not expire.

Fault injection (for tests of upper layers):

- ``fail_next(method, exc)``: the next call of ``method`` (e.g. ``"read_chunks"``,
  ``"put"``, ``"watch"``) raises ``exc`` before doing anything; calls queue up, one failure per
  later call.
- ``fail_after(method, exc)``: the next call of ``put``, ``rename`` or ``delete`` does its
  work, then raises ``exc``: an acknowledgement lost after the store acted.
- ``drop_chunk(bucket, nuid, index)``: forget one chunk's bytes; ``layout`` still answers (as
  a stream whose message vanished would still be described by the meta), ``read_chunks`` and
  ``read_stream`` raise Corrupt when they reach it.
- ``delay``: seconds every call (and every watch event) sleeps first, to play a slow server.
- ``calls``: how many times each method was entered, to check caching layers.

A watch ends with NotFound when its bucket is deleted and with Unavailable when the store is
closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from objfs.store.api import (
    AccountUsage,
    BucketConfig,
    BucketEvent,
    BucketStatus,
    ChunkLayout,
    Chunks,
    Link,
    ObjectInfo,
    ObjectMeta,
    ObjectStore,
    Source,
    WatchEvent,
    apieces,
    poll_buckets,
)
from objfs.store.errors import (
    Corrupt,
    Exists,
    InvalidLink,
    NoSpace,
    NotFound,
    ReadOnly,
    StoreError,
    Unavailable,
)
from objfs.store.names import check_bucket, check_object, encode_name
from objfs.store.wire import format_digest

_NUID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MSG_OVERHEAD = 16
"""JetStream's memstore counts a message as subject + headers + payload + 16 bytes."""
_ROLLUP_HDR = len("NATS/1.0\r\nNats-Rollup: sub\r\n\r\n")
_META_JSON_BASE = 200
"""Rough size of an ObjectInfo JSON without its variable fields."""


def _nuid() -> str:
    return "".join(secrets.choice(_NUID_ALPHABET) for _ in range(22))


def _copy(info: ObjectInfo) -> ObjectInfo:
    """A copy callers may mutate without changing the store."""
    return dataclasses.replace(
        info,
        headers={k: list(v) for k, v in info.headers.items()},
        metadata=dict(info.metadata),
    )


@dataclass(slots=True)
class _Chunks:
    """The chunk messages of one put: their sequences and payloads (None once dropped)."""

    seqs: list[int]
    data: list[bytes | None]
    subject_len: int

    @property
    def stored_bytes(self) -> int:
        return sum(len(d) + self.subject_len + _MSG_OVERHEAD for d in self.data if d is not None)


@dataclass(slots=True)
class _Bucket:
    config: BucketConfig
    sealed: bool = False
    metas: dict[str, ObjectInfo] = field(default_factory=dict)
    chunks: dict[str, _Chunks] = field(default_factory=dict)
    watchers: list[asyncio.Queue[WatchEvent | StoreError]] = field(default_factory=list)

    def meta_bytes(self, info: ObjectInfo) -> int:
        subject = len(f"$O.{self.config.name}.M.") + len(encode_name(info.name))
        body = (
            _META_JSON_BASE
            + len(info.name.encode())
            + len(info.description.encode())
            + sum(len(k) + sum(len(v) + 4 for v in vs) for k, vs in info.headers.items())
            + sum(len(k) + len(v) + 6 for k, v in info.metadata.items())
        )
        return subject + _ROLLUP_HDR + body + _MSG_OVERHEAD

    def size(self) -> int:
        return sum(self.meta_bytes(i) for i in self.metas.values()) + sum(
            c.stored_bytes for c in self.chunks.values()
        )

    def live(self, name: str) -> ObjectInfo | None:
        info = self.metas.get(name)
        return info if info is not None and not info.deleted else None

    def existing(self, name: str) -> ObjectInfo:
        """The live object ``name``; NotFound if there is none."""
        info = self.live(name)
        if info is None:
            raise NotFound(f"object {name!r} not found in {self.config.name!r}")
        return info

    def notify(self, event: WatchEvent | StoreError) -> None:
        for q in self.watchers:
            q.put_nowait(event if isinstance(event, StoreError) else _event_copy(event))


def _event_copy(event: WatchEvent) -> WatchEvent:
    return WatchEvent(event.kind, _copy(event.info) if event.info is not None else None)


class MemoryObjectStore(ObjectStore):
    """Buckets held in this process (see the module docstring for fault injection)."""

    bucket_poll_interval = 0.05
    """Seconds between the listings of ``watch_buckets``: listing is cheap in memory."""

    def __init__(self, *, delay: float = 0.0, account_limit: int | None = None) -> None:
        self.delay = delay
        self.account_limit = account_limit
        """What ``account_usage`` reports as the account's storage limit."""
        self.calls: Counter[str] = Counter()
        self._buckets: dict[str, _Bucket] = {}
        self._seq = 0
        self._faults: defaultdict[str, deque[BaseException]] = defaultdict(deque)
        self._faults_after: defaultdict[str, deque[BaseException]] = defaultdict(deque)
        self._closed = False

    # -- fault injection -------------------------------------------------------------------
    def fail_next(self, method: str, exc: BaseException) -> None:
        """Make the next call of ``method`` raise ``exc``."""
        if not callable(getattr(self, method, None)):
            raise AttributeError(f"MemoryObjectStore has no method {method!r}")
        self._faults[method].append(exc)

    def fail_after(self, method: str, exc: BaseException) -> None:
        """Make the next call of ``method`` do its work, then raise ``exc`` (an answer lost
        after the server acted: the caller cannot tell whether the call took effect)."""
        if not callable(getattr(self, method, None)):
            raise AttributeError(f"MemoryObjectStore has no method {method!r}")
        self._faults_after[method].append(exc)

    def _leave(self, method: str) -> None:
        faults = self._faults_after.get(method)
        if faults:
            raise faults.popleft()

    def drop_chunk(self, bucket: str, nuid: str, index: int) -> None:
        """Forget chunk ``index`` of the put ``nuid`` (reads of it raise Corrupt)."""
        self._bucket(bucket).chunks[nuid].data[index] = None

    async def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self._closed:
            raise Unavailable("store is closed")
        if self.delay:
            await asyncio.sleep(self.delay)
        faults = self._faults.get(method)
        if faults:
            raise faults.popleft()

    # -- helpers ---------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _bucket(self, name: str) -> _Bucket:
        check_bucket(name)
        b = self._buckets.get(name)
        if b is None:
            raise NotFound(f"bucket {name!r} not found")
        return b

    def _writable(self, name: str) -> _Bucket:
        b = self._bucket(name)
        if b.sealed:
            raise ReadOnly(f"bucket {name!r} is sealed")
        return b

    def _status(self, b: _Bucket) -> BucketStatus:
        live = sum(1 for i in b.metas.values() if not i.deleted)
        return BucketStatus(config=b.config, size=b.size(), sealed=b.sealed, objects=live)

    def _publish(self, b: _Bucket, info: ObjectInfo, *, notify: bool = True) -> ObjectInfo:
        """Store ``info`` as the meta of its name (a rollup) and tell the watchers.

        ``mtime_ns`` is the caller's: like the NATS backend, a put, delete or link sets it and
        a rename or meta update keeps the object's.
        """
        info.bucket = b.config.name
        info.revision = self._next_seq()
        b.metas[info.name] = info
        if notify:
            b.notify(WatchEvent("delete" if info.deleted else "put", info))
        return _copy(info)

    def _purge(self, b: _Bucket, nuid: str) -> None:
        # Another live meta may share the nuid only transiently (rename moves it first).
        if not any(i.nuid == nuid and not i.deleted for i in b.metas.values()):
            b.chunks.pop(nuid, None)

    # -- buckets ---------------------------------------------------------------------------
    async def create_bucket(self, config: BucketConfig) -> BucketStatus:
        await self._enter("create_bucket")
        check_bucket(config.name)
        if config.name in self._buckets:
            raise Exists(f"bucket {config.name!r} exists")
        b = _Bucket(config=dataclasses.replace(config, metadata=dict(config.metadata)))
        self._buckets[config.name] = b
        return self._status(b)

    async def update_bucket(self, config: BucketConfig) -> BucketStatus:
        await self._enter("update_bucket")
        b = self._writable(config.name)
        # The storage type is fixed at creation, as a stream's is.
        b.config = dataclasses.replace(
            config,
            storage=b.config.storage,
            metadata=dict(config.metadata),
        )
        return self._status(b)

    async def delete_bucket(self, name: str) -> None:
        await self._enter("delete_bucket")
        b = self._bucket(name)
        del self._buckets[name]
        b.notify(NotFound(f"bucket {name!r} deleted"))

    async def bucket_status(self, name: str, *, count: bool = True) -> BucketStatus:
        await self._enter("bucket_status")  # counting is cheap here: always done
        return self._status(self._bucket(name))

    async def list_buckets(self) -> list[BucketStatus]:
        await self._enter("list_buckets")
        return [self._status(self._buckets[n]) for n in sorted(self._buckets)]

    async def seal_bucket(self, name: str) -> BucketStatus:
        await self._enter("seal_bucket")
        b = self._bucket(name)
        b.sealed = True
        return self._status(b)

    async def account_usage(self) -> AccountUsage:
        await self._enter("account_usage")
        # File storage, as JetStream's account "storage" (memory buckets count elsewhere).
        used = sum(b.size() for b in self._buckets.values() if b.config.storage == "file")
        return AccountUsage(used, self.account_limit)

    # -- objects: metadata -----------------------------------------------------------------
    async def info(self, bucket: str, name: str, *, deleted: bool = False) -> ObjectInfo:
        await self._enter("info")
        b = self._bucket(bucket)
        check_object(name)
        info = b.metas.get(name)
        if info is None or (info.deleted and not deleted):
            raise NotFound(f"object {name!r} not found in {bucket!r}")
        return _copy(info)

    async def list(self, bucket: str, *, deleted: bool = False) -> list[ObjectInfo]:
        await self._enter("list")
        b = self._bucket(bucket)
        infos = [i for i in b.metas.values() if deleted or not i.deleted]
        return [_copy(i) for i in sorted(infos, key=lambda i: i.name)]

    async def update_meta(self, bucket: str, name: str, meta: ObjectMeta) -> ObjectInfo:
        await self._enter("update_meta")
        b = self._writable(bucket)
        check_object(name)
        old = b.existing(name)
        info = _copy(old)
        info.description = meta.description
        info.headers = {k: list(v) for k, v in meta.headers.items()}
        info.metadata = dict(meta.metadata)
        return self._publish(b, info)

    async def rename(
        self, bucket: str, old: str, new: str, *, replace: bool = False, keep_replaced: bool = False
    ) -> ObjectInfo:
        await self._enter("rename")
        b = self._writable(bucket)
        check_object(old)
        check_object(new)
        src = b.existing(old)
        if old == new:
            return _copy(src)
        dst = b.live(new)
        if dst is not None and not replace:
            raise Exists(f"object {new!r} exists in {bucket!r}")
        moved = _copy(src)
        moved.name = new
        result = self._publish(b, moved, notify=False)
        tomb = _copy(src).tombstone()
        self._publish(b, tomb, notify=False)
        # The NATS watch reports a moved object's old name gone before the new one appears
        # (it infers the rename from the nuid); a moved link shows in publish order.
        events = [WatchEvent("put", moved), WatchEvent("delete", tomb)]
        if src.link is None:
            events.reverse()
        for event in events:
            b.notify(event)
        if dst is not None and dst.nuid != src.nuid and not keep_replaced:
            self._purge(b, dst.nuid)
        self._leave("rename")
        return result

    async def purge(self, bucket: str, nuid: str) -> None:
        await self._enter("purge")
        self._purge(self._writable(bucket), nuid)
        self._leave("purge")

    async def delete(self, bucket: str, name: str) -> ObjectInfo:
        await self._enter("delete")
        b = self._writable(bucket)
        check_object(name)
        old = b.existing(name)
        tomb = _copy(old).tombstone(mtime_ns=time.time_ns())
        result = self._publish(b, tomb)
        self._purge(b, old.nuid)
        self._leave("delete")
        return result

    def _check_link_slot(self, b: _Bucket, name: str) -> None:
        existing = b.live(name)
        if existing is not None and existing.link is None:
            raise Exists(f"object {name!r} exists and is not a link")

    async def add_link(
        self, bucket: str, name: str, target_bucket: str, target_name: str
    ) -> ObjectInfo:
        await self._enter("add_link")
        b = self._writable(bucket)
        check_object(name)
        check_object(target_name)
        target = self._bucket(target_bucket).live(target_name)
        if target is None:
            raise NotFound(f"link target {target_bucket}/{target_name} not found")
        if target.link is not None:
            raise InvalidLink("a link cannot point at another link")
        self._check_link_slot(b, name)
        info = ObjectInfo(
            bucket=bucket,
            name=name,
            nuid=_nuid(),
            mtime_ns=time.time_ns(),
            link=Link(target_bucket, target_name),
        )
        return self._publish(b, info)

    async def add_bucket_link(self, bucket: str, name: str, target_bucket: str) -> ObjectInfo:
        await self._enter("add_bucket_link")
        b = self._writable(bucket)
        check_object(name)
        self._bucket(target_bucket)
        self._check_link_slot(b, name)
        info = ObjectInfo(
            bucket=bucket,
            name=name,
            nuid=_nuid(),
            mtime_ns=time.time_ns(),
            link=Link(target_bucket),
        )
        return self._publish(b, info)

    # -- objects: data ---------------------------------------------------------------------
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
        await self._enter("put")
        b = self._writable(bucket)
        check_object(name)
        # 0 or None: the bucket's chunk size, as the NATS backend does.
        size_limit = chunk_size or b.config.chunk_size
        if size_limit <= 0:
            raise ValueError(f"chunk_size must be positive, not {size_limit}")
        if if_revision is not None:
            current = b.live(name)
            have = current.revision if current is not None else 0
            if have != if_revision:
                raise Exists(f"object {name!r} is at revision {have}, not {if_revision}")
        sha = hashlib.sha256()
        chunks: list[bytes] = []
        total = 0
        async for piece in apieces(source, size_limit):
            sha.update(piece)
            chunks.append(bytes(piece))
            total += len(piece)
        nuid = _nuid()
        subject_len = len(f"$O.{bucket}.C.{nuid}")
        m = meta or ObjectMeta()
        info = ObjectInfo(
            bucket=bucket,
            name=name,
            nuid=nuid,
            size=total,
            chunks=len(chunks),
            digest=format_digest(sha.digest()),
            description=m.description,
            headers={k: list(v) for k, v in m.headers.items()},
            metadata=dict(m.metadata),
            chunk_size=size_limit,
            mtime_ns=time.time_ns(),
        )
        new_bytes = sum(len(p) + subject_len + _MSG_OVERHEAD for p in chunks)
        if (
            b.config.max_bytes >= 0
            and b.size() + new_bytes + b.meta_bytes(info) > b.config.max_bytes
        ):
            raise NoSpace(f"bucket {bucket!r} would exceed max_bytes {b.config.max_bytes}")
        b.chunks[nuid] = _Chunks(
            seqs=[self._next_seq() for _ in chunks], data=list(chunks), subject_len=subject_len
        )
        old = b.live(name)
        result = self._publish(b, info)
        if old is not None and old.nuid != nuid:
            self._purge(b, old.nuid)
        self._leave("put")
        return result

    async def layout(self, info: ObjectInfo) -> ChunkLayout:
        await self._enter("layout")
        return self._layout(info)

    def _layout(self, info: ObjectInfo) -> ChunkLayout:
        b = self._bucket(info.bucket)
        if info.chunks == 0:
            return ChunkLayout(info.bucket, info.nuid, [], [0])
        rec = b.chunks.get(info.nuid)
        if rec is None or len(rec.seqs) != info.chunks:
            raise Corrupt(f"chunks of {info.name!r} ({info.nuid}) are missing")
        offsets = [0]
        for i, d in enumerate(rec.data):
            # A dropped chunk keeps the size the meta implies, so the layout stays whole.
            if d is not None:
                offsets.append(offsets[-1] + len(d))
            else:
                cs = info.chunk_size or b.config.chunk_size
                offsets.append(min(info.size, (i + 1) * cs))
        return ChunkLayout(info.bucket, info.nuid, list(rec.seqs), offsets)

    async def read_chunks(self, layout: ChunkLayout, first: int, count: int) -> Chunks:
        await self._enter("read_chunks")
        return self._read(layout, first, count)

    def _read(self, layout: ChunkLayout, first: int, count: int) -> Chunks:
        if first < 0 or count < 0:
            raise ValueError("first and count must not be negative")
        b = self._bucket(layout.bucket)
        last = min(first + count, layout.chunks)
        if first >= last:
            return []
        rec = b.chunks.get(layout.nuid)
        if rec is None:
            raise Corrupt(f"chunks of {layout.nuid} are missing")
        out: list[bytes] = []
        for i in range(first, last):
            d = rec.data[i] if i < len(rec.data) else None
            want = layout.offsets[i + 1] - layout.offsets[i]
            if d is None or len(d) != want:
                raise Corrupt(f"chunk {i} of {layout.nuid} is missing or {want} bytes short")
            out.append(d)
        return out

    async def read_stream(self, info: ObjectInfo, *, window: int = 64) -> AsyncIterator[Chunks]:
        await self._enter("read_stream")
        if info.link is not None and info.link.name is not None:
            # Internal lookups: no extra call counts or injected faults.
            target = self._bucket(info.link.bucket).live(info.link.name)
            if target is None:
                raise NotFound(f"link target {info.link.bucket}/{info.link.name} not found")
            info = target
        lay = self._layout(info)
        sha = hashlib.sha256()
        step = max(1, window)
        for first in range(0, lay.chunks, step):
            if self.delay:
                await asyncio.sleep(self.delay)
            batch = self._read(lay, first, step)
            for chunk in batch:
                sha.update(chunk)
            yield batch
        if info.digest and format_digest(sha.digest()) != info.digest:
            raise Corrupt(f"digest mismatch for {info.name!r}")

    # -- change notices --------------------------------------------------------------------
    async def watch(self, bucket: str, *, batched: bool = False) -> AsyncIterator[WatchEvent]:
        await self._enter("watch")
        b = self._bucket(bucket)
        queue: asyncio.Queue[WatchEvent | StoreError] = asyncio.Queue()
        # Snapshot and registration happen with no await between, so no change is missed.
        snapshot = sorted((i for i in b.metas.values() if not i.deleted), key=lambda i: i.revision)
        if batched:
            queue.put_nowait(WatchEvent("snapshot", infos=[_copy(info) for info in snapshot]))
        else:
            for info in snapshot:
                queue.put_nowait(WatchEvent("put", _copy(info)))
        queue.put_nowait(WatchEvent("snapshot_end"))
        b.watchers.append(queue)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, StoreError):
                    raise item
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield item
        finally:
            if queue in b.watchers:
                b.watchers.remove(queue)

    def watch_buckets(self) -> AsyncIterator[BucketEvent]:
        return poll_buckets(self, self.bucket_poll_interval)

    async def close(self) -> None:
        self._closed = True
        for b in self._buckets.values():
            b.notify(Unavailable("store closed"))
