"""The change notices of ``NatsObjectStore``: ``watch`` (objects) and ``watch_buckets``.

``NatsWatcher`` is the part of ``NatsObjectStore`` that watches: the store builds it with the
connection and its JetStream client and delegates ``watch`` and ``watch_buckets`` to it.

- ``watch`` first reads the snapshot (the last message of every meta subject) through the
  lean reader of ``nats_bulk`` when it can (``bulk_snapshot``), then follows the meta
  subjects with an ordered consumer from the stream sequence after the snapshot's last
  message, so nothing written between the two is lost; without the lean reader the ordered
  consumer delivers the snapshot itself (last message per subject first). The snapshot is
  the bucket's state at its end: a change that arrives while it is read (a delete, a
  rename) is applied to it, not lost. When the consumer falls silent (a server restart drops it,
  or the connection is down) it is recreated from a fresh snapshot, not from the last sequence
  seen: that also catches what leaves no message (a purged subject, an expired object, a
  stream re-created meanwhile). The fresh snapshot is compared with what the watch reported,
  so a reconnect reports only the differences instead of flooding.
- A rename by another client that purges the old meta subject (the Go client's way) shows as
  the nuid moving to a new name: the old name is reported gone before the new one appears.
- ``watch_buckets`` listens to the server's stream advisories; they are not stored, so a
  reconnect, and every ``BUCKET_RESYNC`` seconds, re-lists the buckets to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from objfs.store import errors
from objfs.store.api import (
    BucketEvent,
    ObjectInfo,
    WatchEvent,
    bucket_changes,
    listing_events,
)
from objfs.store.deadline import within
from objfs.store.names import check_bucket
from objfs.store.nats_bulk import BulkConnection
from objfs.store.nats_js import JetStream, OrderedConsumer, delete_consumer_quietly, mapped
from objfs.store.nats_protocol import EVENTS, consumer_create, push_consumer_config
from objfs.store.nats_subjects import bucket_of_stream, bucket_stream, meta_filter
from objfs.store.wire import decode_info, decode_stored

# The store's logger, as before the split: the log lines keep their name.
log = logging.getLogger("objfs.store.nats_store")

WATCH_HEARTBEAT = 2.0
"""Seconds between the server's idle heartbeats to a watch; three missed ones mean the
consumer is gone (see ``watch``)."""
BUCKET_ADVISORIES = "ADVISORY.STREAM.*.*"
"""Stream CREATED/UPDATED/DELETED advisories (after the event prefix, ``$JS.EVENT``): how
the bucket-list watch hears of changes. A domain does not rename events, and they reach an
importing account only where exported to it (``--js-event-prefix`` names where);
``BUCKET_RESYNC`` covers the rest."""
BUCKET_RESYNC = 30.0
"""Seconds between full bucket listings of the bucket-list watch (advisories are core NATS
messages: one lost to a slow consumer is caught up here; a reconnect re-lists at once)."""
BULK_SNAPSHOT_MIN = 1000
"""Messages (chunks and metas) a bucket's stream must hold for its watch snapshot to be read
by the lean reader: below, the ordered consumer's one request is quicker (no second consumer,
no second connection to open)."""
SNAPSHOT_AHEAD = 8 << 20
"""Bytes of meta messages the lean reader may hold before its flow control stops the server
(a snapshot of 100,000 objects is some 25 MiB)."""


class NatsWatcher:
    """``watch`` and ``watch_buckets`` of ``NatsObjectStore``."""

    def __init__(
        self,
        nc: Client,
        js: JetStream,
        bulk: Callable[[], Awaitable[BulkConnection | None]] | None = None,
        *,
        event_prefix: str = EVENTS,
    ) -> None:
        """``bulk``: the lean reader's connection (None when it cannot serve now), which
        reads a watch's snapshot; without it the ordered consumer does. ``event_prefix``:
        where the server's advisories arrive."""
        self.nc = nc
        self.js = js
        self.bulk = bulk
        self.advisories = f"{event_prefix}.{BUCKET_ADVISORIES}"

    async def watch(
        self, bucket: str, *, batched: bool = False
    ) -> AsyncGenerator[WatchEvent, None]:
        """See ``ObjectStore.watch``; survives server restarts and lost connections.

        The snapshot is gathered whole (the state at its end, see the module docstring),
        then handed on as one ``snapshot`` event when ``batched``, else as one ``put`` per
        object, and ``snapshot_end``.

        After three heartbeats of silence (the server restarted and dropped the ephemeral
        consumer, or the connection is down) the consumer is recreated from a fresh snapshot
        (last message per meta subject), not from the last sequence seen: that also catches
        what leaves no message (a purged subject, an expired object, a stream re-created
        meanwhile). The fresh snapshot is compared with what this watch reported: only
        names whose revision changed come out as ``put``, names no longer there as
        ``delete``; unchanged objects produce nothing, so a reconnect does not flood.
        """
        check_bucket(bucket)
        oc = OrderedConsumer(
            self.js, bucket_stream(bucket), meta_filter(bucket), heartbeat=WATCH_HEARTBEAT
        )
        live: dict[str, ObjectInfo] = {}
        by_nuid: dict[str, str] = {}
        resync: set[str] | None = None
        """Names seen in the fresh snapshot of a resync under way (None: no resync)."""
        try:
            last = await self.bulk_snapshot(bucket, live, by_nuid)
            if last is not None:
                # The snapshot came through the lean reader: follow from its last message on.
                await oc.start(after=last)
                in_snapshot = False
                for event in _snapshot_events(live, batched):
                    yield event
            else:
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
                    if in_snapshot:
                        # Nothing reported yet: the fresh snapshot simply replaces this one.
                        live.clear()
                        by_nuid.clear()
                        if oc.pending_at_start == 0:  # the bucket is empty now
                            in_snapshot = False
                            yield WatchEvent("snapshot_end")
                        continue
                    resync = set()
                    if oc.pending_at_start == 0:  # the bucket is empty now
                        for event in _resync_end(resync, live, by_nuid):
                            yield event
                        resync = None
                    continue
                try:
                    info = decode_stored(bucket, m)
                except errors.Corrupt as e:
                    log.warning("watch %s: %s", bucket, e)
                    info = None
                if info is not None:
                    if in_snapshot:
                        _gather(info, live, by_nuid)
                        info = None
                    elif resync is not None:
                        if not info.deleted:
                            resync.add(info.name)
                        known = live.get(info.name)
                        if known is not None and known.revision == info.revision:
                            info = None  # unchanged since we last reported it
                    if info is not None:
                        for event in _apply(info, live, by_nuid):
                            yield event
                if m.pending == 0:
                    if resync is not None:
                        for event in _resync_end(resync, live, by_nuid):
                            yield event
                        resync = None
                    if in_snapshot:
                        in_snapshot = False
                        for event in _snapshot_events(live, batched):
                            yield event
        finally:
            await oc.stop()

    async def bulk_snapshot(
        self, bucket: str, live: dict[str, ObjectInfo], by_nuid: dict[str, str]
    ) -> int | None:
        """Read the last message of every meta subject of ``bucket`` into ``live`` (and
        ``by_nuid``) through the lean reader; the stream sequence of the last message read.

        None: not read this way (no lean reader, a stream of fewer than
        ``BULK_SNAPSHOT_MIN`` messages, an empty bucket, or the lean connection failed
        meanwhile: ``live`` is left empty), the ordered consumer reads the snapshot.
        NotFound if the bucket does not exist. Why: nats-py's receive path (a ``Msg`` and a
        header dict per message, a task hop per message) took some 4 s of the 6.5 s before
        the first ``ls`` of a 100,000-object bucket; the lean reader parses in place.

        An ephemeral push consumer (last per subject) delivers to the lean connection; its
        messages are decoded a batch at a time. It ends at the first message after which
        nothing was pending: every change made before then is in ``live``, every later one
        has a higher stream sequence, where the live consumer starts.
        """
        if self.bulk is None:
            return None
        stream = bucket_stream(bucket)
        # A small bucket's snapshot is quicker through the ordered consumer than a second
        # consumer (and, the first time, a second connection) would make it.
        try:
            si = await self.js.api(f"STREAM.INFO.{stream}")
        except errors.NotFound:
            raise
        except errors.StoreError as e:  # e.g. a user not allowed STREAM.INFO: as before
            log.info("watch %s: no lean snapshot (%s)", bucket, e)
            return None
        if int((si.get("state") or {}).get("messages", 0)) < BULK_SNAPSHOT_MIN:
            return None
        conn = await self.bulk()
        if conn is None:
            return None
        push = conn.push_read(limit=SNAPSHOT_AHEAD, stamped=True)
        name: str | None = None
        try:
            config = push_consumer_config(
                push.subject.decode(),
                meta_filter(bucket),
                deliver_policy="last_per_subject",
                heartbeat=max(1.0, self.js.timeout),
                inactive_threshold=max(30.0, 3 * self.js.timeout),
            )
            try:
                resp = await self.js.api(*consumer_create(stream, config))
            except errors.NotFound:
                raise
            except errors.StoreError as e:  # e.g. the account's consumer limit: as before
                log.info("watch %s: no lean snapshot (%s)", bucket, e)
                return None
            name = resp.get("name")
            if int(resp.get("num_pending", 0)) == 0:
                return None  # nothing to read: the ordered consumer's start is as quick
            last = 0
            while True:
                try:
                    seqs, stamps, subjects, datas, ended = await push.take_stamped(self.js.timeout)
                except (errors.Unavailable, errors.Timeout) as e:
                    log.info("watch %s: lean snapshot failed (%s); reading it again", bucket, e)
                    live.clear()
                    by_nuid.clear()
                    return None
                for seq, stamp, subject, data in zip(seqs, stamps, subjects, datas, strict=True):
                    try:
                        info = decode_info(
                            data,
                            bucket=bucket,
                            revision=seq,
                            timestamp_ns=stamp,
                            subject=subject.decode(),
                        )
                    except errors.Corrupt as e:
                        log.warning("watch %s: %s", bucket, e)
                        continue
                    _gather(info, live, by_nuid)
                if seqs:
                    last = max(last, seqs[-1])
                if ended:
                    return last
        finally:
            push.close()
            await delete_consumer_quietly(self.js, stream, name)

    async def _bucket_states(self) -> dict[str, bool]:
        """Every object store bucket and whether it is sealed (configs only, no object
        counting)."""
        return {
            bucket_of_stream(si["config"]["name"]): bool(si["config"].get("sealed", False))
            for si in await self.js.bucket_streams()
        }

    async def _sealed(self, bucket: str) -> bool:
        check_bucket(bucket)
        si = await self.js.api(f"STREAM.INFO.{bucket_stream(bucket)}")
        return bool(si["config"].get("sealed", False))

    async def watch_buckets(self) -> AsyncGenerator[BucketEvent, None]:
        """See ``ObjectStore.watch_buckets``: stream advisories, plus a re-list on reconnect.

        The server publishes ``$JS.EVENT.ADVISORY.STREAM.{CREATED,UPDATED,DELETED}.<stream>``
        for every stream change, whoever makes it; an advisory for ``OBJ_<bucket>`` makes this
        watch look at that one stream (sealed or not, still there or not). Advisories are
        not stored: those sent while the connection was down are lost, so a reconnect (and
        every ``BUCKET_RESYNC`` seconds, for one lost otherwise) re-lists the buckets and
        reports the differences.
        """
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            queue.put_nowait(msg)

        with mapped("subscribe"):
            sub = await self.nc.subscribe(self.advisories, cb=on_msg, pending_bytes_limit=0)
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
                    for event in listing_events(known, now, first=first):
                        yield event
                    known, first = now, False
                try:
                    msg = await within(queue.get(), 1.0)
                except TimeoutError:
                    continue
                kind, _, stream = msg.subject.rpartition(".")
                kind = kind.rpartition(".")[2]
                name = bucket_of_stream(stream)
                if not name or kind not in ("CREATED", "UPDATED", "DELETED"):
                    continue
                try:
                    sealed: bool | None = await self._sealed(name)
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


