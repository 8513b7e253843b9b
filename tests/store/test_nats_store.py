"""NATS-specific behaviour of the NATS backend, on a real nats-server.

The contract suite (test_contract.py) checks what every backend does; this file checks what
only NATS has: the ADR-20 wire format as another client (nats-py's own ObjectStore) reads and
writes it, chunk layouts that are not one contiguous run, chunks removed behind the store's
back, a server that goes away mid-read or restarts under a watch, and server limits mapped to
objfs errors. Test bodies run on the asyncio thread (where nats-py lives) through the bridge.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.js.errors
import nats.nuid
import pytest
from nats_helpers import Run, read_all
from store_bounds import HANG_TIMEOUT, assert_no_timeout_waited, assert_within

from objfs.server import EmbeddedServer
from objfs.store import errors, nats_js, nats_reads, nats_watch
from objfs.store.api import BucketConfig, ObjectInfo, ObjectMeta, WatchEvent
from objfs.store.names import encode_name
from objfs.store.nats_store import connect
from objfs.store.wire import (
    decode_info,
    encode_info,
    format_digest,
    format_mtime,
    parse_digest,
    parse_mtime,
)

WAIT = 60.0  # a generous deadline for a watch event (only a failing test waits it out)


class Session:
    """A store plus a plain nats-py connection to the same server, both closed at the end."""

    def __init__(self, url: str, bucket: str, timeout: float = 5.0) -> None:
        self.url = url
        self.bucket = bucket
        self.timeout = timeout

    async def __aenter__(self) -> Session:
        self.store = await connect([self.url], timeout=self.timeout)
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()
        await self.nc.close()

    @property
    def stream(self) -> str:
        return f"OBJ_{self.bucket}"


def session(url: str, bucket: str, timeout: float = 5.0) -> Session:
    return Session(url, bucket, timeout)


# -- the wire codec ------------------------------------------------------------------------


def test_mtime_formats() -> None:
    ns = 1_700_000_000_123_456_789
    assert format_mtime(ns) == "2023-11-14T22:13:20.123456789Z"
    assert parse_mtime(format_mtime(ns)) == ns
    assert format_mtime(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"  # Go trims zeros
    assert parse_mtime("2023-11-14T22:13:20.123456+00:00") == 1_700_000_000_123_456_000
    assert parse_mtime("2023-11-15T00:13:20.5+02:00") == 1_700_000_000_500_000_000
    assert parse_mtime("0001-01-01T00:00:00Z") is None  # nats.go's stored zero time
    assert parse_mtime("") is None
    assert parse_mtime("yesterday") is None


def test_meta_json_field_names() -> None:
    info = ObjectInfo(
        bucket="b",
        name="x",
        nuid="N",
        size=3,
        chunks=1,
        digest=format_digest(hashlib.sha256(b"abc").digest()),
        mtime_ns=1_700_000_000_000_000_001,
        description="d",
        headers={"H": ["1", "2"]},
        metadata={"k": "v"},
        chunk_size=1024,
    )
    doc = json.loads(encode_info(info))
    assert list(doc) == [
        "name",
        "description",
        "headers",
        "metadata",
        "options",
        "bucket",
        "nuid",
        "size",
        "mtime",
        "chunks",
        "digest",
    ]
    assert doc["options"] == {"max_chunk_size": 1024}
    assert doc["digest"] == "SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0="
    assert parse_digest(doc["digest"]) == hashlib.sha256(b"abc").digest()
    back = decode_info(encode_info(info), bucket="b", revision=7)
    assert back == dataclasses.replace(info, revision=7)
    with pytest.raises(errors.Corrupt):
        decode_info(b"not json", bucket="b")


# -- interoperability with nats-py's own ObjectStore ---------------------------------------


async def test_nats_py_reads_what_we_write(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    data = os.urandom(300_000)

    async def body() -> None:
        async with session(nats_server.url, bucket_name) as s:
            await s.store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await s.store.put(
                bucket_name, "dir/file.bin", data, meta=ObjectMeta("about", {"A": ["1"]})
            )
            obs = await s.js.object_store(bucket_name)
            theirs = await obs.get_info("dir/file.bin")
            assert (theirs.name, theirs.size, theirs.nuid, theirs.digest) == (
                "dir/file.bin",
                300_000,
                info.nuid,
                info.digest,
            )
            assert theirs.description == "about"
            assert theirs.chunks == 3
            sink = io.BytesIO()
            await obs.get("dir/file.bin", writeinto=sink)  # nats-py verifies the digest
            assert sink.getvalue() == data
            assert [o.name for o in await obs.list()] == ["dir/file.bin"]
            # The meta subject and JSON are exactly ADR-20's.
            raw = await s.js.get_msg(
                s.stream, subject=f"$O.{bucket_name}.M.{encode_name('dir/file.bin')}"
            )
            doc = json.loads(raw.data)
            sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
            assert doc["digest"] == "SHA-256=" + sha
            assert doc["headers"] == {"A": ["1"]}
            assert doc["options"] == {"max_chunk_size": 128 * 1024}
            assert raw.headers is not None and raw.headers.get("Nats-Rollup") == "sub"
            # After a delete nats-py sees it gone too.
            await s.store.delete(bucket_name, "dir/file.bin")
            gone = (nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError)
            with pytest.raises(gone):
                await obs.get_info("dir/file.bin")
            await s.store.delete_bucket(bucket_name)

    await run(body)


async def test_we_read_what_nats_py_writes(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    data = os.urandom(400_000)

    async def body() -> None:
        async with session(nats_server.url, bucket_name) as s:
            obs = await s.js.create_object_store(bucket_name)
            await obs.put("their/object", data)
            status = await s.store.bucket_status(bucket_name)
            assert status.objects == 1 and status.config.chunk_size == 128 * 1024
            info = await s.store.info(bucket_name, "their/object")
            assert info.size == 400_000 and info.chunks == 4
            assert abs(info.mtime_ns - time.time_ns()) < 60 * 1_000_000_000
            assert await read_all(s.store, info) == data
            assert [i.name for i in await s.store.list(bucket_name)] == ["their/object"]
            await s.store.delete_bucket(bucket_name)

    await run(body)


# -- layouts -------------------------------------------------------------------------------


async def _hand_written_object(
    s: Session, name: str, pieces: list[bytes], interleave: bytes | None
) -> ObjectInfo:
    """Publish chunks by hand (optionally another subject between each), then the meta."""
    b = s.bucket
    nuid = nats.nuid.NUID().next().decode()
    for piece in pieces:
        await s.js.publish(f"$O.{b}.C.{nuid}", piece)
        if interleave is not None:
            await s.js.publish(f"$O.{b}.C.other", interleave)
    data = b"".join(pieces)
    info = ObjectInfo(
        bucket=b,
        name=name,
        nuid=nuid,
        size=len(data),
        chunks=len(pieces),
        digest=format_digest(hashlib.sha256(data).digest()),
        mtime_ns=time.time_ns(),
    )
    await s.js.publish(
        f"$O.{b}.M.{encode_name(name)}", encode_info(info), headers={"Nats-Rollup": "sub"}
    )
    return await s.store.info(b, name)


async def test_non_contiguous_and_uneven_chunks(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    async def body() -> None:
        async with session(nats_server.url, bucket_name) as s:
            await s.store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            pieces = [os.urandom(n) for n in (1000, 10, 5000, 1000, 7)]
            info = await _hand_written_object(s, "gappy", pieces, interleave=b"x")
            layout = await s.store.layout(info)
            assert list(layout.offsets) == [0, 1000, 1010, 6010, 7010, 7017]
            steps = [b - a for a, b in zip(layout.seqs, layout.seqs[1:], strict=False)]
            assert steps == [2, 2, 2, 2]
            assert await read_all(s.store, info, window=2) == b"".join(pieces)
            assert await s.store.read_chunks(layout, 1, 3) == pieces[1:4]
            # Contiguous but uneven (the fast path must not guess offsets).
            info2 = await _hand_written_object(s, "uneven", pieces, interleave=None)
            layout2 = await s.store.layout(info2)
            assert list(layout2.offsets) == [0, 1000, 1010, 6010, 7010, 7017]
            assert await read_all(s.store, info2) == b"".join(pieces)
            await s.store.delete_bucket(bucket_name)

    await run(body)


async def test_batch_longer_than_the_server_cap(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    """The server ends a batch direct get at 64 MiB (measured); read_chunks continues it."""
    chunk = 1000 * 1024  # under the 1 MiB max_payload with headers
    data = os.urandom(67 * chunk)

    async def body() -> None:
        async with session(nats_server.url, bucket_name) as s:
            await s.store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await s.store.put(bucket_name, "big", data, chunk_size=chunk)
            s.store.reader._layouts.clear()  # the layout must come from the server, not the put
            layout = await s.store.layout(info)
            assert layout.chunks == 67 and isinstance(layout.seqs, range)
            got = await s.store.read_chunks(layout, 0, 67)
            assert len(got) == 67 and b"".join(got) == data
            await s.store.delete_bucket(bucket_name)

    await run(body)


async def test_missing_chunk_is_corrupt_not_a_hang(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    data = os.urandom(5 * 1024)

    async def body() -> None:
        async with session(nats_server.url, bucket_name, HANG_TIMEOUT) as s:
            await s.store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await s.store.put(bucket_name, "holey", data, chunk_size=1024)
            cached = await s.store.layout(info)
            jsm = s.nc.jetstream()
            await jsm.delete_msg(s.stream, cached.seqs[2])  # behind the store's back
            started = time.monotonic()
            with pytest.raises(errors.Corrupt):
                await s.store.read_chunks(cached, 0, 5)
            with pytest.raises(errors.Corrupt):
                await read_all(s.store, info)
            s.store.reader._layouts.clear()
            with pytest.raises(errors.Corrupt):
                await read_all(s.store, info)
            # Every chunk gone: the layout itself is Corrupt.
            await jsm.purge_stream(s.stream, subject=f"$O.{bucket_name}.C.{info.nuid}")
            s.store.reader._layouts.clear()
            with pytest.raises(errors.Corrupt):
                await s.store.layout(info)
            assert_no_timeout_waited(started)
            await s.store.delete_bucket(bucket_name)

    await run(body)


# -- server limits and failures ------------------------------------------------------------


async def test_sealed_and_full_buckets(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    async def body() -> None:
        async with session(nats_server.url, bucket_name) as s:
            await s.store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            await s.store.put(bucket_name, "kept", b"abc")
            await s.store.seal_bucket(bucket_name)
            si = await s.js.stream_info(s.stream)
            assert si.config.sealed is True
            for attempt in (
                s.store.put(bucket_name, "new", b"x" * 10),
                s.store.delete(bucket_name, "kept"),
                s.store.rename(bucket_name, "kept", "other"),
            ):
                with pytest.raises(errors.ReadOnly):
                    await attempt
            assert await read_all(s.store, await s.store.info(bucket_name, "kept")) == b"abc"
            await s.store.delete_bucket(bucket_name)

            small = bucket_name + "-s"
            await s.store.create_bucket(BucketConfig(small, storage="memory", max_bytes=200_000))
            with pytest.raises(errors.NoSpace) as exc:
                await s.store.put(small, "big", os.urandom(500_000))
            assert exc.value.errno == errno.ENOSPC
            # The chunks that did fit were purged: nothing is left behind.
            assert (await s.store.bucket_status(small)).size == 0
            await s.store.delete_bucket(small)

    await run(body)


async def test_server_stopped_mid_read(
    run: Run[None], private_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through nats-py's connection (the lean reader's stop is tests/store/test_nats_bulk's)."""
    # Little read ahead, so most of the object is still on the server when it stops.
    monkeypatch.setattr(nats_reads, "AHEAD_BYTES", 1 << 20)
    data = os.urandom(16 * 1024 * 1024)
    timeout = 1.0

    async def body() -> None:
        store = await connect([private_server.url], timeout=timeout)
        store.reader._bulk_auth = None  # reads take the nats-py path, as with TLS or creds
        try:
            await store.create_bucket(BucketConfig("mid", storage="memory"))
            info = await store.put("mid", "obj", data)
            stream = store.read_stream(info, window=2)
            first = await stream.__anext__()
            assert first[0] == data[: len(first[0])]
            assert store.reader._bulk is None  # no lean connection was opened
            await asyncio.get_running_loop().run_in_executor(None, private_server.stop)
            started = time.monotonic()
            with pytest.raises(errors.Unavailable):  # Timeout is a subclass
                async for _ in stream:
                    pass
            assert_within(started, timeout, waits=1)  # the batch in flight
            started = time.monotonic()
            with pytest.raises(errors.Unavailable):
                await store.info("mid", "obj")
            assert_within(started, timeout, waits=1)
        finally:
            await store.close()

    await run(body)


