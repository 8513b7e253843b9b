"""Durability of the NATS backend on real servers: requests that outlive a server restart,
publishes made idempotent by their message ids, and renames whose tombstone was lost.

Outcomes are checked with nats-py directly (the stream's messages), not only through objfs.
Test bodies run on the asyncio thread through the bridge (the ``run`` fixture).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Any

import nats
import nats.errors
import pytest
from nats_helpers import Run, read_all
from server_faults import kill_and_restart

from objfs.server import EmbeddedServer
from objfs.store import errors
from objfs.store.api import BucketConfig
from objfs.store.names import encode_name
from objfs.store.nats_store import NatsObjectStore, connect


async def nats_py_bytes(url: str, bucket: str, name: str) -> bytes:
    """The object as plain nats-py reads it (not objfs): the meta's last message, then its
    chunks in stream order by non-direct gets (nats-py's ObjectStore.get stalls on big ones)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = f"OBJ_{bucket}"
        meta = await js.get_msg(stream, subject=f"$O.{bucket}.M.{encode_name(name)}", direct=False)
        doc = json.loads(meta.data or b"{}")
        assert not doc.get("deleted")
        subject = f"$O.{bucket}.C.{doc['nuid']}"
        out = bytearray()
        seq = 1
        for _ in range(int(doc.get("chunks", 0))):
            m = await js.get_msg(stream, seq=seq, subject=subject, next=True)
            assert m.seq is not None
            out += m.data or b""
            seq = m.seq + 1
        assert len(out) == int(doc["size"])
        return bytes(out)
    finally:
        await nc.close()


async def _wait_stored(store: NatsObjectStore, bucket: str, at_least: int) -> None:
    """Until the bucket holds ``at_least`` bytes (a put is under way)."""
    deadline = time.monotonic() + 120
    while (await store.bucket_status(bucket)).size < at_least:
        assert time.monotonic() < deadline, "the put never got going"
        await asyncio.sleep(0.05)


async def test_put_completes_across_a_server_restart(
    run: Run[None], private_server: EmbeddedServer
) -> None:
    """Server killed during a large put and back within the store's timeout: the put
    completes, and nats-py reads exactly the bytes written."""
    data = os.urandom(64 << 20)
    timeout = 10.0

    async def body() -> None:
        store = await connect([private_server.url], timeout=timeout)
        try:
            await store.create_bucket(BucketConfig("rp"))  # file storage: survives the kill
            loop = asyncio.get_running_loop()
            put = asyncio.ensure_future(store.put("rp", "big", data))
            await _wait_stored(store, "rp", 8 << 20)
            assert not put.done()
            await loop.run_in_executor(None, kill_and_restart, private_server, 1.0)
            info = await put
            assert info.size == len(data)
            got = await nats_py_bytes(private_server.url, "rp", "big")
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            assert await read_all(store, await store.info("rp", "big")) == data
        finally:
            await store.close()

    await run(body)


async def test_read_completes_across_a_server_restart(
    run: Run[None], private_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from objfs.store import nats_reads

    # Little read ahead, so most of the object is still on the server when it goes.
    monkeypatch.setattr(nats_reads, "AHEAD_BYTES", 1 << 20)
    data = os.urandom(16 << 20)

    async def body() -> None:
        store = await connect([private_server.url], timeout=10.0)
        try:
            await store.create_bucket(BucketConfig("rr"))
            info = await store.put("rr", "obj", data)
            store.reader.forget("rr", info.nuid)  # the layout is read too, after the restart
            stream = store.read_stream(info, window=2)
            got = bytearray(b"".join(await stream.__anext__()))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, kill_and_restart, private_server, 1.0)
            async for batch in stream:
                got += b"".join(batch)
            assert bytes(got) == data
            again = await store.info("rr", "obj")  # a metadata read after the restart
            assert again.nuid == info.nuid
        finally:
            await store.close()

    await run(body)


async def test_retried_meta_publish_is_deduplicated(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A meta publish repeated under its message id (a retry after a lost ack) is answered
    with the original sequence, and the stream holds it once, even with a rollup header."""

    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            subject = f"$O.{bucket_name}.M.eA"
            rollup = {"Nats-Rollup": "sub"}
            first = await store.js.publish(subject, b"{}", rollup, msg_id="same-id")
            again = await store.js.publish(subject, b"{}", rollup, msg_id="same-id")
            assert again == first
            si = await store.js.api(f"STREAM.INFO.OBJ_{bucket_name}")
            assert si["state"]["messages"] == 1
            # A conditional (exclusive) publish: the server checks the expected sequence
            # before duplicates, so its repeat is refused; the store recognises its own id
            # as the subject's last message (what a retry after a lost ack needs).
            subject = f"$O.{bucket_name}.M.eB"
            excl = {"Nats-Rollup": "sub", "Nats-Expected-Last-Subject-Sequence": "0"}
            calls = 0
            real = store.nc.request

            async def request(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                msg = await real(*args, **kwargs)
                if calls == 1:  # stored, then the ack is lost
                    raise nats.errors.TimeoutError
                return msg

            monkeypatch.setattr(store.nc, "request", request)
            won = await store.js.publish(subject, b"{}", excl, msg_id="excl-id")
            monkeypatch.undo()
            assert calls >= 2
            si = await store.js.api(f"STREAM.INFO.OBJ_{bucket_name}")
            assert si["state"]["messages"] == 2 and si["state"]["last_seq"] == won
            with pytest.raises(errors.Exists):  # someone else's id: a real loss
                await store.js.publish(subject, b"{}", excl, msg_id="other-id")
            await store.delete_bucket(bucket_name)
        finally:
            await store.close()

    await run(body)


async def test_chunk_resent_after_a_lost_ack_is_stored_once(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose ack is lost is sent again (with the window after it) under the same
    message ids: the duplicate window answers them, and the stream holds each chunk once."""
    data = os.urandom(10 * 16 * 1024)

    async def body() -> None:
        store = await connect([nats_server.url], timeout=3.0)
        real = type(store._publisher)._on_ack
        dropped: list[str] = []

        async def on_ack(self: Any, msg: Any) -> None:
            if not dropped and b'"seq":4' in msg.data.replace(b" ", b""):  # the fourth chunk
                dropped.append(msg.subject)
                return
            await real(self, msg)

        monkeypatch.setattr(type(store._publisher), "_on_ack", on_ack)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await store.put(bucket_name, "f", data, chunk_size=16 * 1024)
            assert dropped, "no ack was dropped"
            assert info.chunks == 10
            si = await store.js.api(
                f"STREAM.INFO.OBJ_{bucket_name}", {"subjects_filter": f"$O.{bucket_name}.>"}
            )
            assert si["state"]["subjects"] == {
                f"$O.{bucket_name}.C.{info.nuid}": 10,
                f"$O.{bucket_name}.M.{encode_name('f')}": 1,
            }
            # Nothing was stored twice (and then purged by a put starting over): the chunks
            # are sequences 1-10 and the meta 11.
            assert si["state"]["last_seq"] == 11
            assert await nats_py_bytes(nats_server.url, bucket_name, "f") == data
            await store.delete_bucket(bucket_name)
        finally:
            await store.close()

    await run(body)


async def test_racing_noreplace_renames_onto_one_name_one_wins(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clients rename onto the same free name (RENAME_NOREPLACE, ``replace=False``): the
    one whose look-up is stale when it publishes gets Exists; nothing is overwritten."""
    b = bucket_name
    a_data, b_data = os.urandom(50_000), os.urandom(60_000)

    async def body() -> None:
        s1 = await connect([nats_server.url], timeout=5.0)
        s2 = await connect([nats_server.url], timeout=5.0)
        try:
            await s1.create_bucket(BucketConfig(b, storage="memory"))
            await s1.put(b, "a", a_data)
            await s2.put(b, "b", b_data)
            real = s1._last_meta_msg

            async def looked_before_the_other(bucket: str, name: str) -> Any:
                if name == "target":
                    # s1 looked while the name was free; s2's rename lands before s1 publishes.
                    await s2.rename(b, "b", "target")
                    return None, {}
                return await real(bucket, name)

            monkeypatch.setattr(s1, "_last_meta_msg", looked_before_the_other)
            with pytest.raises(errors.Exists):
                await s1.rename(b, "a", "target")
            monkeypatch.undo()
            assert await nats_py_bytes(nats_server.url, b, "target") == b_data
            assert await nats_py_bytes(nats_server.url, b, "a") == a_data
            await s1.delete_bucket(b)
        finally:
            await s1.close()
            await s2.close()

    await run(body)


async def test_rename_whose_tombstone_was_lost_keeps_both_names_whole(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename's new name is stored but the old name's tombstone cannot be (the server went
    away): both names stay live for a while. Deleting either must not purge the chunks the
    other still uses: from another client (the new name), or here (the old name)."""
    b = bucket_name
    data1, data2 = os.urandom(300_000), os.urandom(200_000)

    async def body() -> None:
        s1 = await connect([nats_server.url], timeout=2.0)
        s2 = await connect([nats_server.url], timeout=2.0)
        real = s1.js.publish
        blocked = asyncio.Event()
        blocked.set()

        async def publish(
            subject: str, payload: bytes, headers: dict[str, str] | None = None, **kwargs: Any
        ) -> int:
            # A rename's tombstone: conditional on the old name's revision (a delete's is not).
            conditional = "Nats-Expected-Last-Subject-Sequence" in (headers or {})
            if blocked.is_set() and conditional and b'"deleted":true' in payload:
                raise errors.Timeout(f"injected: {subject} unreachable")
            return await real(subject, payload, headers, **kwargs)

        monkeypatch.setattr(s1.js, "publish", publish)
        try:
            await s1.create_bucket(BucketConfig(b, storage="memory"))
            one = await s1.put(b, "one", data1)
            two = await s1.put(b, "two", data2)
            moved1 = await s1.rename(b, "one", "one-new")
            moved2 = await s1.rename(b, "two", "two-new")
            assert (moved1.nuid, moved2.nuid) == (one.nuid, two.nuid)
            for name in ("one", "one-new", "two", "two-new"):
                assert not (await s2.info(b, name)).deleted  # both names live
            # Another client deletes the new name: the old one keeps its chunks.
            await s2.delete(b, "one-new")
            assert await read_all(s2, await s2.info(b, "one")) == data1
            # This client deletes the old name while its tombstone is pending: the new one
            # keeps its chunks.
            await s1.delete(b, "two")
            assert await read_all(s2, await s2.info(b, "two-new")) == data2
            blocked.clear()  # the server answers again: the pending tombstone lands
            deadline = time.monotonic() + 60
            while s1._finishing:
                assert time.monotonic() < deadline, "the rename's tombstone never landed"
                await asyncio.sleep(0.05)
            assert (await s2.info(b, "one", deleted=True)).deleted
            assert await nats_py_bytes(nats_server.url, b, "two-new") == data2
            await s1.delete_bucket(b)
        finally:
            await s1.close()
            await s2.close()

    await run(body)


async def test_rename_whose_answer_was_lost_is_done_and_keeps_the_chunks(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename's new name is stored but its answer is lost: the rename is done (read back),
    and a later delete of the old name does not purge what the new name uses. When even the
    read-back fails, the rename fails and the old name's chunks are kept as shared."""
    b = bucket_name
    data = os.urandom(300_000)

    async def body() -> None:
        s1 = await connect([nats_server.url], timeout=2.0)
        s2 = await connect([nats_server.url], timeout=2.0)
        real_publish, real_last = s1.js.publish, s1._last_meta
        lose_answer = blind = False

        async def publish(
            subject: str, payload: bytes, headers: dict[str, str] | None = None, **kwargs: Any
        ) -> int:
            seq = await real_publish(subject, payload, headers, **kwargs)
            if lose_answer and "Objfs-Renamed-From" in (headers or {}):
                raise errors.Timeout(f"injected: the answer for {subject} was lost")
            return seq

        async def last_meta(bucket: str, name: str) -> Any:
            if blind:
                raise errors.Timeout(f"injected: {bucket}/{name} unreadable")
            return await real_last(bucket, name)

        monkeypatch.setattr(s1.js, "publish", publish)
        monkeypatch.setattr(s1, "_last_meta", last_meta)
        try:
            await s1.create_bucket(BucketConfig(b, storage="memory"))
            one = await s1.put(b, "one", data)
            lose_answer = True
            moved = await s1.rename(b, "one", "one-new")
            assert moved.nuid == one.nuid and moved.name == "one-new"
            assert (await s2.info(b, "one", deleted=True)).deleted
            assert await nats_py_bytes(nats_server.url, b, "one-new") == data

            two = await s1.put(b, "two", data)
            real_meta = s1._publish_meta

            async def publish_meta(info: Any, *args: Any, **kwargs: Any) -> Any:
                nonlocal blind
                try:
                    return await real_meta(info, *args, **kwargs)
                finally:
                    if info.name == "two-new":
                        blind = True  # the answer lost, and the read-back fails too

            monkeypatch.setattr(s1, "_publish_meta", publish_meta)
            with pytest.raises(errors.Timeout):
                await s1.rename(b, "two", "two-new")
            blind = False
            assert (await s2.info(b, "two-new")).nuid == two.nuid  # it had landed
            await s1.delete(b, "two")  # what the mount still shows
            assert await read_all(s2, await s2.info(b, "two-new")) == data
            await s1.delete_bucket(b)
        finally:
            await s1.close()
            await s2.close()

    await run(body)


async def test_put_cancelled_while_its_meta_is_in_flight_stores_whole(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put cancelled after sending its meta waits for the meta's outcome: the cancel is
    raised once the object is whole (new chunks kept, the old version's purged), never a
    name pointing at purged chunks."""
    b = bucket_name
    data = os.urandom(300_000)

    async def body() -> None:
        s1 = await connect([nats_server.url], timeout=5.0)
        s2 = await connect([nats_server.url], timeout=5.0)
        real = s1.js.publish
        in_meta, release = asyncio.Event(), asyncio.Event()

        async def publish(
            subject: str, payload: bytes, headers: dict[str, str] | None = None, **kwargs: Any
        ) -> int:
            if ".M." in subject:
                in_meta.set()
                await release.wait()  # a slow answer, or retries after a lost request
            return await real(subject, payload, headers, **kwargs)

        try:
            await s1.create_bucket(BucketConfig(b, storage="memory"))
            old = await s1.put(b, "f", b"old")
            monkeypatch.setattr(s1.js, "publish", publish)
            put = asyncio.ensure_future(s1.put(b, "f", data))
            await in_meta.wait()
            put.cancel()
            await asyncio.sleep(0)  # the cancel is delivered while the meta is held
            assert not put.done()  # waiting for the meta's outcome
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await put
            info = await s2.info(b, "f")
            assert info.nuid != old.nuid
            assert await nats_py_bytes(nats_server.url, b, "f") == data
            si = await s2.js.api(f"STREAM.INFO.OBJ_{b}", {"subjects_filter": f"$O.{b}.C.>"})
            assert set(si["state"].get("subjects", {})) == {f"$O.{b}.C.{info.nuid}"}
            await s2.delete_bucket(b)
        finally:
            await s1.close()
            await s2.close()

    await run(body)


async def test_delete_bucket_whose_answer_was_lost(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream is deleted, its answer lost: the retry finds nothing to delete, and the
    delete still succeeds (an rmdir of the bucket must not say ENOENT for it)."""

    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            real = store.nc.request
            lost = False

            async def request(subject: str, *args: Any, **kwargs: Any) -> Any:
                nonlocal lost
                msg = await real(subject, *args, **kwargs)
                if "STREAM.DELETE" in subject and not lost:
                    lost = True
                    raise nats.errors.TimeoutError
                return msg

            monkeypatch.setattr(store.nc, "request", request)
            await store.delete_bucket(bucket_name)
            monkeypatch.undo()
            assert lost
            with pytest.raises(errors.NotFound):
                await store.bucket_status(bucket_name)
        finally:
            await store.close()

    await run(body)
