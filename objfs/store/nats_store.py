"""The NATS JetStream backend of the store API: ADR-20 object stores on a real server.

This is the object-store logic (what to publish where, in which order, what to purge):
buckets, metadata, put, rename, delete and links. ``NatsObjectStore`` holds its other parts
and delegates to them: a ``nats_reads.NatsReader`` (layouts and reads) and a
``nats_watch.NatsWatcher`` (change notices), both built in its constructor with what they use.
``nats_connect`` opens the connection (``connect``, re-exported here), ``nats_subjects`` names
the stream and subjects, ``nats_js`` carries the requests, ``nats_bulk`` is the lean reader,
``nats_protocol`` writes down the JetStream rules both read paths follow, ``wire`` encodes the
meta JSON. Within objfs only these ``nats_`` modules import nats (the benchmarks, outside the
package, do too). nats-py's own ObjectStore class is not used: its get is quadratic and stalls
on flow control, its rename is broken and it has no links.

Choices worth knowing:

- Chunks are published in order with a bounded window of unacknowledged publishes
  (``PUT_WINDOW``); the acks give each chunk's stream sequence, so the layout of an object this
  process wrote is cached (by the reader) and ``layout()`` costs nothing for it.
- rename publishes the meta under the new name, then a *tombstone* (not a purge, as nats.go
  does) on the old name: watchers of every client then see the old name go as an ordinary
  delete. The tombstone keeps the nuid but has no chunks, so nothing ever purges the chunks
  the new name still uses (a delete of a tombstone is refused; a put over it purges nothing).
- ``BucketStatus.objects`` counts live objects by listing the meta subjects (one ordered
  consumer, last message per subject): exact, and O(objects) per call.
- Bucket settings that ADR-20 has no field for (the chunk size) live in the stream config's
  ``metadata`` under ``objfs.``-prefixed keys, which other clients ignore.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.nuid import NUID

from objfs.store import errors
from objfs.store.api import (
    DEFAULT_CHUNK_SIZE,
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
)
from objfs.store.names import check_bucket, check_object
from objfs.store.nats_bulk import BulkAuth, BulkConnection
from objfs.store.nats_connect import ConnectionEvents
from objfs.store.nats_connect import connect as connect
from objfs.store.nats_js import JetStream, Publisher, StoredMsg, consume_snapshot
from objfs.store.nats_protocol import WrongLastSequence
from objfs.store.nats_reads import NatsReader, OpenBulk
from objfs.store.nats_subjects import (
    bucket_of_stream,
    bucket_stream,
    chunk_filter,
    chunk_subject,
    meta_filter,
    meta_subject,
)
from objfs.store.nats_watch import NatsWatcher
from objfs.store.wire import decode_stored, encode_info, format_digest

log = logging.getLogger(__name__)

PUT_WINDOW = 24
"""Chunks published but not yet acknowledged, per put (unbounded windows get 429s)."""

META_CHUNK_SIZE = "objfs.chunk_size"
ROLLUP = {"Nats-Rollup": "sub"}
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"


def _stream_config(cfg: BucketConfig) -> dict[str, Any]:
    b = cfg.name
    metadata = dict(cfg.metadata)
    metadata[META_CHUNK_SIZE] = str(cfg.chunk_size)
    sc: dict[str, Any] = {
        "name": bucket_stream(b),
        "subjects": [chunk_filter(b), meta_filter(b)],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": cfg.max_bytes,
        "max_age": int(cfg.ttl * 1e9),
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "storage": cfg.storage,
        "discard": "new",
        "num_replicas": cfg.replicas,
        "allow_rollup_hdrs": True,
        "allow_direct": True,
        "compression": "s2" if cfg.compression else "none",
        "metadata": metadata,
    }
    if cfg.description:
        sc["description"] = cfg.description
    return sc


def _bucket_config(sc: dict[str, Any]) -> BucketConfig:
    md = dict(sc.get("metadata") or {})
    chunk_size = int(md.pop(META_CHUNK_SIZE, DEFAULT_CHUNK_SIZE))
    user_md = {k: v for k, v in md.items() if not k.startswith("_nats")}
    return BucketConfig(
        name=bucket_of_stream(sc["name"]),
        description=sc.get("description") or "",
        chunk_size=chunk_size,
        max_bytes=int(sc.get("max_bytes", -1)),
        replicas=int(sc.get("num_replicas", 1)),
        storage="memory" if sc.get("storage") == "memory" else "file",
        compression=sc.get("compression", "none") == "s2",
        ttl=int(sc.get("max_age", 0)) / 1e9,
        metadata=user_md,
    )


class NatsObjectStore(ObjectStore):
    """ADR-20 object stores on one NATS connection (see the module docstring); reads are
    its ``reader``'s, change notices its ``watcher``'s."""

    def __init__(
        self,
        nc: Client,
        timeout: float = 5.0,
        *,
        bulk: BulkAuth | None = None,
        events: ConnectionEvents | None = None,
        open_bulk: OpenBulk = BulkConnection.open,
    ) -> None:
        """``bulk``: credentials for the lean bulk reader (user/password from the server URL
        are used when it has none); None reads through ``nc`` only. ``open_bulk``: how the
        reader opens its lean connection."""
        self.nc = nc
        self.timeout = timeout
        self.js = JetStream(nc, timeout)
        self._publisher = Publisher(self.js)
        self.reader = NatsReader(nc, self.js, timeout, bulk_auth=bulk, open_bulk=open_bulk)
        self.watcher = NatsWatcher(nc, self.js)
        self._nuid = NUID()
        self._chunk_sizes: dict[str, int] = {}
        self._events = events

    @property
    def max_chunk_size(self) -> int | None:
        """The server's max_payload: a larger chunk is refused by the server."""
        return int(self.nc.max_payload) or None

    @property
    def connected_server(self) -> str | None:
        """The URL of the server this connection is on, without credentials (for logs)."""
        url = self.nc.connected_url
        if url is None:
            return None
        host = url.hostname or ""
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return f"{url.scheme}://{host}:{url.port}" if url.port else f"{url.scheme}://{host}"

    # -- buckets ---------------------------------------------------------------------------
    async def _stream_info(self, bucket: str) -> dict[str, Any]:
        check_bucket(bucket)
        return await self.js.api(f"STREAM.INFO.{bucket_stream(bucket)}")

    async def _status(self, si: dict[str, Any]) -> BucketStatus:
        cfg = _bucket_config(si["config"])
        self._chunk_sizes[cfg.name] = cfg.chunk_size
        objects = len(await self._list_all(cfg.name, deleted=False))
        return BucketStatus(
            config=cfg,
            size=int(si.get("state", {}).get("bytes", 0)),
            sealed=bool(si["config"].get("sealed", False)),
            objects=objects,
        )

    async def create_bucket(self, config: BucketConfig) -> BucketStatus:
        check_bucket(config.name)
        stream = bucket_stream(config.name)
        try:
            # Exists must be exact: the server answers "create" of an identical config with
            # success, so look first (a race between two creators is then the server's call).
            await self.js.api(f"STREAM.INFO.{stream}")
        except errors.NotFound:
            pass
        else:
            raise errors.Exists(f"bucket {config.name!r} exists")
        si = await self.js.api(f"STREAM.CREATE.{stream}", _stream_config(config))
        return await self._status(si)

    async def update_bucket(self, config: BucketConfig) -> BucketStatus:
        check_bucket(config.name)
        cur = await self._stream_info(config.name)
        if cur["config"].get("sealed"):
            # The server's own answer is misleading (sealing also sets deny_purge, which
            # conflicts with allow_rollup_hdrs: "roll-ups require the purge permission").
            raise errors.ReadOnly(f"bucket {config.name!r} is sealed")
        sc = dict(cur["config"])
        sc.update(_stream_config(config))
        if not config.description:
            sc.pop("description", None)  # removed, not kept from the current config
        sc["storage"] = cur["config"].get("storage", sc["storage"])  # immutable
        self._chunk_sizes.pop(config.name, None)
        si = await self.js.api(f"STREAM.UPDATE.{bucket_stream(config.name)}", sc)
        return await self._status(si)

    async def delete_bucket(self, name: str) -> None:
        check_bucket(name)
        self._chunk_sizes.pop(name, None)
        await self.js.api(f"STREAM.DELETE.{bucket_stream(name)}")

    async def bucket_status(self, name: str) -> BucketStatus:
        return await self._status(await self._stream_info(name))

    async def list_buckets(self) -> list[BucketStatus]:
        infos = await self.js.bucket_streams()
        statuses = await asyncio.gather(*(self._status(si) for si in infos))
        return sorted(statuses, key=lambda s: s.name)

    async def seal_bucket(self, name: str) -> BucketStatus:
        cur = await self._stream_info(name)
        sc = dict(cur["config"])
        if not sc.get("sealed"):
            sc["sealed"] = True
            cur = await self.js.api(f"STREAM.UPDATE.{bucket_stream(name)}", sc)
        return await self._status(cur)

    async def _chunk_size(self, bucket: str) -> int:
        size = self._chunk_sizes.get(bucket)
        if size is None:
            si = await self._stream_info(bucket)
            size = _bucket_config(si["config"]).chunk_size
            self._chunk_sizes[bucket] = size
        return size

    # -- objects: metadata -----------------------------------------------------------------
    async def _last_meta(self, bucket: str, name: str) -> ObjectInfo | None:
        """The name's current meta, tombstones included; None if it never existed."""
        check_bucket(bucket)
        check_object(name)
        m = await self.js.direct_last(bucket_stream(bucket), meta_subject(bucket, name))
        return None if m is None else decode_stored(bucket, m)

    async def info(self, bucket: str, name: str, *, deleted: bool = False) -> ObjectInfo:
        info = await self._last_meta(bucket, name)
        if info is None or (info.deleted and not deleted):
            raise errors.NotFound(f"{bucket}/{name}: no such object")
        return info

    async def _list_all(self, bucket: str, *, deleted: bool) -> list[ObjectInfo]:
        found: dict[str, ObjectInfo] = {}

        def take(m: StoredMsg) -> None:
            try:
                info = decode_stored(bucket, m)
            except errors.Corrupt as e:
                log.warning("skipping %s: %s", m.subject, e)
                return
            found[m.subject] = info

        await consume_snapshot(self.js, bucket_stream(bucket), meta_filter(bucket), on_msg=take)
        return sorted((i for i in found.values() if deleted or not i.deleted), key=lambda i: i.name)

    async def list(self, bucket: str, *, deleted: bool = False) -> list[ObjectInfo]:
        check_bucket(bucket)
        return await self._list_all(bucket, deleted=deleted)

    async def _publish_meta(self, info: ObjectInfo, expected: int | None = None) -> ObjectInfo:
        """Publish ``info`` as the name's meta (rollup); returns it with its revision."""
        headers = dict(ROLLUP)
        if expected is not None:
            headers[EXPECTED_LAST_SUBJECT_SEQ] = str(expected)
        seq = await self.js.publish(
            meta_subject(info.bucket, info.name), encode_info(info), headers
        )
        return dataclasses.replace(info, revision=seq)

    async def update_meta(self, bucket: str, name: str, meta: ObjectMeta) -> ObjectInfo:
        info = await self.info(bucket, name)
        new = dataclasses.replace(
            info,
            description=meta.description,
            headers={k: list(v) for k, v in meta.headers.items()},
            metadata=dict(meta.metadata),
        )
        return await self._publish_meta(new)

    async def rename(self, bucket: str, old: str, new: str, *, replace: bool = False) -> ObjectInfo:
        check_object(new)
        src = await self.info(bucket, old)
        if old == new:
            return src
        dst = await self._last_meta(bucket, new)
        dst_live = dst is not None and not dst.deleted
        if dst_live and not replace:
            raise errors.Exists(f"{bucket}/{new} exists")
        try:
            # Expect exactly what we saw at the new name: a concurrent create fails us.
            moved = await self._publish_meta(
                dataclasses.replace(src, name=new), expected=dst.revision if dst else 0
            )
        except WrongLastSequence:
            raise errors.Exists(f"{bucket}/{new} was created concurrently") from None
        tomb = src.tombstone()
        # If the old name was rewritten meanwhile, that newer object stays.
        with contextlib.suppress(WrongLastSequence):
            await self._publish_meta(tomb, expected=src.revision)
        if dst_live and dst is not None and dst.nuid != src.nuid and not dst.is_link:
            await self._purge_chunks(bucket, dst.nuid)
        return moved

    async def delete(self, bucket: str, name: str) -> ObjectInfo:
        info = await self.info(bucket, name)
        tomb = info.tombstone(mtime_ns=time.time_ns())
        tomb = await self._publish_meta(tomb)
        if info.chunks:
            await self._purge_chunks(bucket, info.nuid)
        return tomb

    async def _purge_chunks(self, bucket: str, nuid: str) -> None:
        self.reader.forget(bucket, nuid)
        await self.js.purge(bucket_stream(bucket), chunk_subject(bucket, nuid))

    async def _abandon(self, bucket: str, nuid: str, window: Sequence[asyncio.Future[int]]) -> None:
        """Purge the chunks of a failed put. Chunks still in flight are waited for first
        (within the timeout): the server handles a purge apart from the publishes sent
        before it, and one stored after the purge would be left behind for ever."""
        if window:
            await asyncio.wait(window, timeout=self.timeout)
        for fut in window:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: an ack error is the put's error already
            fut.cancel()
        await self._purge_quietly(bucket, nuid)

    async def _purge_quietly(self, bucket: str, nuid: str) -> None:
        try:
            await self._purge_chunks(bucket, nuid)
        except errors.StoreError as e:
            log.warning("could not purge chunks %s of %s: %s", nuid, bucket, e)

    async def _put_link(self, bucket: str, name: str, link: Link) -> ObjectInfo:
        cur = await self._last_meta(bucket, name)
        if cur is not None and not cur.deleted and not cur.is_link:
            raise errors.Exists(f"{bucket}/{name} is an object; a link may only replace a link")
        info = ObjectInfo(
            bucket=bucket,
            name=name,
            nuid=self._nuid.next().decode(),
            mtime_ns=time.time_ns(),
            link=link,
        )
        return await self._publish_meta(info)

    async def add_link(
        self, bucket: str, name: str, target_bucket: str, target_name: str
    ) -> ObjectInfo:
        check_bucket(bucket)
        check_object(name)
        target = await self.info(target_bucket, target_name)
        if target.is_link:
            raise errors.InvalidLink(f"{target_bucket}/{target_name} is a link")
        return await self._put_link(bucket, name, Link(target_bucket, target_name))

    async def add_bucket_link(self, bucket: str, name: str, target_bucket: str) -> ObjectInfo:
        check_bucket(bucket)
        check_object(name)
        await self._stream_info(target_bucket)  # NotFound if there is no such bucket
        return await self._put_link(bucket, name, Link(target_bucket))

    # -- objects: data ---------------------------------------------------------------------
    async def layout(self, info: ObjectInfo) -> ChunkLayout:
        return await self.reader.layout(info)

    async def read_chunks(self, layout: ChunkLayout, first: int, count: int) -> Chunks:
        return await self.reader.read_chunks(layout, first, count)

    def read_stream(self, info: ObjectInfo, *, window: int = 128) -> AsyncGenerator[Chunks, None]:
        # 128 chunks, not the API's 64: see NatsReader.read_stream.
        return self.reader.read_stream(info, window=window)

    # -- change notices --------------------------------------------------------------------
    def watch(self, bucket: str) -> AsyncGenerator[WatchEvent, None]:
        return self.watcher.watch(bucket)

    def watch_buckets(self) -> AsyncGenerator[BucketEvent, None]:
        return self.watcher.watch_buckets()

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
        check_bucket(bucket)
        check_object(name)
        size_per_chunk = chunk_size or await self._chunk_size(bucket)
        old = await self._last_meta(bucket, name)
        old_live = old if old is not None and not old.deleted else None
        expected: int | None = None
        if if_revision is not None:
            current = old_live.revision if old_live else 0
            if current != if_revision:
                raise errors.Exists(
                    f"{bucket}/{name}: revision is {current}, expected {if_revision}"
                )
            # 0 means "no live object": a tombstone may be there, whose sequence we expect.
            expected = old.revision if old is not None else 0

        nuid = self._nuid.next().decode()
        subject = chunk_subject(bucket, nuid)
        sha = hashlib.sha256()
        seqs: list[int] = []
        sizes: list[int] = []
        window: collections.deque[asyncio.Future[int]] = collections.deque()
        published = False
        try:
            async for piece in apieces(source, size_per_chunk):
                sha.update(piece)
                sizes.append(len(piece))
                window.append(await self._publisher.send(subject, piece))
                published = True
                if len(window) >= PUT_WINDOW:
                    seqs.append(await self._publisher.ack(window.popleft()))
            while window:
                seqs.append(await self._publisher.ack(window.popleft()))
            size = sum(sizes)
            info = ObjectInfo(
                bucket=bucket,
                name=name,
                nuid=nuid,
                size=size,
                chunks=len(seqs),
                digest=format_digest(sha.digest()),
                mtime_ns=time.time_ns(),
                chunk_size=size_per_chunk,
                **_meta_fields(meta),
            )
            try:
                info = await self._publish_meta(info, expected)
            except WrongLastSequence:
                raise errors.Exists(f"{bucket}/{name} changed during the put") from None
        except BaseException:
            if published:
                # Shielded: a cancelled put must still not leave orphan chunks behind.
                await asyncio.shield(self._abandon(bucket, nuid, list(window)))
            raise
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.reader.remember(ChunkLayout(bucket, nuid, seqs, offsets))
        if old_live is not None and not old_live.is_link and old_live.chunks:
            await self._purge_quietly(bucket, old_live.nuid)
        return info

    async def close(self) -> None:
        if self._events is not None:
            self._events.closing = True
        await self.reader.close()
        await self._publisher.close()
        if not self.nc.is_closed:
            # A dead connection may fail its final flush: closing must not raise anyway.
            with contextlib.suppress(TimeoutError, OSError, nats.errors.Error):
                await asyncio.wait_for(self.nc.close(), self.timeout)


def _meta_fields(meta: ObjectMeta | None) -> dict[str, Any]:
    if meta is None:
        return {}
    return {
        "description": meta.description,
        "headers": {k: list(v) for k, v in meta.headers.items()},
        "metadata": dict(meta.metadata),
    }
