"""The NATS backend's put on a real nats-server: its round trips, and what it leaves stored.

A put looks the name up while its chunks go out, and an exclusive create (``if_revision=0``)
does not look at all unless the server refuses its meta (nats_store's module docstring).
These tests check that the shortcuts keep every guarantee: exclusive creates over
tombstones, live objects and each other, the purge of a replaced object's chunks, and a
failed or cancelled put leaving no chunks and no look-up behind. What is stored is checked
with plain nats-py (the stream's subjects and messages), not only through objfs.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.client import JetStreamContext
from nats_helpers import Run, read_all

from objfs.server import EmbeddedServer
from objfs.store import errors, nats_store
from objfs.store.api import BucketConfig, ObjectInfo
from objfs.store.names import encode_name
from objfs.store.nats_store import NatsObjectStore, connect

EXPECTED = "Nats-Expected-Last-Subject-Sequence"


class Stored:
    """The bucket's stream as plain nats-py sees it."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self.js = js
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"

    async def chunk_subjects(self) -> dict[str, int]:
        """Messages per chunk subject (a purged subject is absent)."""
        si = await self.js.stream_info(self.stream, subjects_filter=f"$O.{self.bucket}.C.>")
        return dict(si.state.subjects or {})

    async def messages(self) -> int:
        return (await self.js.stream_info(self.stream)).state.messages

    async def meta(self, name: str) -> tuple[int, dict[str, Any]]:
        """The name's last meta message: its sequence and JSON."""
        m = await self.js.get_last_msg(self.stream, f"$O.{self.bucket}.M.{encode_name(name)}")
        assert m.seq is not None
        return m.seq, json.loads(m.data or b"{}")