def _snapshot_events(live: dict[str, ObjectInfo], batched: bool) -> list[WatchEvent]:
    """The events that hand on a gathered snapshot (see ``watch``)."""
    if batched:
        return [WatchEvent("snapshot", infos=list(live.values())), WatchEvent("snapshot_end")]
    return [*(WatchEvent("put", info) for info in live.values()), WatchEvent("snapshot_end")]


def _gather(info: ObjectInfo, live: dict[str, ObjectInfo], by_nuid: dict[str, str]) -> None:
    """Apply one message of a snapshot to the state gathered so far (no events: nothing of
    it was reported yet). The same rules as ``_apply``: a tombstone takes its name out, a
    nuid that moves to a new name takes the old name out (a rename that purged it)."""
    name = info.name
    if info.deleted:
        gone = live.pop(name, None)
        if gone is not None and by_nuid.get(gone.nuid) == name:
            del by_nuid[gone.nuid]
        return
    if info.link is None:
        other = by_nuid.get(info.nuid)
        if other is not None and other != name:
            live.pop(other, None)
        by_nuid[info.nuid] = name
    prev = live.get(name)
    if prev is not None and prev.nuid != info.nuid and by_nuid.get(prev.nuid) == name:
        del by_nuid[prev.nuid]
    live[name] = info


def _apply(
    info: ObjectInfo, live: dict[str, ObjectInfo], by_nuid: dict[str, str]
) -> list[WatchEvent]:
    """Watch events for one live meta message, updating the live-name and nuid maps."""
    events: list[WatchEvent] = []
    name = info.name
    if info.deleted:
        gone = live.pop(name, None)
        if gone is not None:
            if by_nuid.get(gone.nuid) == name:
                del by_nuid[gone.nuid]
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
