"""The read path of ``NatsObjectStore``: chunk layouts, and chunks read fast and checked.

``NatsReader`` is the part of the store that reads: the store builds it with what it uses (the
connection, its JetStream client, the timeout, the lean reader's credentials) and delegates
``layout``, ``read_chunks`` and ``read_stream`` to it. It owns the layout cache (``put`` fills
it through ``remember``) and the read connections.

- ``layout()`` of an object this process wrote costs nothing: ``put`` caches the stream
  sequences its acks gave. Otherwise the first and last chunk are read (two direct gets); if
  they show one contiguous put the layout is computed, else a headers-only listing of the chunk
  subject gives it exactly.
- Reads use ADR-31 batch direct gets, pipelined; each message's sequence and size is checked
  against the layout, so a missing chunk is Corrupt at once instead of a hang. ``read_stream``
  of a large object uses an ephemeral push consumer instead (its pending count at creation
  tells a missing chunk up front), and checks the digest at the end.
- Both go through ``nats_bulk``'s lean reader on a second connection, opened with the same
  options as nats-py's (credentials, TLS, prefixes): nats-py's receive path cost more CPU than
  the server sending the data. Over websockets (or if the lean connection cannot be opened)
  reads use nats-py's connection, the same requests. Either is a ``ChunkSource``
  (``nats_sources``); the protocol rules both follow are ``nats_protocol``'s.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Protocol

from cachetools import LRUCache
from nats.aio.client import Client

from objfs.options import ConnectOptions
from objfs.store import errors
from objfs.store.api import ChunkLayout, ObjectInfo
from objfs.store.nats_bulk import BulkConnection, HashChain, Unsupported
from objfs.store.nats_js import (
    BatchGetter,
    JetStream,
    StoredMsg,
    consume_snapshot,
    delete_consumer_quietly,
)
from objfs.store.nats_protocol import consumer_create, push_consumer_config
from objfs.store.nats_retry import Patience
from objfs.store.nats_sources import BulkSource, ChunkSource, NatsPySource, PendingChunks
from objfs.store.nats_subjects import bucket_stream, chunk_subject
from objfs.store.wire import parse_digest

# The store's logger, as before the split: the log lines keep their name.
log = logging.getLogger("objfs.store.nats_store")

BATCH_BYTES = 4 << 20
"""Bytes asked for in one batch direct get (32 chunks of 128 KiB)."""

AHEAD_BYTES = 16 << 20
"""At most this much requested and not yet received, per read: the server's per-client
``max_pending`` (64 MiB) cuts a connection that has more waiting for it (measured)."""

PUSH_MIN_BYTES = 16 << 20
"""``read_stream`` of objects at least this big uses a push consumer on the lean reader:
it cost nats-server about 13 % less CPU than batch direct gets (measured, BENCHMARKS.md);
under this size the consumer's create and delete round trips are not worth it."""

BULK_RETRY = 1.0
"""Seconds to read through nats-py after the lean connection could not be opened."""

LAYOUT_CACHE = 512
"""Layouts of objects this process wrote (nuid -> layout), kept for a free ``layout()``."""


class OpenBulk(Protocol):
    """How the reader opens its lean connection (``BulkConnection.open``)."""

    def __call__(
        self,
        host: str,
        port: int,
        *,
        auth: ConnectOptions | None,
        timeout: float,
        name: str,
        secure: bool = False,
    ) -> Awaitable[BulkConnection]: ...


