"""The NATS JetStream backend of the store API: ADR-20 object stores on a real server.

This is the object-store logic (what to publish where, in which order, what to purge);
``nats_js`` carries the requests and maps errors, ``wire`` encodes the meta JSON. Together they
are the only objfs code that imports nats. nats-py's own ObjectStore class is not used: its get
is quadratic and stalls on flow control, its rename is broken and it has no links.

Choices worth knowing:

- Chunks are published in order with a bounded window of unacknowledged publishes
  (``PUT_WINDOW``); the acks give each chunk's stream sequence, so the layout of an object this
  process wrote is cached and ``layout()`` costs nothing for it.
- Reads use ADR-31 batch direct gets, pipelined; each message's sequence and size is checked
  against the layout, so a missing chunk is Corrupt at once instead of a hang. ``read_stream``
  of a large object uses an ephemeral push consumer instead (its pending count at creation
  tells a missing chunk up front). Both go through
  ``nats_bulk``'s lean reader on a second connection when the connection options allow
  (plain TCP, no auth, user/password or token): nats-py's receive path cost more CPU than the
  server sending the data. With TLS or creds (or if the lean connection cannot be opened)
  reads use nats-py's connection, the same requests.
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
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import nats
import nats.aio.client as nats_client
import nats.errors
from cachetools import LRUCache
from nats.nuid import NUID

from objfs.store import errors
from objfs.store.api import (
    DEFAULT_CHUNK_SIZE,
    BucketConfig,
    BucketEvent,
    BucketStatus,
    ChunkLayout,
    Link,
    ObjectInfo,
    ObjectMeta,
    ObjectStore,
    WatchEvent,
    bucket_changes,
    pieces,
)
from objfs.store.names import check_bucket, check_object, encode_name
from objfs.store.nats_bulk import Batch, BulkAuth, BulkConnection, HashChain, Unsupported
from objfs.store.nats_js import (
    BatchGetter,
    JetStream,
    OrderedConsumer,
    Publisher,
    StoredMsg,
    WrongLastSequence,
    consume_snapshot,
    mapped,
)
from objfs.store.wire import decode_info, encode_info, format_digest, parse_digest

log = logging.getLogger(__name__)

PUT_WINDOW = 24
"""Chunks published but not yet acknowledged, per put (unbounded windows get 429s)."""

LAYOUT_CACHE = 512
"""Layouts of objects this process wrote (nuid -> layout), kept for a free ``layout()``."""

READ_BUFFER = 1 << 20
"""Socket read size and reader buffer limit of the connection (see connect)."""

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

BUCKET_ADVISORIES = "$JS.EVENT.ADVISORY.STREAM.*.*"
"""Stream CREATED/UPDATED/DELETED advisories: how the bucket-list watch hears of changes."""
BUCKET_RESYNC = 30.0
"""Seconds between full bucket listings of the bucket-list watch (advisories are core NATS
messages: one lost to a slow consumer is caught up here; a reconnect re-lists at once)."""

META_CHUNK_SIZE = "objfs.chunk_size"
ROLLUP = {"Nats-Rollup": "sub"}
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"


def _stream(bucket: str) -> str:
    return f"OBJ_{bucket}"


def _meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{encode_name(name)}"


def _chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


async def connect(
    servers: list[str],
    *,
    timeout: float = 5.0,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    creds: str | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    name: str = "objfs",
) -> NatsObjectStore:
    """Connect to NATS; the store reconnects by itself for as long as it lives.

    Unavailable if no server answers within ``timeout``.
    """
    events = _ConnectionEvents()
    opts: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,  # a mount outlives server restarts
        "reconnect_time_wait": 0.5,
        "error_cb": events.error,
        "disconnected_cb": events.disconnected,
        "reconnected_cb": events.reconnected,
    }
    if user is not None:
        opts["user"] = user
        opts["password"] = password
    if token is not None:
        opts["token"] = token
    # The lean bulk reader speaks plain TCP with these credentials only (see nats_bulk).
    bulk: BulkAuth | None = BulkAuth(user, password, token)
    if creds is not None:
        opts["user_credentials"] = creds
        bulk = None
    if tls_ca or tls_cert:
        bulk = None
        ctx = ssl.create_default_context(cafile=tls_ca)
        if tls_cert:
            ctx.load_cert_chain(tls_cert, tls_key)
        opts["tls"] = ctx
    # nats-py reads the socket 32 KiB at a time into a 32 KiB-limit StreamReader, so a
    # 256 MiB read pauses/resumes the transport ~8,000 times; 1 MiB reads measured 15-25%
    # faster. The value is a module global read at connect and on each read.
    nats_client.DEFAULT_BUFFER_SIZE = max(nats_client.DEFAULT_BUFFER_SIZE, READ_BUFFER)
    try:
        # The initial connect does not retry for ever (only reconnects do), but bound it anyway.
        nc = await asyncio.wait_for(nats.connect(**opts), timeout * 2 + 1)
    except (TimeoutError, OSError, nats.errors.Error) as e:
        # A timeout says nothing; the last attempt's error (e.g. connection refused) does.
        cause = events.last_error if isinstance(e, TimeoutError) and events.last_error else e
        text = str(cause).strip() or f"no answer within {timeout * 2 + 1:g}s"
        where = ",".join(servers)
        raise errors.Unavailable(f"cannot connect to {where}: {text}") from None
    events.connected = True
    return NatsObjectStore(nc, timeout, bulk=bulk, events=events)


class _ConnectionEvents:
    """nats-py's connection callbacks, logged at a level that matches what they mean.

    Failed attempts of the initial connect are debug (``connect`` raises one Unavailable with
    the cause); a disconnect caused by ``close()`` is debug. A live store that loses its server
    says so once (warning, with the cause), then every ``REPEAT`` seconds while reconnect
    attempts keep failing (nats-py tries twice a second), and once more when it is back.
    """

    REPEAT = 60.0

    def __init__(self) -> None:
        self.connected = False
        self.closing = False
        self.last_error: Exception | None = None
        self._down_since: float | None = None
        self._last_said = 0.0

    def _quiet(self) -> bool:
        return self.closing or not self.connected

    async def error(self, e: Exception) -> None:
        self.last_error = e
        now = time.monotonic()
        loud = not self._quiet() and (
            self._down_since is None or now - self._last_said >= self.REPEAT
        )
        if loud:
            self._last_said = now
            if self._down_since is not None:
                down = now - self._down_since
                log.warning("nats: still unreachable after %.0fs: %s", down, _cause(e))
                return
        log.log(logging.WARNING if loud else logging.DEBUG, "nats: %s", _cause(e))

    async def disconnected(self) -> None:
        if self._quiet():
            log.debug("nats: disconnected")
            return
        self._down_since = self._last_said = time.monotonic()
        log.warning("nats: disconnected from the server; reconnecting")

    async def reconnected(self) -> None:
        if self._down_since is not None:
            log.warning("nats: reconnected after %.1fs", time.monotonic() - self._down_since)
        else:
            log.info("nats: reconnected")
        self._down_since = None


def _cause(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _stream_config(cfg: BucketConfig) -> dict[str, Any]:
    b = cfg.name
    metadata = dict(cfg.metadata)
    metadata[META_CHUNK_SIZE] = str(cfg.chunk_size)
    sc: dict[str, Any] = {
        "name": _stream(b),
        "subjects": [f"$O.{b}.C.>", f"$O.{b}.M.>"],
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
        name=sc["name"][len("OBJ_") :],
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
    """ADR-20 object stores on one NATS connection (see the module docstring)."""

    def __init__(
        self,
        nc: Any,
        timeout: float = 5.0,
        *,
        bulk: BulkAuth | None = None,
        events: _ConnectionEvents | None = None,
    ) -> None:
        """``bulk``: credentials for the lean bulk reader (user/password from the server URL
        are used when it has none); None reads through ``nc`` only."""
        self.nc = nc
        self.timeout = timeout
        self.js = JetStream(nc, timeout)
        self._publisher = Publisher(self.js)
        self._getter: BatchGetter | None = None
        self._bulk_auth = bulk
        self._bulk: BulkConnection | None = None
        self._bulk_lock = asyncio.Lock()
        self._bulk_retry_at = 0.0
        self._nuid = NUID()
        self._layouts: LRUCache[tuple[str, str], ChunkLayout] = LRUCache(LAYOUT_CACHE)
        self._chunk_sizes: dict[str, int] = {}
        self._events = events

    @property
    def max_chunk_size(self) -> int | None:  # type: ignore[override]
        """The server's max_payload: a larger chunk is refused by the server."""
        return int(self.nc.max_payload) or None

    # -- buckets ---------------------------------------------------------------------------
    async def _stream_info(self, bucket: str) -> dict[str, Any]:
        check_bucket(bucket)
        return await self.js.api(f"STREAM.INFO.{_stream(bucket)}")

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
        stream = _stream(config.name)
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
        si = await self.js.api(f"STREAM.UPDATE.{_stream(config.name)}", sc)
        return await self._status(si)

    async def delete_bucket(self, name: str) -> None:
        check_bucket(name)
        self._chunk_sizes.pop(name, None)
        await self.js.api(f"STREAM.DELETE.{_stream(name)}")

    async def bucket_status(self, name: str) -> BucketStatus:
        return await self._status(await self._stream_info(name))

    async def _object_streams(self) -> list[dict[str, Any]]:
        """Stream infos of every object store bucket (one request per 256 streams)."""
        infos: list[dict[str, Any]] = []
        offset = 0
        while True:
            resp = await self.js.api("STREAM.LIST", {"offset": offset})
            streams = resp.get("streams") or []
            infos.extend(s for s in streams if s["config"]["name"].startswith("OBJ_"))
            offset += len(streams)
            if not streams or offset >= int(resp.get("total", 0)):
                return infos

    async def list_buckets(self) -> list[BucketStatus]:
        infos = await self._object_streams()
        statuses = await asyncio.gather(*(self._status(si) for si in infos))
        return sorted(statuses, key=lambda s: s.name)

    async def seal_bucket(self, name: str) -> BucketStatus:
        cur = await self._stream_info(name)
        sc = dict(cur["config"])
        if not sc.get("sealed"):
            sc["sealed"] = True
            cur = await self.js.api(f"STREAM.UPDATE.{_stream(name)}", sc)
        return await self._status(cur)

    async def _chunk_size(self, bucket: str) -> int:
        size = self._chunk_sizes.get(bucket)
        if size is None:
            si = await self._stream_info(bucket)
            size = _bucket_config(si["config"]).chunk_size
            self._chunk_sizes[bucket] = size
        return size

    # -- objects: metadata -----------------------------------------------------------------
    def _decode(self, bucket: str, m: StoredMsg) -> ObjectInfo:
        return decode_info(m.data, bucket=bucket, revision=m.seq, timestamp_ns=m.timestamp_ns)

    async def _last_meta(self, bucket: str, name: str) -> ObjectInfo | None:
        """The name's current meta, tombstones included; None if it never existed."""
        check_bucket(bucket)
        check_object(name)
        m = await self.js.direct_last(_stream(bucket), _meta_subject(bucket, name))
        return None if m is None else self._decode(bucket, m)

    async def info(self, bucket: str, name: str, *, deleted: bool = False) -> ObjectInfo:
        info = await self._last_meta(bucket, name)
        if info is None or (info.deleted and not deleted):
            raise errors.NotFound(f"{bucket}/{name}: no such object")
        return info

    async def _list_all(self, bucket: str, *, deleted: bool) -> list[ObjectInfo]:
        found: dict[str, ObjectInfo] = {}

        def take(m: StoredMsg) -> None:
            try:
                info = self._decode(bucket, m)
            except errors.Corrupt as e:
                log.warning("skipping %s: %s", m.subject, e)
                return
            found[m.subject] = info

        await consume_snapshot(self.js, _stream(bucket), f"$O.{bucket}.M.>", on_msg=take)
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
            _meta_subject(info.bucket, info.name), encode_info(info), headers
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
        self._layouts.pop((bucket, nuid), None)
        await self.js.purge(_stream(bucket), _chunk_subject(bucket, nuid))

    async def _abandon(self, bucket: str, nuid: str, window: list[asyncio.Future[int]]) -> None:
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
    async def put(
        self,
        bucket: str,
        name: str,
        source: BinaryIO | bytes,
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
        subject = _chunk_subject(bucket, nuid)
        sha = hashlib.sha256()
        seqs: list[int] = []
        sizes: list[int] = []
        window: collections.deque[asyncio.Future[int]] = collections.deque()
        published = False
        try:
            for piece in pieces(source, size_per_chunk):
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
        self._layouts[(bucket, nuid)] = ChunkLayout(bucket, nuid, seqs, offsets)
        if old_live is not None and not old_live.is_link and old_live.chunks:
            await self._purge_quietly(bucket, old_live.nuid)
        return info

    async def layout(self, info: ObjectInfo) -> ChunkLayout:
        bucket, nuid = info.bucket, info.nuid
        if info.chunks == 0 or info.link is not None:
            if info.size:
                raise errors.Corrupt(f"{bucket}/{info.name}: {info.size} bytes in no chunk")
            return ChunkLayout(bucket, nuid, [], [0])
        cached = self._layouts.get((bucket, nuid))
        if cached is not None:
            return cached
        stream, subject = _stream(bucket), _chunk_subject(bucket, nuid)
        first, last = await asyncio.gather(
            self.js.direct_get(stream, {"seq": 1, "next_by_subj": subject}),
            self.js.direct_last(stream, subject),
        )
        if first is None or last is None:
            raise errors.Corrupt(f"{bucket}/{info.name}: chunks of {nuid} missing")
        n = info.chunks
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

        subject = _chunk_subject(info.bucket, info.nuid)
        await consume_snapshot(
            self.js,
            _stream(info.bucket),
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

    async def _bulk_conn(self) -> BulkConnection | None:
        """The lean reader's connection, opened on first use; None: read through nats-py."""
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
            if url.scheme not in ("nats", "") or self.nc.options.get("tls"):
                return self._no_bulk(f"{url.scheme}:// needs TLS")
            auth = self._bulk_auth
            if not (auth.user or auth.token) and url.username:
                # Credentials in the server URL, as nats-py reads them.
                auth = (
                    BulkAuth(url.username, url.password or "")
                    if url.password is not None
                    else BulkAuth(token=url.username)
                )
            try:
                self._bulk = await BulkConnection.open(
                    url.hostname or "127.0.0.1",
                    url.port or 4222,
                    auth=auth,
                    timeout=self.timeout,
                    name=f"{self.nc.options.get('name') or 'objfs'}-bulk",
                )
            except Unsupported as e:
                return self._no_bulk(str(e))
            except errors.StoreError as e:
                log.info("lean bulk reader unavailable for now, reading through nats-py: %s", e)
                self._bulk_retry_at = time.monotonic() + BULK_RETRY
                return None
            return self._bulk

    def _no_bulk(self, why: str) -> None:
        log.info("reads go through nats-py (the lean bulk reader cannot: %s)", why)
        self._bulk_auth = None
        return None

    async def _request(
        self, layout: ChunkLayout, first: int, count: int, chain: HashChain | None = None
    ) -> _Pending:
        """Ask for chunks ``first`` .. ``first + count - 1`` now; await the result later."""
        stream, subject = _stream(layout.bucket), _chunk_subject(layout.bucket, layout.nuid)
        bulk = await self._bulk_conn()
        if bulk is not None:
            seq = layout.seqs[first]
            req = bulk.request(stream, seq, count, subject, chain=chain, first=first)
            return _Pending(bulk, req)
        getter = await self._batch_getter()
        return _Pending(None, await getter.request(stream, layout.seqs[first], count, subject))

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
    ) -> AsyncIterator[list[bytes]]:
        """Chunks ``first`` .. ``first + count - 1`` in order, in verified batches, with up to
        ``window`` chunks (and ``AHEAD_BYTES``) requested ahead. With ``chain``, the lean
        reader hashes chunks as they arrive in order; the caller hashes the rest."""
        width = max(1, -(-layout.size // max(1, layout.chunks)))  # mean chunk size, rounded up
        per = max(1, min(BATCH_BYTES // width, window // 2 or 1))
        ahead = max(per, min(window, AHEAD_BYTES // width))
        inflight: collections.deque[tuple[int, int, _Pending]] = collections.deque()
        issued = done = 0
        try:
            while done < count:
                while issued < count and issued - done < ahead:
                    n = min(per, count - issued)
                    pending = await self._request(layout, first + issued, n, chain)
                    inflight.append((first + issued, n, pending))
                    issued += n
                k, n, pending = inflight.popleft()
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
                done += n
                yield got
        finally:
            for _, _, pending in inflight:
                pending.cancel()

    async def _pushed_chunks(
        self, bulk: BulkConnection, layout: ChunkLayout, chain: HashChain
    ) -> AsyncIterator[list[bytes]]:
        """Every chunk of ``layout`` in order, verified, from an ephemeral push consumer
        delivering to the lean reader (flow control answered there, as credit)."""
        stream, subject = _stream(layout.bucket), _chunk_subject(layout.bucket, layout.nuid)
        n = layout.chunks
        push = bulk.push_read(chain=chain, limit=AHEAD_BYTES)
        name: str | None = None
        try:
            config: dict[str, Any] = {
                "deliver_subject": push.subject.decode(),
                "filter_subject": subject,
                "deliver_policy": "by_start_sequence",
                "opt_start_seq": layout.seqs[0],
                "ack_policy": "none",
                "max_deliver": 1,
                "flow_control": True,
                "idle_heartbeat": int(max(1.0, self.timeout) * 1e9),
                "mem_storage": True,
                "num_replicas": 1,
                "inactive_threshold": int(max(30.0, 3 * self.timeout) * 1e9),
            }
            resp = await self.js.api(
                f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config}
            )
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
            if name and not self.nc.is_closed:
                # Fire and forget: the inactive threshold removes it anyway if this is lost.
                with contextlib.suppress(Exception):
                    await self.nc.publish(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", b"")

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
    ) -> AsyncIterator[list[bytes]]:
        # 128 chunks (16 MiB of 128 KiB chunks, AHEAD_BYTES caps bigger ones): measured about
        # 5 % faster than 64 with the lean reader; the server keeps sending while we hash.
        layout = await self.layout(info)
        # In line, on the event loop: hashing on a worker thread measured slower, with
        # nats-py's reader and with the lean one (GIL hand-offs on 2 cores shared with the
        # server). The lean reader hashes most chunks as they arrive (HashChain).
        chain = HashChain(hashlib.sha256())
        bulk = await self._bulk_conn() if layout.size >= PUSH_MIN_BYTES else None
        if bulk is not None:
            batches = self._pushed_chunks(bulk, layout, chain)
        else:
            batches = self._chunk_batches(layout, 0, layout.chunks, window, chain)
        done = 0
        try:
            async for chunks in batches:
                chain.catch_up(done, chunks)
                done += len(chunks)
                yield chunks
        finally:
            await batches.aclose()
        want = parse_digest(info.digest)
        if want is not None and want != chain.sha.digest():
            raise errors.Corrupt(f"{info.bucket}/{info.name}: digest mismatch")

    # -- change notices --------------------------------------------------------------------
    async def watch(self, bucket: str) -> AsyncIterator[WatchEvent]:
        """See ``ObjectStore.watch``; survives server restarts and lost connections.

        After three heartbeats of silence (the server restarted and dropped the ephemeral
        consumer, or the connection is down) the consumer is recreated from a fresh snapshot
        (last message per meta subject), not from the last sequence seen: that also catches
        what leaves no message (a purged subject, an expired object, a stream re-created
        meanwhile). The fresh snapshot is compared with what this watch reported: only
        names whose revision changed come out as ``put``, names no longer there as
        ``delete``; unchanged objects produce nothing, so a reconnect does not flood.
        """
        check_bucket(bucket)
        oc = OrderedConsumer(self.js, _stream(bucket), f"$O.{bucket}.M.>")
        live: dict[str, ObjectInfo] = {}
        by_nuid: dict[str, str] = {}
        resync: set[str] | None = None
        """Names seen in the fresh snapshot of a resync under way (None: no resync)."""
        try:
            in_snapshot = await oc.start() > 0
            if not in_snapshot:
                yield WatchEvent("snapshot_end")
            while True:
                m = await oc.next(3 * oc.heartbeat)
                if m is None:
                    # Three heartbeats of silence: the consumer is gone (server restart) or
                    # the server is. Start again from a fresh snapshot; retry until it works.
                    try:
                        await oc.reset(fresh=True)
                    except errors.StoreError as e:
                        log.info("watch %s: cannot recreate consumer yet: %s", bucket, e)
                        await asyncio.sleep(min(1.0, oc.heartbeat))
                        continue
                    resync = set()
                    if oc.pending_at_start == 0:  # the bucket is empty now
                        for event in _resync_end(resync, live, by_nuid):
                            yield event
                        resync = None
                        if in_snapshot:
                            in_snapshot = False
                            yield WatchEvent("snapshot_end")
                    continue
                try:
                    info = self._decode(bucket, m)
                except errors.Corrupt as e:
                    log.warning("watch %s: %s", bucket, e)
                    info = None
                if info is not None:
                    if resync is not None:
                        if not info.deleted:
                            resync.add(info.name)
                        known = live.get(info.name)
                        if known is not None and known.revision == info.revision:
                            info = None  # unchanged since we last reported it
                    if info is not None:
                        for event in _apply(info, live, by_nuid, in_snapshot):
                            yield event
                if m.pending == 0:
                    if resync is not None:
                        for event in _resync_end(resync, live, by_nuid):
                            yield event
                        resync = None
                    if in_snapshot:
                        in_snapshot = False
                        yield WatchEvent("snapshot_end")
        finally:
            await oc.stop()

    async def _bucket_states(self) -> dict[str, bool]:
        """Every object store bucket and whether it is sealed (configs only, no object
        counting)."""
        return {
            si["config"]["name"][len("OBJ_") :]: bool(si["config"].get("sealed", False))
            for si in await self._object_streams()
        }

    async def watch_buckets(self) -> AsyncIterator[BucketEvent]:
        """See ``ObjectStore.watch_buckets``: stream advisories, plus a re-list on reconnect.

        The server publishes ``$JS.EVENT.ADVISORY.STREAM.{CREATED,UPDATED,DELETED}.<stream>``
        for every stream change, whoever makes it; an advisory for ``OBJ_<bucket>`` makes this
        watch look at that one stream (sealed or not, still there or not). Advisories are
        not stored: those sent while the connection was down are lost, so a reconnect (and
        every ``BUCKET_RESYNC`` seconds, for one lost otherwise) re-lists the buckets and
        reports the differences.
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            queue.put_nowait(msg)

        with mapped("subscribe"):
            sub = await self.nc.subscribe(BUCKET_ADVISORIES, cb=on_msg, pending_bytes_limit=0)
        try:
            known: dict[str, bool] = {}
            reconnects = self.nc.stats["reconnects"]
            relist_at = 0.0
            first = True
            loop = asyncio.get_running_loop()
            while True:
                if self.nc.stats["reconnects"] != reconnects or loop.time() >= relist_at:
                    try:
                        now = await self._bucket_states()
                    except errors.StoreError as e:
                        if first:
                            raise
                        log.info("bucket watch: cannot list buckets yet: %s", e)
                        await asyncio.sleep(1.0)
                        continue
                    reconnects = self.nc.stats["reconnects"]
                    relist_at = loop.time() + BUCKET_RESYNC
                    for event in bucket_changes(known, now):
                        yield event
                    known = now
                    if first:
                        first = False
                        yield BucketEvent("snapshot_end")
                try:
                    msg = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    continue
                kind, _, stream = msg.subject.rpartition(".")
                kind = kind.rpartition(".")[2]
                if not stream.startswith("OBJ_") or kind not in ("CREATED", "UPDATED", "DELETED"):
                    continue
                name = stream[4:]
                try:
                    sealed: bool | None = bool(
                        (await self._stream_info(name))["config"].get("sealed", False)
                    )
                except errors.NotFound:
                    sealed = None
                except errors.StoreError as e:
                    log.info("bucket watch: %s: %s (re-listing)", name, e)
                    relist_at = 0.0
                    continue
                now = dict(known)
                if sealed is None:
                    now.pop(name, None)
                else:
                    now[name] = sealed
                for event in bucket_changes(known, now):
                    yield event
                known = now
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def close(self) -> None:
        if self._events is not None:
            self._events.closing = True
        self._bulk_auth = None  # no new lean connection after this
        if self._bulk is not None:
            self._bulk.close()
        await self._publisher.close()
        if self._getter is not None:
            await self._getter.close()
        if not self.nc.is_closed:
            # A dead connection may fail its final flush: closing must not raise anyway.
            with contextlib.suppress(TimeoutError, OSError, nats.errors.Error):
                await asyncio.wait_for(self.nc.close(), self.timeout)


class _Pending:
    """One batch direct get in flight, on the lean reader or on nats-py's connection."""

    __slots__ = ("_batch", "_bulk", "_fut")

    def __init__(self, bulk: BulkConnection | None, req: Any) -> None:
        self._bulk = bulk
        self._batch: Batch | None = req if bulk is not None else None
        self._fut: asyncio.Future[list[Any]] | None = None if bulk is not None else req

    async def result(self) -> tuple[list[int], list[bytes]]:
        """(stream sequences, payloads) of the batch's chunks; objfs errors."""
        if self._bulk is not None and self._batch is not None:
            try:
                batch = await self._bulk.wait(self._batch)
            except errors.Timeout:
                # A silent server: start the next read on a fresh connection (nats-py may
                # have moved to another server meanwhile).
                self._bulk.close()
                raise
            return batch.seqs, batch.datas
        assert self._fut is not None
        msgs = await self._fut
        seqs = [int(m.headers.get("Nats-Sequence", 0)) if m.headers else 0 for m in msgs]
        return seqs, [m.data for m in msgs]

    def cancel(self) -> None:
        if self._bulk is not None and self._batch is not None:
            self._bulk.forget(self._batch)
        elif self._fut is not None:
            self._fut.cancel()


def _meta_fields(meta: ObjectMeta | None) -> dict[str, Any]:
    if meta is None:
        return {}
    return {
        "description": meta.description,
        "headers": {k: list(v) for k, v in meta.headers.items()},
        "metadata": dict(meta.metadata),
    }


def _resync_end(
    seen: set[str], live: dict[str, ObjectInfo], by_nuid: dict[str, str]
) -> list[WatchEvent]:
    """Deletes for the names a fresh snapshot no longer has (the end of a resync)."""
    events = []
    for name in [n for n in live if n not in seen]:
        gone = live.pop(name)
        if by_nuid.get(gone.nuid) == name:
            del by_nuid[gone.nuid]
        events.append(WatchEvent("delete", gone.tombstone()))
    return events


def _apply(
    info: ObjectInfo, live: dict[str, ObjectInfo], by_nuid: dict[str, str], in_snapshot: bool
) -> list[WatchEvent]:
    """Watch events for one meta message, updating the live-name and nuid maps."""
    events: list[WatchEvent] = []
    name = info.name
    if info.deleted:
        gone = live.pop(name, None)
        if gone is not None:
            if by_nuid.get(gone.nuid) == name:
                del by_nuid[gone.nuid]
            if not in_snapshot:
                events.append(WatchEvent("delete", info))
        return events
    if not info.is_link:
        other = by_nuid.get(info.nuid)
        if other is not None and other != name and other in live:
            # The nuid moved to a new name: a rename that purged the old meta subject (the
            # Go client's way). Report the old name gone before the new one appears.
            old = live.pop(other)
            events.append(
                WatchEvent(
                    "delete",
                    old.tombstone(),
                )
            )
        by_nuid[info.nuid] = name
    prev = live.get(name)
    if prev is not None and prev.nuid != info.nuid and by_nuid.get(prev.nuid) == name:
        del by_nuid[prev.nuid]
    live[name] = info
    events.append(WatchEvent("put", info))
    return events