class Requests:
    """Counts the store connection's requests by kind, and the expected sequences of its
    meta publishes (the store's put uses ``nc.request`` for lookups and metas)."""

    def __init__(self, store: NatsObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lookups = 0
        self.metas: list[str | None] = []
        real = store.nc.request

        async def request(subject: str, *args: Any, **kwargs: Any) -> Any:
            if ".DIRECT.GET." in subject or ".STREAM.MSG.GET." in subject:
                self.lookups += 1
            elif ".M." in subject:
                self.metas.append((kwargs.get("headers") or {}).get(EXPECTED))
            return await real(subject, *args, **kwargs)

        monkeypatch.setattr(store.nc, "request", request)


async def _open(url: str, bucket: str) -> tuple[NatsObjectStore, Client, Stored]:
    store = await connect([url], timeout=5.0)
    await store.create_bucket(BucketConfig(bucket, storage="memory"))
    nc = await nats.connect(url)
    return store, nc, Stored(nc.jetstream(), bucket)


async def test_exclusive_create_of_a_free_name_is_one_request(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The O_EXCL claim (an empty object) is one meta publish, expecting 0, and no lookup."""
    b = bucket_name

    async def body() -> None:
        store, nc, stored = await _open(nats_server.url, b)
        try:
            await store.put(b, "warm", b"")  # the chunk size is learnt: one request less
            counted = Requests(store, monkeypatch)
            info = await store.put(b, "claim", b"", if_revision=0)
            assert (counted.lookups, counted.metas) == (0, ["0"])
            seq, doc = await stored.meta("claim")
            assert (seq, doc["nuid"], doc.get("deleted")) == (info.revision, info.nuid, None)
        finally:
            await store.close()
            await nc.close()

    await run(body)


@pytest.mark.parametrize("size", [0, 300_000])
async def test_exclusive_create_over_a_tombstone(
    run: Run[None],
    nats_server: EmbeddedServer,
    bucket_name: str,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    """A deleted name is free: refused expecting 0, the create looks, finds the tombstone
    and wins expecting the tombstone's sequence."""
    b = bucket_name
    data = os.urandom(size)

    async def body() -> None:
        store, nc, stored = await _open(nats_server.url, b)
        try:
            old = await store.put(b, "t", os.urandom(5000), chunk_size=1024)
            tomb = await store.delete(b, "t")
            counted = Requests(store, monkeypatch)
            info = await store.put(b, "t", data, chunk_size=100_000, if_revision=0)
            assert counted.metas == ["0", str(tomb.revision)]
            assert counted.lookups == 1
            seq, doc = await stored.meta("t")
            assert (seq, doc["nuid"], doc.get("deleted")) == (info.revision, info.nuid, None)
            assert await read_all(store, await store.info(b, "t")) == data
            chunks = await stored.chunk_subjects()
            assert f"$O.{b}.C.{old.nuid}" not in chunks  # purged by the delete
            assert chunks == ({f"$O.{b}.C.{info.nuid}": 3} if size else {})
        finally:
            await store.close()
            await nc.close()

    await run(body)


@pytest.mark.parametrize("size", [0, 300_000])
async def test_exclusive_create_over_a_live_object_stores_nothing(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, size: int
) -> None:
    b = bucket_name

    async def body() -> None:
        store, nc, stored = await _open(nats_server.url, b)
        try:
            live = await store.put(b, "x", b"live data")
            before = (await stored.meta("x"), await stored.chunk_subjects())
            messages = await stored.messages()
            with pytest.raises(errors.Exists) as exc:
                await store.put(b, "x", os.urandom(size), chunk_size=100_000, if_revision=0)
            assert f"revision is {live.revision}" in str(exc.value)
            assert (await stored.meta("x"), await stored.chunk_subjects()) == before
            assert await stored.messages() == messages
            assert await read_all(store, await store.info(b, "x")) == b"live data"
        finally:
            await store.close()
            await nc.close()

    await run(body)


@pytest.mark.parametrize("over", ["nothing", "tombstone"])
async def test_concurrent_exclusive_creates_one_wins(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, over: str
) -> None:
    """Two stores (connections) create one name at once: exactly one wins, the loser's
    chunks are gone."""
    b = bucket_name

    async def body() -> None:
        store, nc, stored = await _open(nats_server.url, b)
        other = await connect([nats_server.url], timeout=5.0)
        try:
            for trial in range(5):
                name = f"lock-{trial}"
                if over == "tombstone":
                    await store.put(b, name, b"old")
                    await store.delete(b, name)
                payloads = [os.urandom(3000), os.urandom(3000)]
                results = await asyncio.gather(
                    *(
                        s.put(b, name, p, chunk_size=1024, if_revision=0)
                        for s, p in zip((store, other), payloads, strict=True)
                    ),
                    return_exceptions=True,
                )
                won = [r for r in results if isinstance(r, ObjectInfo)]
                lost = [r for r in results if isinstance(r, errors.Exists)]
                assert (len(won), len(lost)) == (1, 1), results
                seq, doc = await stored.meta(name)
                assert (seq, doc["nuid"]) == (won[0].revision, won[0].nuid)
                current = await store.info(b, name)
                assert await read_all(store, current) == payloads[results.index(won[0])]
                chunks = await stored.chunk_subjects()
                assert sorted(k for k in chunks if k.endswith(won[0].nuid)) == [
                    f"$O.{b}.C.{won[0].nuid}"
                ]
            # Only the winners' chunks are stored: one subject per name.
            assert len(await stored.chunk_subjects()) == 5
        finally:
            await other.close()
            await store.close()
            await nc.close()

    await run(body)


async def test_plain_put_over_an_object_purges_its_chunks(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    b = bucket_name

    async def body() -> None:
        store, nc, stored = await _open(nats_server.url, b)
        try:
            first = await store.put(b, "o", os.urandom(10_000), chunk_size=1024)
            assert (await stored.chunk_subjects()) == {f"$O.{b}.C.{first.nuid}": 10}
            data = os.urandom(4096)
            second = await store.put(b, "o", data)
            assert (await stored.chunk_subjects()) == {f"$O.{b}.C.{second.nuid}": 1}
            seq, doc = await stored.meta("o")
            assert (seq, doc["nuid"]) == (second.revision, second.nuid)
            assert await read_all(store, await store.info(b, "o")) == data
            # Conditional on the revision (the look-up checks it while the chunks go out).
            third = await store.put(b, "o", b"3", if_revision=second.revision)
            assert (await stored.chunk_subjects()) == {f"$O.{b}.C.{third.nuid}": 1}
        finally:
            await store.close()
            await nc.close()

    await run(body)


@pytest.mark.parametrize("when", ["at once", "after the chunks"])
async def test_failed_lookup_fails_the_put_and_leaves_no_chunks(
    run: Run[None],
    nats_server: EmbeddedServer,
    bucket_name: str,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    """The look-up fails (at once: the put stops sending; or once every chunk is stored):
    the put fails with its error, and neither its chunks nor the old object's go."""
    b = bucket_name

    async def body() -> None:
        store, nc, stored = await _open(nats_server.url, b)
        try:
            old = await store.put(b, "f", b"old")
            before = (await stored.meta("f"), await stored.chunk_subjects())
            sent = 0
            real_send = nats_store._ChunkSender.send
            real_finish = nats_store._ChunkSender.finish
            chunks_stored = asyncio.Event()

            async def send(self: Any, piece: bytes) -> None:
                nonlocal sent
                sent += 1
                await real_send(self, piece)

            async def finish(self: Any) -> list[int]:
                seqs = await real_finish(self)
                chunks_stored.set()
                return seqs

            async def lookup(bucket: str, name: str) -> Any:
                if when != "at once":
                    await chunks_stored.wait()
                raise errors.Unavailable("injected: lookup failed")

            monkeypatch.setattr(nats_store._ChunkSender, "send", send)
            monkeypatch.setattr(nats_store._ChunkSender, "finish", finish)
            monkeypatch.setattr(store, "_last_meta_msg", lookup)
            with pytest.raises(errors.Unavailable, match="injected"):
                await store.put(b, "f", os.urandom(300_000), chunk_size=1000)
            if when == "at once":
                assert sent <= nats_store.PUT_WINDOW + 1  # stopped, not all 300 sent
            else:
                assert sent == 300 and chunks_stored.is_set()
            monkeypatch.undo()
            assert (await stored.meta("f"), await stored.chunk_subjects()) == before
            assert await read_all(store, await store.info(b, "f")) == b"old"
            assert (await store.info(b, "f")).nuid == old.nuid
        finally:
            await store.close()
            await nc.close()

    await run(body)


async def test_cancelled_put_leaves_no_chunks_and_no_lookup(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put cancelled while it waits for its look-up (its chunks stored) purges them and
    cancels the look-up."""
    b = bucket_name

    async def body() -> None:
        store, nc, stored = await _open(nats_server.url, b)
        try:
            await store.put(b, "warm", b"")
            chunks_stored = asyncio.Event()
            looking = asyncio.Event()
            lookups: list[asyncio.Task[Any]] = []
            real_finish = nats_store._ChunkSender.finish

            async def finish(self: Any) -> list[int]:
                seqs = await real_finish(self)
                chunks_stored.set()
                return seqs

            async def lookup(bucket: str, name: str) -> Any:
                task = asyncio.current_task()
                assert task is not None
                lookups.append(task)
                looking.set()
                await asyncio.Event().wait()  # never answers

            monkeypatch.setattr(nats_store._ChunkSender, "finish", finish)
            monkeypatch.setattr(store, "_last_meta_msg", lookup)
            put = asyncio.ensure_future(store.put(b, "c", os.urandom(50_000), chunk_size=1000))
            await chunks_stored.wait()
            await looking.wait()
            assert len(await stored.chunk_subjects()) == 1  # 50 chunks are stored
            put.cancel()
            with pytest.raises(asyncio.CancelledError):
                await put
            assert [t.cancelled() for t in lookups] == [True]
            monkeypatch.undo()
            assert await stored.chunk_subjects() == {}
            with pytest.raises(errors.NotFound):
                await store.info(b, "c")
        finally:
            await store.close()
            await nc.close()

    await run(body)
