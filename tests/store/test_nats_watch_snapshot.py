"""The watch's snapshot through the lean reader (``NatsWatcher.bulk_snapshot``): the same
objects as the ordered consumer's snapshot, and no change lost around it (a change made while
the snapshot is read, or between its end and the start of the live consumer).

Buckets here are small: every test lowers ``BULK_SNAPSHOT_MIN`` (the stream size from which
the lean reader reads the snapshot) to 0."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats_helpers import Run, bulk_in_use

from objfs.server import EmbeddedServer
from objfs.store import errors, nats_bulk, nats_js, nats_watch
from objfs.store.api import BucketConfig, ObjectInfo, ObjectMeta, WatchEvent
from objfs.store.names import encode_name
from objfs.store.nats_store import NatsObjectStore, connect
from objfs.store.wire import encode_info

WAIT = 60.0  # a generous deadline (only a failing test waits it out)


@pytest.fixture(autouse=True)
def lean_for_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nats_watch, "BULK_SNAPSHOT_MIN", 0)


async def _next(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(events.__anext__(), WAIT)


async def snapshot_of(events: AsyncIterator[WatchEvent]) -> dict[str, ObjectInfo]:
    """The objects a watch's snapshot shows (``put`` or ``snapshot`` events), by name."""
    seen: dict[str, ObjectInfo] = {}
    while (event := await _next(events)).kind != "snapshot_end":
        if event.kind == "snapshot":
            seen.update((info.name, info) for info in event.infos)
        else:
            assert event.kind == "put" and event.info is not None, event
            seen[event.info.name] = event.info
    return seen


def apply(view: dict[str, ObjectInfo], event: WatchEvent) -> None:
    assert event.info is not None
    if event.kind == "put":
        view[event.info.name] = event.info
    elif event.kind == "delete" and event.info.nuid == view.get(event.info.name, event.info).nuid:
        view.pop(event.info.name, None)


async def follow_until(
    events: AsyncIterator[WatchEvent], view: dict[str, ObjectInfo], want: dict[str, ObjectInfo]
) -> None:
    """Apply live events to ``view`` until it shows ``want`` (generous deadline)."""
    deadline = time.monotonic() + WAIT
    while _summary(view) != _summary(want):
        assert time.monotonic() < deadline, f"watch shows {_summary(view)}, not {_summary(want)}"
        apply(view, await _next(events))


def _summary(objects: dict[str, ObjectInfo]) -> dict[str, tuple[str, int]]:
    return {name: (info.nuid, info.revision) for name, info in objects.items()}


async def current(store: NatsObjectStore, bucket: str) -> dict[str, ObjectInfo]:
    return {info.name: info for info in await store.list(bucket)}


async def fill(store: NatsObjectStore, nc: Any, bucket: str) -> None:
    """Objects of every kind a snapshot must get right."""
    await store.create_bucket(BucketConfig(bucket, storage="memory"))
    for i in range(20):
        await store.put(bucket, f"f{i:02}", f"data {i}".encode())
    await store.put(bucket, "f00", b"overwritten")  # a newer version of a name
    await store.put(bucket, "gone", b"x")
    await store.delete(bucket, "gone")  # a tombstone: not shown
    await store.put(bucket, "dir/", b"")  # a directory marker
    await store.put(bucket, "dir/x", b"x", meta=ObjectMeta("described", {"Objfs-Mode": ["600"]}))
    await store.add_link(bucket, "ln", bucket, "f01")
    await store.rename(bucket, "f02", "renamed")  # objfs's rename: new name, tombstone
    # nats.go's rename: the meta under the new name, then the old subject purged.
    old = await store.info(bucket, "f03")
    js = nc.jetstream()
    moved = dataclasses.replace(old, name="go-renamed")
    await js.publish(
        f"$O.{bucket}.M.{encode_name('go-renamed')}",
        encode_info(moved),
        headers={"Nats-Rollup": "sub"},
    )
    await js.purge_stream(f"OBJ_{bucket}", subject=f"$O.{bucket}.M.{encode_name('f03')}")


@pytest.mark.parametrize("batched", [True, False])
async def test_lean_snapshot_shows_what_the_ordered_consumer_shows(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, batched: bool
) -> None:
    async def body() -> None:
        import nats

        store = await connect([nats_server.url], timeout=5.0)
        nc = await nats.connect(nats_server.url)
        used: list[int | None] = []
        bulk_snapshot = store.watcher.bulk_snapshot

        async def recorded(*args: Any) -> int | None:
            used.append(await bulk_snapshot(*args))
            return used[-1]

        store.watcher.bulk_snapshot = recorded  # type: ignore[method-assign]
        try:
            await fill(store, nc, bucket_name)
            want = await current(store, bucket_name)
            assert "gone" not in want and "f03" not in want and "go-renamed" in want
            lean = store.watch(bucket_name, batched=batched)
            try:
                seen = await snapshot_of(lean)
            finally:
                await lean.aclose()
            assert used and used[-1] is not None, "the lean reader did not read the snapshot"
            assert bulk_in_use(store)
            store.watcher.bulk = None  # now the ordered consumer reads it
            ordered = store.watch(bucket_name, batched=batched)
            try:
                by_consumer = await snapshot_of(ordered)
            finally:
                await ordered.aclose()
            assert used[-1] is None
            assert seen == by_consumer  # every field of every object
            assert _summary(seen) == _summary(want)
            assert seen["dir/x"].headers == {"Objfs-Mode": ["600"]}
            assert seen["dir/x"].description == "described"
            assert seen["ln"].link is not None and seen["ln"].link.name == "f01"
            await store.delete_bucket(bucket_name)
        finally:
            await nc.close()
            await store.close()

    await run(body)


