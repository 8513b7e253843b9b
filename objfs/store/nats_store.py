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
- A rename is two publishes, so an outage between them leaves both names live on one nuid
  (a later delete of either would purge the other's chunks). Making rename's outcome
  unambiguous is impossible from the client (whatever it would publish to undo or finish it
  meets the same outage), and checking every purge against every live meta costs a listing
  of the bucket per delete. So the purge is guarded where the sharing can be known cheaply:
  the new name's meta message carries ``Objfs-Renamed-From`` (the old name), and a delete or
  replacement of it leaves the chunks if the old name is still live on the same nuid; the
  renaming store publishes the old name's tombstone in the background once the server
  answers, and meanwhile does not purge for the old name either. The one window left
  (documented): another client deleting the old name before that tombstone lands.
- Every request is retried across outages by ``nats_retry`` (publishes under a
  ``Nats-Msg-Id`` that JetStream deduplicates). A put whose meta publish got no answer reads
  the meta back and purges its chunks only if no meta refers to them; after any retry it
  checks its chunks on the server before the meta refers to them.
- Buckets with replicas have their metas read from the stream leader (a direct get may be
  answered by a replica that is behind); the reader retries a chunk a replica lacks.
- A put costs as few serial round trips as its guarantees allow (a small file's is two): the
  name's current meta (whose chunks a replacing put purges, and whose revision
  ``if_revision=N`` checks) is looked up while the chunks go out, and awaited before the meta
  is published; the meta itself waits for every chunk's ack (a meta stored over a failed
  chunk would be a corrupt object).
- ``if_revision=0`` is exclusive create: the meta is published with
  ``Nats-Expected-Last-Subject-Sequence``, so of racing creators exactly one wins. It expects
  0 without looking first (an empty object, as ``O_EXCL`` claims one, is then one round
  trip); only if the server refuses is the name looked up: a live object is Exists, a
  tombstone is tried once more with the tombstone's sequence expected. A non-empty source
  is sent before that answer, so a create that loses pays for its chunks, which it purges.
- ``create_bucket`` is exclusive too: each creator's stream config carries its own token in
  the metadata, so the server refuses the second identical create.
- ``BucketStatus.objects`` counts live objects by listing the meta subjects (one ordered
  consumer, last message per subject): exact, and O(objects) per call. ``bucket_status(name,
  count=False)`` skips it (one STREAM.INFO): what a mount's start-up asks, as it needs only
  the config and the sealed flag (the watch snapshot that follows reads every meta anyway).
- Bucket settings that ADR-20 has no field for (the chunk size) live in the stream config's
  ``metadata`` under ``objfs.``-prefixed keys, which other clients ignore.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any, BinaryIO, Literal, TypeGuard

import nats.errors
from nats.aio.client import Client
from nats.nuid import NUID

from objfs.options import ConnectOptions
from objfs.store import errors
from objfs.store.api import (
    DEFAULT_CHUNK_SIZE,
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
)
from objfs.store.deadline import within
from objfs.store.names import (
    check_bucket,
    check_object,
    decode_name,
    encode_name,
    safe_name_limit,
)
from objfs.store.nats_bulk import BulkConnection
from objfs.store.nats_connect import ConnectionEvents
from objfs.store.nats_connect import connect as connect
from objfs.store.nats_js import MSG_ID, JetStream, Publisher, StoredMsg, consume_snapshot
from objfs.store.nats_protocol import WrongLastSequence
from objfs.store.nats_reads import NatsReader, OpenBulk
from objfs.store.nats_retry import NoResponders, Patience, attempt_timeout
from objfs.store.nats_subjects import (
    bucket_of_stream,
    bucket_stream,
    chunk_filter,
    chunk_subject,
    meta_filter,
    meta_subject,
    stream_of_subject,
)
from objfs.store.nats_watch import NatsWatcher
from objfs.store.wire import decode_stored, encode_info, format_digest

log = logging.getLogger(__name__)

PUT_WINDOW = 24
"""Chunks published but not yet acknowledged, per put (unbounded windows get 429s)."""

PUT_RESTARTS = 2
"""Times a put starts over when the server lost or reordered its chunks in an outage."""