class NatsReader:
    """``layout``, ``read_chunks`` and ``read_stream`` of ``NatsObjectStore``."""

    def __init__(
        self,
        nc: Client,
        js: JetStream,
        timeout: float,
        *,
        bulk_auth: ConnectOptions | None,
        open_bulk: OpenBulk = BulkConnection.open,
    ) -> None:
        """``bulk_auth``: how the lean reader connects (the options ``nc`` was connected
        with); None reads through ``nc`` only."""
        self.nc = nc
        self.js = js
        self.timeout = timeout
        self._open_bulk = open_bulk
        self._getter: BatchGetter | None = None
        self._bulk_auth = bulk_auth
        self._bulk: BulkConnection | None = None
        self._bulk_lock = asyncio.Lock()
        self._bulk_retry_at = 0.0
        self._layouts: LRUCache[tuple[str, str], ChunkLayout] = LRUCache(LAYOUT_CACHE)
        self.replicated: set[str] = set()
        """Buckets with replicas (the store learns them): a chunk a replica has not got yet
        is asked for again until the timeout, instead of being Corrupt at once."""

    def remember(self, layout: ChunkLayout) -> None:
        """The layout of an object just written (its acks gave the sequences)."""
        self._layouts[(layout.bucket, layout.nuid)] = layout

    def forget(self, bucket: str, nuid: str) -> None:
        """Chunks of ``nuid`` are being purged: its layout is no longer true."""
        self._layouts.pop((bucket, nuid), None)

    async def close(self) -> None:
        self._bulk_auth = None  # no new lean connection after this
        if self._bulk is not None:
            self._bulk.close()
        if self._getter is not None:
            await self._getter.close()

    async def layout(self, info: ObjectInfo) -> ChunkLayout:
        bucket, nuid = info.bucket, info.nuid
        if info.chunks == 0 or info.link is not None:
            if info.size:
                raise errors.Corrupt(f"{bucket}/{info.name}: {info.size} bytes in no chunk")
            return ChunkLayout(bucket, nuid, [], [0])
        cached = self._layouts.get((bucket, nuid))
        if cached is not None:
            return cached
        stream, subject = bucket_stream(bucket), chunk_subject(bucket, nuid)
        first, last = await asyncio.gather(
            self.js.direct_get(stream, {"seq": 1, "next_by_subj": subject}),
            self.js.direct_last(stream, subject),
        )
        n = info.chunks
        if (first is None or last is None) and bucket in self.replicated:
            # A replica behind the leader may not have them yet: the listing is exact.
            lay = await self._layout_listed(info)
            self._layouts[(bucket, nuid)] = lay
            return lay
        if first is None or last is None:
            raise errors.Corrupt(f"{bucket}/{info.name}: chunks of {nuid} missing")
        width = len(first.data)
        tail = info.size - (n - 1) * width
        if last.seq - first.seq == n - 1 and 0 < tail <= width and len(last.data) == tail:
            # One put, contiguous: every chunk but the last is the first one's size.
            lay = ChunkLayout(
                bucket,
                nuid,
                range(first.seq, last.seq + 1),
                [*range(0, (n - 1) * width + 1, width), info.size] if n > 1 else [0, tail],
            )
        else:
            lay = await self._layout_listed(info)
        self._layouts[(bucket, nuid)] = lay
        return lay

    async def _layout_listed(self, info: ObjectInfo) -> ChunkLayout:
        """The exact layout from a headers-only listing of the chunk subject."""
        seqs: list[int] = []
        offsets = [0]

        def take(m: StoredMsg) -> None:
            seqs.append(m.seq)
            offsets.append(offsets[-1] + int(m.headers.get("Nats-Msg-Size", 0)))

        subject = chunk_subject(info.bucket, info.nuid)
        await consume_snapshot(
            self.js,
            bucket_stream(info.bucket),
            subject,
            headers_only=True,
            deliver_policy="all",
            on_msg=take,
        )
        if len(seqs) != info.chunks or offsets[-1] != info.size:
            raise errors.Corrupt(
                f"{info.bucket}/{info.name}: {len(seqs)} chunks, {offsets[-1]} bytes stored; "
                f"meta says {info.chunks} chunks, {info.size} bytes"
            )
        return ChunkLayout(info.bucket, info.nuid, seqs, offsets)

    async def _batch_getter(self) -> BatchGetter:
        if self._getter is None:
            self._getter = await BatchGetter(self.js).start()
        return self._getter

    async def bulk_conn(self) -> BulkConnection | None:
        """The lean reader's connection, opened on first use; None: read through nats-py.
        (The watch reads its snapshots through it too.)"""

        bulk = self._bulk
        if bulk is not None and bulk.is_open:
            return bulk
        if self._bulk_auth is None or time.monotonic() < self._bulk_retry_at:
            return None
        async with self._bulk_lock:
            if self._bulk is not None and self._bulk.is_open:
                return self._bulk
            self._bulk = None
            url = self.nc.connected_url
            if url is None or self.nc.is_closed or not self.nc.is_connected:
                return None  # nats-py is reconnecting: its own path reports the outage
            if url.scheme in ("ws", "wss"):
                self._no_bulk(f"{url.scheme}:// is a websocket; the lean reader speaks TCP")
                return None
            auth = self._bulk_auth
            if not (auth.user or auth.token) and url.username:
                # Credentials in the server URL, as nats-py reads them.
                auth = (
                    dataclasses.replace(auth, user=url.username, password=url.password or "")
                    if url.password is not None
                    else dataclasses.replace(auth, token=url.username)
                )
            try:
                self._bulk = await self._open_bulk(
                    url.hostname or "127.0.0.1",
                    url.port or 4222,
                    auth=auth,
                    timeout=self.timeout,
                    name=f"{self.nc.options.get('name') or 'objfs'}-bulk",
                    secure=url.scheme == "tls",
                )
            except Unsupported as e:
                self._no_bulk(str(e))
                return None
            except errors.StoreError as e:
                log.info("lean bulk reader unavailable for now, reading through nats-py: %s", e)
                self._bulk_retry_at = time.monotonic() + BULK_RETRY
                return None
            return self._bulk

    def _no_bulk(self, why: str) -> None:
        log.info("reads go through nats-py (the lean bulk reader cannot: %s)", why)
        self._bulk_auth = None

    async def _source(self) -> ChunkSource:
        """The lean reader when it can serve, else nats-py's connection (chosen per batch:
        a lean connection lost mid-read is replaced, or the read goes on through nats-py)."""
        bulk = await self.bulk_conn()
        if bulk is not None:
            return BulkSource(bulk)
        return NatsPySource(await self._batch_getter())

    async def _request(
        self, layout: ChunkLayout, first: int, count: int, chain: HashChain | None = None
    ) -> PendingChunks:
        """Ask for chunks ``first`` .. ``first + count - 1`` now; await the result later."""
        stream, subject = bucket_stream(layout.bucket), chunk_subject(layout.bucket, layout.nuid)
        source = await self._source()
        return await source.request(stream, layout.seqs[first], count, subject, chain, first)

    def _verify(
        self, layout: ChunkLayout, first: int, seqs: list[int], datas: list[bytes]
    ) -> list[bytes]:
        """``datas`` if they are chunks ``first``.. of ``layout`` (by sequence and size)."""
        lseqs, offsets = layout.seqs, layout.offsets
        for i, seq in enumerate(seqs):
            k = first + i
            if k >= len(lseqs) or seq != lseqs[k]:
                expected = lseqs[k] if k < len(lseqs) else "none"
                raise errors.Corrupt(
                    f"{layout.bucket} object {layout.nuid}: chunk {k} missing "
                    f"(expected seq {expected}, got {seq})"
                )
            if len(datas[i]) != offsets[k + 1] - offsets[k]:
                raise errors.Corrupt(
                    f"{layout.bucket} object {layout.nuid}: chunk {k} is {len(datas[i])} "
                    f"bytes, expected {offsets[k + 1] - offsets[k]}"
                )
        return datas

    async def _chunk_batches(
        self,
        layout: ChunkLayout,
        first: int,
        count: int,
        window: int,
        chain: HashChain | None = None,
    ) -> AsyncGenerator[list[bytes], None]:
        """Chunks ``first`` .. ``first + count - 1`` in order, in verified batches, with up to
        ``window`` chunks (and ``AHEAD_BYTES``) requested ahead. With ``chain``, the lean
        reader hashes chunks as they arrive in order; the caller hashes the rest."""

        width = max(1, -(-layout.size // max(1, layout.chunks)))  # mean chunk size, rounded up
        per = max(1, min(BATCH_BYTES // width, window // 2 or 1))
        ahead = max(per, min(window, AHEAD_BYTES // width))
        inflight: collections.deque[tuple[int, int, PendingChunks]] = collections.deque()
        issued = done = 0
        patience = Patience(self.timeout)
        try:
            while done < count:
                try:
                    while issued < count and issued - done < ahead:
                        n = min(per, count - issued)
                        pending = await self._request(layout, first + issued, n, chain)
                        inflight.append((first + issued, n, pending))
                        issued += n
                    k, n, pending = inflight[0]
                    got = self._verify(layout, k, *await pending.result())
                    while len(got) < n:
                        # A batch the server cut short (64 MiB cap) is continued, not an error.
                        more_at = k + len(got)
                        more = await self._request(layout, more_at, n - len(got), chain)
                        rest = self._verify(layout, more_at, *await more.result())
                        if not rest:
                            raise errors.Corrupt(
                                f"{layout.bucket} object {layout.nuid}: chunk {more_at} missing"
                            )
                        got += rest
                except (errors.Unavailable, errors.Corrupt) as e:
                    # Connection lost, server restarting: ask again from the first chunk not
                    # received, on whichever connection serves now (nats_retry). A chunk
                    # missing from a replicated bucket may be on a replica that is behind.
                    if isinstance(e, errors.Corrupt) and layout.bucket not in self.replicated:
                        raise
                    await patience.failed(e)
                    for _, _, pending in inflight:
                        pending.cancel()
                    inflight.clear()
                    issued = done
                    continue
                patience.progress()
                inflight.popleft()
                done += n
                yield got
        finally:
            for _, _, pending in inflight:
                pending.cancel()

    async def _pushed_chunks(
        self, bulk: BulkConnection, layout: ChunkLayout, chain: HashChain
    ) -> AsyncGenerator[list[bytes], None]:
        """Every chunk of ``layout`` in order, verified, from an ephemeral push consumer
        delivering to the lean reader (flow control answered there, as credit)."""

        stream, subject = bucket_stream(layout.bucket), chunk_subject(layout.bucket, layout.nuid)
        n = layout.chunks
        push = bulk.push_read(chain=chain, limit=AHEAD_BYTES)
        name: str | None = None
        try:
            config = push_consumer_config(
                push.subject.decode(),
                subject,
                deliver_policy="by_start_sequence",
                opt_start_seq=layout.seqs[0],
                heartbeat=max(1.0, self.timeout),
                inactive_threshold=max(30.0, 3 * self.timeout),
            )
            resp = await self.js.api(*consumer_create(stream, config))
            name = resp.get("name")
            stored = int(resp.get("num_pending", 0))
            if stored < n:  # chunks missing: say so now, do not wait for them
                raise errors.Corrupt(
                    f"{layout.bucket} object {layout.nuid}: {stored} of {n} chunks stored"
                )
            done = 0
            while done < n:
                try:
                    seqs, datas, ended = await push.take(self.timeout)
                except errors.Timeout:
                    bulk.close()  # a silent server: the next read starts on a fresh connection
                    raise
                got = self._verify(layout, done, seqs, datas)
                done += len(got)
                if ended and done < n:
                    raise errors.Corrupt(
                        f"{layout.bucket} object {layout.nuid}: chunk {done} missing"
                    )
                yield got
        finally:
            push.close()
            await delete_consumer_quietly(self.js, stream, name)

    async def read_chunks(self, layout: ChunkLayout, first: int, count: int) -> list[bytes]:
        count = min(count, layout.chunks - first)
        if count <= 0:
            return []
        out: list[bytes] = []
        async for got in self._chunk_batches(layout, first, count, count):
            out += got
        return out

    async def read_stream(
        self, info: ObjectInfo, *, window: int = 128
    ) -> AsyncGenerator[list[bytes], None]:
        # 128 chunks (16 MiB of 128 KiB chunks, AHEAD_BYTES caps bigger ones): measured about
        # 5 % faster than 64 with the lean reader; the server keeps sending while we hash.

        layout = await self.layout(info)
        # In line, on the event loop: hashing on a worker thread measured slower, with
        # nats-py's reader and with the lean one (GIL hand-offs on 2 cores shared with the
        # server). The lean reader hashes most chunks as they arrive (HashChain).
        chain = HashChain(hashlib.sha256())
        bulk = await self.bulk_conn() if layout.size >= PUSH_MIN_BYTES else None
        if bulk is not None:
            batches = self._pushed_chunks(bulk, layout, chain)
        else:
            batches = self._chunk_batches(layout, 0, layout.chunks, window, chain)
        done = 0
        try:
            while True:
                try:
                    async for chunks in batches:
                        chain.catch_up(done, chunks)
                        done += len(chunks)
                        yield chunks
                    break
                except errors.Unavailable:
                    if bulk is None:
                        raise  # the batches retried already (their patience is spent)
                    # The push consumer's connection was lost: the rest by batches, which
                    # retry across the outage.
                    bulk = None
                    await batches.aclose()
                    batches = self._chunk_batches(layout, done, layout.chunks - done, window, chain)
        finally:
            await batches.aclose()
        want = parse_digest(info.digest)
        if want is not None and want != chain.sha.digest():
            raise errors.Corrupt(f"{info.bucket}/{info.name}: digest mismatch")