async def test_changes_around_the_lean_snapshot_are_not_lost(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes made while the lean reader reads the snapshot (its consumer is slowed down, so
    they come among the snapshot's messages) and after its end, before the live consumer
    exists: the watch shows every one of them, the store's final state."""
    config = nats_watch.push_consumer_config

    def slowed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = config(*args, **kwargs)
        out["rate_limit_bps"] = 8 * 2000  # some 8 meta messages a second
        return out

    monkeypatch.setattr(nats_watch, "push_consumer_config", slowed)
    start = nats_js.OrderedConsumer.start
    take = nats_bulk.PushRead.take_stamped
    writer: list[NatsObjectStore] = []
    b = bucket_name

    async def during(self: nats_bulk.PushRead, timeout: float) -> Any:
        if writer:
            other = writer.pop()
            await other.delete(b, "f00")
            await other.put(b, "f01", b"new version")
            await other.rename(b, "f02", "moved-during")
            await other.put(b, "made-during", b"x")
            writer.append(other)
        return await take(self, timeout)

    async def after(self: nats_js.OrderedConsumer, *, after: int | None = None) -> int:
        if after is not None and writer:
            other = writer.pop()  # once
            await other.delete(b, "f03")
            await other.put(b, "made-after", b"y")
            await other.rename(b, "f04", "moved-after")
        return await start(self, after=after)

    monkeypatch.setattr(nats_bulk.PushRead, "take_stamped", during)
    monkeypatch.setattr(nats_js.OrderedConsumer, "start", after)

    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        other = await connect([nats_server.url], timeout=5.0)
        events = None
        try:
            await store.create_bucket(BucketConfig(b, storage="memory"))
            for i in range(30):
                await store.put(b, f"f{i:02}", f"data {i}".encode())
            writer.append(other)
            events = store.watch(b, batched=True)
            view = await snapshot_of(events)
            assert not writer or "made-during" in await current(other, b)
            want = await current(other, b)
            assert "made-after" in want and "f03" not in want and "f00" not in want
            await follow_until(events, view, want)
            assert sorted(view) == sorted(want)
            await store.delete_bucket(b)
        finally:
            if events is not None:
                await events.aclose()
            await other.close()
            await store.close()

    await run(body)


async def test_a_failed_lean_snapshot_is_read_again_by_the_ordered_consumer(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    take = nats_bulk.PushRead.take_stamped

    async def broken(self: nats_bulk.PushRead, timeout: float) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await take(self, timeout)  # part of it arrived, then the connection went
            raise errors.Unavailable("bulk connection lost (test)")
        return await take(self, timeout)

    monkeypatch.setattr(nats_bulk.PushRead, "take_stamped", broken)

    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        events = None
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            for i in range(10):
                await store.put(bucket_name, f"f{i}", b"x")
            await store.delete(bucket_name, "f5")
            events = store.watch(bucket_name, batched=True)
            seen = await snapshot_of(events)
            assert calls == 1
            assert _summary(seen) == _summary(await current(store, bucket_name))
            await store.put(bucket_name, "live", b"y")  # and the live watch follows
            event = await _next(events)
            assert event.kind == "put" and event.info is not None and event.info.name == "live"
            await store.delete_bucket(bucket_name)
        finally:
            if events is not None:
                await events.aclose()
            await store.close()

    await run(body)


async def test_a_refused_lean_consumer_falls_back_to_the_ordered_consumer(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean snapshot's own requests (STREAM.INFO, its consumer) refused by the server,
    as an account's consumer limit or permissions would: the watch reads the snapshot as
    before instead of failing."""

    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        events = None
        api = store.js.api
        refused = []

        async def refusing(subject: str, *args: Any, **kwargs: Any) -> Any:
            if subject.startswith("CONSUMER.CREATE") and not refused:
                refused.append(subject)
                raise errors.StoreError("maximum consumers limit reached (test)")
            return await api(subject, *args, **kwargs)

        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            for i in range(5):
                await store.put(bucket_name, f"f{i}", b"x")
            monkeypatch.setattr(store.js, "api", refusing)
            events = store.watch(bucket_name, batched=True)
            seen = await snapshot_of(events)
            assert refused
            assert _summary(seen) == _summary(await current(store, bucket_name))
            await store.delete_bucket(bucket_name)
        finally:
            if events is not None:
                await events.aclose()
            await store.close()

    await run(body)


async def test_a_small_bucket_is_read_by_the_ordered_consumer(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nats_watch, "BULK_SNAPSHOT_MIN", 1000)

    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        events = None
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            await store.put(bucket_name, "a", b"a")
            events = store.watch(bucket_name, batched=True)
            assert sorted(await snapshot_of(events)) == ["a"]
            assert not bulk_in_use(store)  # no lean connection opened for it
            await store.delete_bucket(bucket_name)
        finally:
            if events is not None:
                await events.aclose()
            await store.close()

    await run(body)


async def test_watch_of_a_missing_bucket_is_not_found_through_the_lean_reader(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        try:
            assert await store.reader.bulk_conn() is not None
            with pytest.raises(errors.NotFound):
                async for _ in store.watch(bucket_name + "-missing", batched=True):
                    pass
        finally:
            await store.close()

    await run(body)