META_CHUNK_SIZE = "objfs.chunk_size"
META_CREATOR = "objfs.creator"
ROLLUP = {"Nats-Rollup": "sub"}
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
RENAMED_FROM = "Objfs-Renamed-From"
"""Header of a renamed meta: the old name (encoded), whose tombstone follows it."""

_Meta = tuple[ObjectInfo | None, dict[str, str]]
"""A name's last meta (None if it never existed) and its message's headers."""


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
    md.pop(META_CREATOR, None)
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
        options: ConnectOptions | None = None,
        lean: bool = True,
        events: ConnectionEvents | None = None,
        open_bulk: OpenBulk = BulkConnection.open,
    ) -> None:
        """``options``: how ``nc`` was connected (credentials, TLS, prefixes), which the lean
        bulk reader connects with too (user/password from the server URL are used when they
        name none); ``lean`` False reads through ``nc`` only. ``open_bulk``: how the reader
        opens its lean connection."""
        options = options or ConnectOptions()
        self.nc = nc
        self.timeout = timeout
        self.js = JetStream(nc, timeout, api_prefix=options.api_prefix)
        self._publisher = Publisher(self.js)
        self.reader = NatsReader(
            nc, self.js, timeout, bulk_auth=options if lean else None, open_bulk=open_bulk
        )
        self.watcher = NatsWatcher(
            nc,
            self.js,
            self.reader.bulk_conn if lean else None,
            event_prefix=options.event_prefix,
        )
        self._nuid = NUID()
        self._chunk_sizes: dict[str, int] = {}
        self._events = events
        # Renames whose old name's tombstone is still to be published: (bucket, nuid) -> old
        # name; the tasks publishing them. Changed on the event loop only.
        self._renamed_away: dict[tuple[str, str], str] = {}
        self._finishing: set[asyncio.Future[None]] = set()

    @property
    def max_chunk_size(self) -> int | None:
        """The server's max_payload: a larger chunk is refused by the server."""
        return int(self.nc.max_payload) or None

    def connection_state(self) -> dict[str, object]:
        """For objfs status and the metrics: the server (no credentials), whether the
        connection is up, how often it came back, the last connection error."""
        events = self._events
        last = events.last_error if events is not None else None
        return {
            "url": self.connected_server,
            "connected": self.nc.is_connected,
            "reconnects": events.reconnects if events is not None else 0,
            "last_error": f"{type(last).__name__}: {last}".rstrip(": ") if last else None,
        }

    @property
    def max_name_bytes(self) -> int:
        """The longest object name this server takes (``names.safe_name_limit``)."""
        info: dict[str, Any] = getattr(self.nc, "_server_info", None) or {}
        return safe_name_limit(info.get("server_name"))

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

    async def _status(self, si: dict[str, Any], *, count: bool = True) -> BucketStatus:
        cfg = self._learn(si)
        objects = len(await self._list_all(cfg.name, deleted=False)) if count else 0
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
        sc = _stream_config(config)
        # The server answers a create of an identical config with success, so two creators
        # racing would both succeed: a creator's own token makes their configs differ (the
        # loser gets "name in use", Exists), and keeps a retried create identical to itself.
        sc["metadata"][META_CREATOR] = self._nuid.next().decode()
        si = await self.js.api(f"STREAM.CREATE.{stream}", sc)
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
        await self.js.api(f"STREAM.DELETE.{bucket_stream(name)}", gone_ok=True)

    async def bucket_status(self, name: str, *, count: bool = True) -> BucketStatus:
        return await self._status(await self._stream_info(name), count=count)

    async def list_buckets(self) -> list[BucketStatus]:
        infos = await self.js.bucket_streams()
        statuses = await asyncio.gather(*(self._status(si) for si in infos))
        return sorted(statuses, key=lambda s: s.name)

    async def account_usage(self) -> AccountUsage:
        info = await self.js.api("INFO")
        limit = int(info.get("limits", {}).get("max_storage", -1))
        # -1: no account limit (the server's own max_file_store is not told to accounts).
        return AccountUsage(int(info.get("storage", 0)), limit if limit > 0 else None)

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
            size = self._learn(await self._stream_info(bucket)).chunk_size
        return size

    def _learn(self, si: dict[str, Any]) -> BucketConfig:
        """Remember what a bucket's stream info tells: chunk size, replicated or not."""
        cfg = _bucket_config(si["config"])
        self._chunk_sizes[cfg.name] = cfg.chunk_size
        if cfg.replicas > 1:
            self.reader.replicated.add(cfg.name)
        else:
            self.reader.replicated.discard(cfg.name)
        return cfg

    # -- objects: metadata -----------------------------------------------------------------
    async def _last_meta(self, bucket: str, name: str) -> ObjectInfo | None:
        """The name's current meta, tombstones included; None if it never existed."""
        return (await self._last_meta_msg(bucket, name))[0]

    async def _last_meta_msg(self, bucket: str, name: str) -> _Meta:
        """``_last_meta`` and the headers of its message."""
        check_bucket(bucket)
        check_object(name)
        stream, subject = bucket_stream(bucket), meta_subject(bucket, name)
        if await self._replicated(bucket):
            m = await self.js.leader_last(stream, subject)  # a replica may be behind
        else:
            m = await self.js.direct_last(stream, subject)
        return (None, {}) if m is None else (decode_stored(bucket, m), m.headers)

    async def _replicated(self, bucket: str) -> bool:
        """Whether the bucket has replicas (learnt once, with its chunk size)."""
        if bucket not in self._chunk_sizes:
            await self._chunk_size(bucket)
        return bucket in self.reader.replicated

    def _finish_later(self, tomb: ObjectInfo, expected: int) -> None:
        """Publish a rename's tombstone of the old name once the server answers again."""
        key = (tomb.bucket, tomb.nuid)
        self._renamed_away[key] = tomb.name

        async def finish() -> None:
            try:
                while True:
                    try:
                        await self._publish_meta(tomb, expected=expected)
                        log.info("rename of %s/%s finished", tomb.bucket, tomb.name)
                        return
                    except (WrongLastSequence, errors.NotFound):
                        return  # rewritten or deleted meanwhile, or the bucket is gone
                    except errors.Unavailable:
                        await asyncio.sleep(1.0)
            finally:
                self._renamed_away.pop(key, None)

        task = asyncio.ensure_future(finish())
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _shares_chunks(self, info: ObjectInfo, headers: dict[str, str]) -> bool:
        """Whether the chunks of ``info`` (a meta about to go) are still another live name's:
        the name it was renamed from, if that rename's tombstone never landed, or (renamed
        here, its tombstone not yet published) the name it was renamed to."""
        if self._renamed_away.get((info.bucket, info.nuid)) == info.name:
            return True
        source = headers.get(RENAMED_FROM)
        if not source or source == info.name:
            return False
        try:
            other = await self._last_meta(info.bucket, decode_name(source))
        except errors.StoreError as e:
            log.warning("keeping chunks %s of %s: %s", info.nuid, info.bucket, e)
            return True  # cannot tell: keep them (a leak, not a loss)
        if other is not None and not other.deleted and other.nuid == info.nuid:
            log.warning(
                "%s/%s still shares chunks %s (a rename's tombstone was lost): not purged",
                info.bucket,
                other.name,
                info.nuid,
            )
            return True
        return False

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

    async def _publish_meta(
        self,
        info: ObjectInfo,
        expected: int | None = None,
        extra: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Publish ``info`` as the name's meta (rollup); returns it with its revision."""
        headers = dict(ROLLUP)
        headers.update(extra or {})
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

    async def rename(
        self, bucket: str, old: str, new: str, *, replace: bool = False, keep_replaced: bool = False
    ) -> ObjectInfo:
        check_object(new)
        src = await self.info(bucket, old)
        if old == new:
            return src
        dst, dst_headers = await self._last_meta_msg(bucket, new)
        dst_live = dst is not None and not dst.deleted
        if dst_live and not replace:
            raise errors.Exists(f"{bucket}/{new} exists")
        try:
            # Expect exactly what we saw at the new name: a concurrent create fails us.
            moved = await self._publish_meta(
                dataclasses.replace(src, name=new),
                expected=dst.revision if dst else 0,
                extra={RENAMED_FROM: encode_name(old)},
            )
        except WrongLastSequence:
            raise errors.Exists(f"{bucket}/{new} was created concurrently") from None
        except errors.StoreError as e:
            # No answer: the new name may hold the chunks now. Read it back; if that cannot
            # be told, the old name's chunks are kept as shared (a leak, never a loss).
            landed = await self._landed(bucket, new, src.nuid)
            if landed is None:
                raise
            if landed is False:
                self._renamed_away[(bucket, src.nuid)] = old
                raise
            log.info("rename %s/%s -> %s: stored although %s", bucket, old, new, e)
            moved = landed
        tomb = src.tombstone()
        try:
            await self._publish_meta(tomb, expected=src.revision)
        except WrongLastSequence:
            pass  # the old name was rewritten meanwhile: that newer object stays
        except errors.Unavailable as e:
            # The new name is stored: the rename happened. The old name's tombstone is
            # finished in the background; until then its chunks are not purged here.
            log.warning("rename %s/%s -> %s: the old name stays until %s", bucket, old, new, e)
            self._finish_later(tomb, src.revision)
        if (
            dst_live
            and dst is not None
            and dst.nuid != src.nuid
            and not dst.is_link
            and not keep_replaced
            and not await self._shares_chunks(dst, dst_headers)
        ):
            await self._purge_chunks(bucket, dst.nuid)
        return moved

    async def purge(self, bucket: str, nuid: str) -> None:
        check_bucket(bucket)
        await self._purge_chunks(bucket, nuid)

    async def _landed(
        self, bucket: str, name: str, nuid: str
    ) -> ObjectInfo | Literal[False] | None:
        """After a meta publish without an answer: the meta at ``name`` if it is the one
        sent (``nuid``), None if it is not, False if that cannot be read either."""
        try:
            now = await self._last_meta(bucket, name)
        except errors.StoreError as e:
            log.warning("%s/%s: outcome unknown (%s)", bucket, name, e)
            return False
        return now if now is not None and not now.deleted and now.nuid == nuid else None

    async def delete(self, bucket: str, name: str) -> ObjectInfo:
        info, headers = await self._last_meta_msg(bucket, name)
        if info is None or info.deleted:
            raise errors.NotFound(f"{bucket}/{name}: no such object")
        tomb = info.tombstone(mtime_ns=time.time_ns())
        tomb = await self._publish_meta(tomb)
        if info.chunks and not await self._shares_chunks(info, headers):
            await self._purge_chunks(bucket, info.nuid)
        return tomb

    async def _purge_chunks(self, bucket: str, nuid: str) -> None:
        self.reader.forget(bucket, nuid)
        await self.js.purge(bucket_stream(bucket), chunk_subject(bucket, nuid))

    async def _send_chunks(
        self,
        bucket: str,
        source: Source,
        size_per_chunk: int,
        lookup: asyncio.Future[Any] | None = None,
    ) -> tuple[_ChunkSender, Any, builtins.list[int]]:
        """Store ``source``'s chunks under a fresh nuid; the sender (with every chunk's
        sequence), the running hash and the chunk sizes.

        ``lookup``: the put's look-up running meanwhile; if it fails, so does the put, at
        once (its chunks dropped) rather than after the whole source was sent.

        After an outage during the put, the chunks are checked on the server before the meta
        may refer to them: a server killed (not stopped) may lose messages it had
        acknowledged, and a chunk re-sent after the loss lands out of order. The put then
        starts over from the source's first byte under a new nuid (if the source can seek: a
        streaming source cannot, and such a put fails instead).
        """
        start = None if not _seekable(source) else source.tell()
        for attempt in range(1, PUT_RESTARTS + 2):
            nuid = self._nuid.next().decode()
            chunks = _ChunkSender(self._publisher, chunk_subject(bucket, nuid), nuid, self.timeout)
            sha = hashlib.sha256()
            sizes: list[int] = []
            try:
                async for piece in apieces(source, size_per_chunk):
                    sha.update(piece)
                    sizes.append(len(piece))
                    await chunks.send(piece)
                    if lookup is not None and lookup.done() and lookup.exception() is not None:
                        await lookup  # raises its error
                await chunks.finish()
                if chunks.patience.retried and not await self._chunks_intact(bucket, chunks):
                    raise _Reordered(f"{bucket}: chunks of {nuid} lost or reordered by the server")
                return chunks, sha, sizes
            except BaseException as e:
                if _collected(e):
                    raise
                if chunks.started:
                    # Shielded: a cancelled put must still not leave orphan chunks behind.
                    await asyncio.shield(self._drop_chunks(bucket, chunks))
                retry = isinstance(e, _Reordered) and attempt <= PUT_RESTARTS
                if not retry or not (isinstance(source, bytes) or start is not None):
                    raise
                log.warning("put to %s: %s; starting over", bucket, e)
                if _seekable(source):
                    assert start is not None
                    source.seek(start)
        raise AssertionError("unreachable")

    async def _chunks_intact(self, bucket: str, chunks: _ChunkSender) -> bool:
        """Whether the server holds exactly the chunks ``chunks`` was acknowledged for."""
        stored: builtins.list[int] = []
        await consume_snapshot(
            self.js,
            bucket_stream(bucket),
            chunks.subject,
            headers_only=True,
            deliver_policy="all",
            on_msg=lambda m: stored.append(m.seq),
        )
        return stored == chunks.seqs

    async def _drop_chunks(self, bucket: str, chunks: _ChunkSender) -> None:
        await chunks.drain()
        await self._purge_quietly(bucket, chunks.nuid)

    async def _abandon(
        self, bucket: str, name: str, nuid: str, chunks: _ChunkSender, *, ambiguous: bool
    ) -> ObjectInfo | None:
        """Clean up after a failed put; the meta it stored if the put succeeded after all.

        Chunks still in flight are waited for first (within the timeout): the server handles
        a purge apart from the publishes sent before it, and one stored after the purge would
        be left behind for ever. ``ambiguous``: the meta was sent and its outcome is unknown
        (no ack): the name's meta is read back, and the chunks are purged only if no live
        meta refers to them; if even that cannot be read, they are kept (a leak, logged,
        rather than an object whose chunks are gone).
        """
        await chunks.drain()
        if ambiguous:
            try:
                now = await self._last_meta(bucket, name)
            except errors.StoreError as e:
                log.warning(
                    "put of %s/%s: outcome unknown (%s); keeping chunks %s", bucket, name, e, nuid
                )
                return None
            if now is not None and now.nuid == nuid:
                return None if now.deleted else now  # stored (deleted since: purged then)
        await self._purge_quietly(bucket, nuid)
        return None

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
    def watch(self, bucket: str, *, batched: bool = False) -> AsyncGenerator[WatchEvent, None]:
        return self.watcher.watch(bucket, batched=batched)

    def watch_buckets(self) -> AsyncGenerator[BucketEvent, None]:
        return self.watcher.watch_buckets()

    async def _replaced(self, bucket: str, name: str, if_revision: int | None) -> _Meta:
        """The meta a put replaces and its headers (run while the put's chunks go out);
        Exists unless the name's live revision is ``if_revision`` (0: none), if given."""
        old, headers = await self._last_meta_msg(bucket, name)
        if if_revision is not None:
            current = old.revision if old is not None and not old.deleted else 0
            if current != if_revision:
                raise errors.Exists(
                    f"{bucket}/{name}: revision is {current}, expected {if_revision}"
                )
        return old, headers

    async def _free_at(self, bucket: str, name: str) -> int:
        """After an exclusive create's meta was refused: the sequence to expect instead if
        the name is free after all (a tombstone's, or 0 if its meta is gone); Exists if not."""
        now = await self._last_meta(bucket, name)
        if now is not None and not now.deleted:
            raise errors.Exists(f"{bucket}/{name}: revision is {now.revision}, expected 0")
        return now.revision if now is not None else 0

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
        # The name's current meta is looked up while the chunks go out, so its round trip
        # overlaps theirs; an exclusive create does not look at all unless the server
        # refuses its meta (see the module docstring).
        lookup: asyncio.Task[_Meta] | None = None
        if if_revision != 0:
            lookup = asyncio.create_task(self._replaced(bucket, name, if_revision))
            lookup.add_done_callback(_retrieved)
        try:
            chunks, sha, sizes = await self._send_chunks(bucket, source, size_per_chunk, lookup)
        except BaseException as e:
            if _collected(e):
                raise
            if lookup is not None:
                await _settle(lookup)
            raise
        nuid = chunks.nuid
        seqs = chunks.seqs
        meta_sent = cancelled = False
        old: ObjectInfo | None = None
        old_headers: dict[str, str] = {}
        try:
            if lookup is not None:
                old, old_headers = await lookup
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
            # None: unconditional; N: the revision ``_replaced`` checked, so a write since
            # the lookup fails the put; 0: exclusive, optimistically that the name never
            # existed (a tombstone there is found only if the server refuses).
            expected = if_revision
            for attempt in range(2):
                meta_sent = True
                publish = asyncio.ensure_future(self._publish_meta(info, expected))
                try:
                    try:
                        info = await asyncio.shield(publish)
                    except asyncio.CancelledError:
                        # Once sent, the meta's outcome (its retries included, bounded by
                        # the timeout) is waited for: until it is known, the put cannot
                        # tell whether it stored, nor whose chunks it may purge.
                        cancelled = True
                        await _finish(publish)
                        info = publish.result()
                    break
                except WrongLastSequence:
                    meta_sent = False  # a definite refusal: nothing was stored
                    if cancelled:
                        raise asyncio.CancelledError() from None
                    if if_revision != 0:
                        raise errors.Exists(f"{bucket}/{name} changed during the put") from None
                    if attempt:
                        raise errors.Exists(f"{bucket}/{name} was created concurrently") from None
                expected = await self._free_at(bucket, name)
        except BaseException as exc:
            if _collected(exc):
                raise
            if lookup is not None:
                await _settle(lookup)  # cancelled with the put while it awaited the lookup
            if chunks.started:
                # Shielded: a cancelled put must still not leave orphan chunks behind.
                landed = await asyncio.shield(
                    self._abandon(bucket, name, nuid, chunks, ambiguous=meta_sent)
                )
                if landed is not None and isinstance(exc, errors.StoreError):
                    # The meta was stored after all (its ack was lost): the put succeeded.
                    log.info("put of %s/%s: stored although %s", bucket, name, exc)
                    info = landed
                elif cancelled:
                    raise asyncio.CancelledError() from exc
                else:
                    raise
            elif cancelled:
                raise asyncio.CancelledError() from exc
            else:
                raise
        old_live = old if old is not None and not old.deleted else None
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.reader.remember(ChunkLayout(bucket, nuid, seqs, offsets))
        if (
            old_live is not None
            and not old_live.is_link
            and old_live.chunks
            and not await self._shares_chunks(old_live, old_headers)
        ):
            await self._purge_quietly(bucket, old_live.nuid)
        if cancelled:  # stored, and what it replaced cleaned up: the cancel is kept now
            raise asyncio.CancelledError()
        return info

    async def close(self) -> None:
        if self._events is not None:
            self._events.closing = True
        for task in list(self._finishing):
            log.warning("closing with a rename unfinished: its old name stays")
            task.cancel()
        await self.reader.close()
        await self._publisher.close()
        if not self.nc.is_closed:
            # A dead connection may fail its final flush: closing must not raise anyway.
            with contextlib.suppress(TimeoutError, OSError, nats.errors.Error):
                await within(self.nc.close(), self.timeout)


def _collected(e: BaseException) -> bool:
    """A put closed unfinished after its loop is gone (garbage collected at exit): nothing
    can be awaited any more, so its clean-up cannot run (and would only raise)."""
    if not isinstance(e, GeneratorExit):
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def _meta_fields(meta: ObjectMeta | None) -> dict[str, Any]:
    if meta is None:
        return {}
    return {
        "description": meta.description,
        "headers": {k: list(v) for k, v in meta.headers.items()},
        "metadata": dict(meta.metadata),
    }


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Done callback of a put's look-up: a failure the put does not await (it failed first
    itself) is not logged as never retrieved."""
    if not task.cancelled():
        task.exception()


async def _finish(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end whatever cancels its awaiter meanwhile (the caller raises
    the cancel itself once it has acted on the outcome); ``task`` is bounded on its own."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([task])


async def _settle(task: asyncio.Future[Any]) -> None:
    """Cancel a put's look-up and wait for it to end, so that a failed or cancelled put
    leaves no request of its own behind; its outcome is dropped (the put's error wins)."""
    task.cancel()
    await asyncio.wait([task])


def _seekable(source: Source) -> TypeGuard[BinaryIO]:
    """A file the put can read again from where it started."""
    return not isinstance(source, bytes | AsyncIterable) and source.seekable()


class _Reordered(errors.Unavailable):
    """The server lost or reordered acknowledged chunks of a put (killed during it)."""


class _ChunkSender:
    """The chunks of one put, published in order with at most ``PUT_WINDOW`` unacknowledged.

    Each chunk carries the Msg-Id ``<nuid>.<index>``. A lost ack or a dropped connection sends
    the window again from its first unacknowledged chunk, under the same ids: JetStream's
    duplicate window answers those that had landed with their original sequence. Retries go on
    until the store's timeout has passed without progress. A chunk that landed after a later
    one (the later one re-sent on a new connection before the earlier one's loss was known)
    breaks the stream order readers rely on: the put fails then (Unavailable), nothing is
    reordered.
    """

    def __init__(self, publisher: Publisher, subject: str, nuid: str, timeout: float) -> None:
        self.publisher = publisher
        self.subject = subject
        self.nuid = nuid
        self.timeout = timeout
        self.window: collections.deque[tuple[int, bytes, asyncio.Future[int]]] = collections.deque()
        self.seqs: list[int] = []
        self.started = False
        self.patience = Patience(timeout)
        """Retries of this put's chunks; if any, the chunks are checked before the meta."""
        self._next = 0

    async def send(self, piece: bytes) -> None:
        fut = await self._publish(self._next, piece)
        self.window.append((self._next, piece, fut))
        self._next += 1
        self.started = True
        if len(self.window) >= PUT_WINDOW:
            await self._ack_first()

    async def finish(self) -> list[int]:
        """Every chunk's stream sequence, once all are acknowledged."""
        while self.window:
            await self._ack_first()
        return self.seqs

    async def drain(self) -> None:
        """Wait (within the timeout) for the chunks still in flight, then drop them."""
        futs = [fut for _, _, fut in self.window]
        if futs:
            await asyncio.wait(futs, timeout=self.timeout)
        for fut in futs:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: an ack error is the put's error already
            fut.cancel()

    async def _publish(self, index: int, piece: bytes) -> asyncio.Future[int]:
        while True:
            try:
                return await self.publisher.send(
                    self.subject, piece, {MSG_ID: f"{self.nuid}.{index}"}
                )
            except errors.Unavailable as e:
                await self.patience.failed(e)

    async def _ack_first(self) -> None:
        while True:
            _, _, fut = self.window[0]
            try:
                seq = await self.publisher.ack(fut, attempt_timeout(self.timeout))
            except NoResponders as e:
                # The stream is missing (NotFound now) or not loaded yet (a restart): retry.
                await self.publisher.js.stream_exists(stream_of_subject(self.subject))
                await self.patience.failed(e)
                await self._resend()
                continue
            except errors.Unavailable as e:
                await self.patience.failed(e)
                await self._resend()
                continue
            self.window.popleft()
            self.patience.progress()
            if self.seqs and seq <= self.seqs[-1]:
                raise _Reordered(
                    f"{self.subject}: chunk {len(self.seqs)} stored out of order after a reconnect"
                )
            self.seqs.append(seq)
            return

    async def _resend(self) -> None:
        old = list(self.window)
        self.window.clear()
        for index, piece, fut in old:
            fut.cancel()
            self.window.append((index, piece, await self._publish(index, piece)))