# -- watch ---------------------------------------------------------------------------------


async def _next(events: AsyncIterator[WatchEvent], timeout: float = WAIT) -> WatchEvent:
    return await asyncio.wait_for(events.__anext__(), timeout)


async def test_watch_infers_go_style_rename(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    async def body() -> None:
        async with session(nats_server.url, bucket_name) as s:
            b = bucket_name
            await s.store.create_bucket(BucketConfig(b, storage="memory"))
            old = await s.store.put(b, "old", b"data")
            events = s.store.watch(b)
            try:
                e = await _next(events)
                assert e.kind == "put" and e.info is not None and e.info.name == "old"
                assert (await _next(events)).kind == "snapshot_end"
                # nats.go's rename: the meta under the new name, then purge the old subject.
                moved = dataclasses.replace(old, name="new")
                await s.js.publish(
                    f"$O.{b}.M.{encode_name('new')}",
                    encode_info(moved),
                    headers={"Nats-Rollup": "sub"},
                )
                await s.nc.jetstream().purge_stream(
                    s.stream, subject=f"$O.{b}.M.{encode_name('old')}"
                )
                gone = await _next(events)
                assert gone.kind == "delete" and gone.info is not None
                assert gone.info.name == "old" and gone.info.deleted
                came = await _next(events)
                assert came.kind == "put" and came.info is not None and came.info.name == "new"
                # objfs's own rename: put(new2) then the tombstone of "new"; one delete only.
                await s.store.rename(b, "new", "new2")
                kinds = [(await _next(events)), (await _next(events))]
                assert [(e.kind, e.info.name if e.info else None) for e in kinds] == [
                    ("delete", "new"),
                    ("put", "new2"),
                ]
                # The tombstone does not repeat the delete: the next event is a later put.
                await s.store.put(b, "marker", b"")
                after = await _next(events)
                assert after.kind == "put" and after.info is not None
                assert after.info.name == "marker"
            finally:
                await events.aclose()
            assert sorted(i.name for i in await s.store.list(b)) == ["marker", "new2"]
            await s.store.delete_bucket(b)

    await run(body)


async def test_an_idle_watch_keeps_its_consumer(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats are signs of life: an idle watch must not take them for silence and read
    the whole bucket again (it did every three heartbeats). The consumer the server holds
    for the watch stays the same one, and delivers nothing after the snapshot."""
    heartbeat = 1.0
    monkeypatch.setattr(nats_watch, "WATCH_HEARTBEAT", heartbeat)
    controls = 0
    control = nats_js.OrderedConsumer._control

    async def counted(self: nats_js.OrderedConsumer, msg: Any, status: str) -> None:
        nonlocal controls
        controls += 1
        await control(self, msg, status)

    monkeypatch.setattr(nats_js.OrderedConsumer, "_control", counted)

    async def body() -> None:
        async with session(nats_server.url, bucket_name) as s:
            b = bucket_name
            await s.store.create_bucket(BucketConfig(b, storage="memory"))
            for name in ("a", "b", "c"):
                await s.store.put(b, name, name.encode())
            events = s.store.watch(b)

            async def consumers() -> list[dict[str, Any]]:
                resp = await s.nc.request(f"$JS.API.CONSUMER.LIST.{s.stream}", b"{}")
                return list(json.loads(resp.data)["consumers"])

            try:
                kinds = [(await _next(events)).kind for _ in range(4)]
                assert kinds == ["put", "put", "put", "snapshot_end"]
                before = await consumers()
                assert len(before) == 1
                # The watch runs while iterated: pull (nothing is to come) while waiting for
                # twice the three heartbeats after which silence means a lost consumer.
                pull = asyncio.ensure_future(_next(events))
                seen = controls
                deadline = time.monotonic() + WAIT
                while controls < seen + 6:
                    assert time.monotonic() < deadline, "no heartbeats from the server"
                    assert not pull.done(), f"an idle watch reported {pull.result()}"
                    await asyncio.sleep(heartbeat / 4)
                after = await consumers()  # before the pull ends: that closes the watch
                pull.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pull
                assert [c["name"] for c in after] == [before[0]["name"]]
                assert after[0]["delivered"]["consumer_seq"] == 3  # the snapshot, once
            finally:
                await events.aclose()
            await s.store.delete_bucket(b)

    await run(body)


async def test_watch_survives_server_restart(
    run: Run[None], private_server: EmbeddedServer
) -> None:
    async def body() -> None:
        store = await connect([private_server.url], timeout=2.0)
        events = None
        try:
            await store.create_bucket(BucketConfig("rs"))  # file storage: survives restart
            await store.put("rs", "before", b"1")
            events = store.watch("rs")
            assert (await _next(events)).kind == "put"
            assert (await _next(events)).kind == "snapshot_end"
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, private_server.stop)
            await loop.run_in_executor(None, private_server.start)  # same port and store
            deadline = time.monotonic() + 120  # the restarted server's JetStream recovers
            while True:
                try:
                    await store.put("rs", "after", b"2")
                    break
                except errors.Unavailable:
                    assert time.monotonic() < deadline, "no put after the restart"
                    await asyncio.sleep(0.25)
            e = await _next(events)
            assert e.kind == "put" and e.info is not None and e.info.name == "after"
        finally:
            if events is not None:
                await events.aclose()
            await store.close()

    await run(body)


async def test_name_limit_follows_the_server(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    """objfs's own server (max_control_line raised) takes PATH_MAX-long names; the limit for
    any other server fits nats-server's default control line."""
    from objfs.store.names import MAX_NAME_BYTES, SAFE_NAME_BYTES, safe_name_limit

    assert safe_name_limit("some-other-server") == SAFE_NAME_BYTES
    assert safe_name_limit(None) == SAFE_NAME_BYTES

    async def body() -> None:
        async with session(nats_server.url, bucket_name) as s:
            assert s.store.max_name_bytes == MAX_NAME_BYTES
            await s.store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            longest = "/".join(["n" * 255] * 16)[:MAX_NAME_BYTES]
            await s.store.put(bucket_name, longest, b"deep")
            assert (await s.store.info(bucket_name, longest)).size == 4
            names = [i.name for i in await s.store.list(bucket_name)]
            assert names == [longest]
            await s.store.delete_bucket(bucket_name)

    await run(body)
