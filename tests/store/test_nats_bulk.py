"""The lean bulk reader (objfs.store.nats_bulk) and the store's use of it.

The frame parser is checked without a server, fed the same byte stream cut at arbitrary
places (frames split inside control lines, headers and payloads; a tiny buffer that must
compact and grow). Everything else runs against real nats-servers: PING answered (a server
pinging every 100 ms drops a client that does not answer), a missing chunk (Corrupt), a server
stopped (Unavailable) or frozen (Timeout) mid-read, batches cut short and continued, push
reads (missing chunks, consumer cleanup, flow control held for a slow reader), user/password
and token authentication, and the fallback to nats-py's connection. (A single batch past the
server's 64 MiB cap is test_nats_store's; asking for that much at once can trip the server's
slow-consumer limit on a loaded machine, which is why the store never does.)
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any

import nats
import pytest
from nats_helpers import Run, bulk_in_use, read_all
from secure_nats import ServerWith
from store_bounds import HANG_TIMEOUT, assert_no_timeout_waited, assert_within

from objfs.options import ConnectOptions
from objfs.server import EmbeddedServer
from objfs.store import errors, nats_bulk, nats_reads
from objfs.store.api import BucketConfig
from objfs.store.nats_bulk import BulkConnection, Unsupported
from objfs.store.nats_store import NatsObjectStore, connect


def host_port(srv: EmbeddedServer) -> tuple[str, int]:
    return srv.host, srv.port


# -- the frame parser, no server -----------------------------------------------------------


class FakeTransport:
    """Collects what the connection writes."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _hmsg(subject: bytes, headers: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    hdr = b"NATS/1.0" + headers + b"\r\n\r\n"
    line = b"HMSG " + subject + b" 1 " + (reply + b" " if reply else b"")
    return line + b"%d %d\r\n" % (len(hdr), len(hdr) + len(payload)) + hdr + payload + b"\r\n"


def _chunk(subject: bytes, seq: int, payload: bytes) -> bytes:
    headers = (
        b"\r\nNats-Stream: OBJ_b\r\nNats-Subject: $O.b.C.n\r\nNats-Sequence: %d"
        b"\r\nNats-Time-Stamp: 2024-01-01T00:00:00Z" % seq
    )
    return _hmsg(subject, headers, payload)


@pytest.mark.parametrize("seed", range(6))
def test_parser_across_arbitrary_splits(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    # A tiny buffer: frames straddle every read, and the 5 KiB chunk makes it grow.
    monkeypatch.setattr(nats_bulk, "BUFFER", 64)
    monkeypatch.setattr(nats_bulk, "MIN_READ", 16)
    payloads = [os.urandom(n) for n in (1, 0, 5000, 300, 2, 4096)]

    async def body() -> None:
        conn = BulkConnection(timeout=1.0)
        transport = FakeTransport()
        conn._transport = transport  # type: ignore[assignment]
        conn._prefix = b"_INBOX.t."
        batch = conn.request("OBJ_b", 7, len(payloads), "$O.b.C.n")
        other = conn.request("OBJ_b", 100, 1, "$O.b.C.n")
        assert transport.written.startswith(b"PUB $JS.API.DIRECT.GET.OBJ_b _INBOX.t.0 ")
        stream = bytearray(b"+OK\r\nPING\r\n")
        for i, p in enumerate(payloads):
            stream += _chunk(b"_INBOX.t.0", 7 + i, p)
            if i == 2:
                # Another batch's messages, a message nobody asked for, a ping between.
                stream += _chunk(b"_INBOX.t.1", 100, b"other")
                stream += b"MSG _INBOX.unknown 1 3\r\nabc\r\nPING\r\n"
        stream += _hmsg(b"_INBOX.t.0", b" 204 EOB\r\nNats-Num-Pending: 0", b"")
        stream += _hmsg(b"_INBOX.t.1", b" 408 Request Timeout", b"")
        proto = nats_bulk._Protocol(conn)
        pos = 0
        while pos < len(stream):
            buf = proto.get_buffer(-1)
            n = min(len(buf), rng.randint(1, 700), len(stream) - pos)
            buf[:n] = stream[pos : pos + n]
            proto.buffer_updated(n)
            pos += n
        got = await conn.wait(batch)
        assert got.seqs == [7 + i for i in range(len(payloads))]
        assert got.datas == payloads
        assert all(type(d) is bytes for d in got.datas)
        with pytest.raises(errors.Corrupt, match="408"):
            await conn.wait(other)
        assert transport.written.count(b"PONG\r\n") == 2
        assert conn._pos == conn._end == 0  # everything consumed

    asyncio.run(body())


def test_parser_lost_connection_fails_waiters() -> None:
    async def body() -> None:
        conn = BulkConnection(timeout=HANG_TIMEOUT)
        conn._transport = FakeTransport()  # type: ignore[assignment]
        conn._prefix = b"_INBOX.t."
        batch = conn.request("OBJ_b", 1, 4, "$O.b.C.n")
        nats_bulk._Protocol(conn).connection_lost(ConnectionResetError("reset"))
        started = time.monotonic()
        with pytest.raises(errors.Unavailable):
            await conn.wait(batch)
        assert_no_timeout_waited(started)  # failed by the loss, not by the timeout
        with pytest.raises(errors.Unavailable):
            conn.request("OBJ_b", 1, 4, "$O.b.C.n")

    asyncio.run(body())


def test_push_read_fails_on_a_lost_delivery() -> None:
    """Each delivery's consumer sequence follows the last one's: a message lost on the way
    (consumer sequence 3 missing) fails the read instead of leaving a silent hole, after
    what came before it."""

    async def body() -> None:
        conn = BulkConnection(timeout=HANG_TIMEOUT)
        conn._transport = FakeTransport()  # type: ignore[assignment]
        conn._prefix = b"_INBOX.t."
        push = conn.push_read(stamped=True)
        proto = nats_bulk._Protocol(conn)
        for cseq in (1, 2, 4):
            reply = b"$JS.ACK.OBJ_b.c.1.%d.%d.1700000000000000000.%d" % (10 + cseq, cseq, 5 - cseq)
            hdr = b"NATS/1.0\r\n\r\n"
            payload = b"m%d" % cseq
            frame = b"HMSG $O.b.M.x %s %s %d %d\r\n" % (
                push.sid, reply, len(hdr), len(hdr) + len(payload)
            )
            frame += hdr + payload + b"\r\n"
            buf = proto.get_buffer(-1)
            buf[: len(frame)] = frame
            proto.buffer_updated(len(frame))
        seqs, _, _, datas, ended = await push.take_stamped(HANG_TIMEOUT)
        assert (seqs, datas, ended) == ([11, 12, 14], [b"m1", b"m2", b"m4"], False)
        with pytest.raises(errors.Unavailable, match="delivery 3 lost"):
            await push.take_stamped(HANG_TIMEOUT)

    asyncio.run(body())


def test_hash_chain_hashes_in_order_whatever_arrives_first() -> None:
    """Chunks hashed on arrival only when next in order; the reader's catch_up does the rest."""
    import hashlib

    chunks = [os.urandom(100 + i) for i in range(10)]
    chain = nats_bulk.HashChain(hashlib.sha256())

    def arrive(i: int) -> None:  # what the receive path does
        if chain.next == i:
            chain.sha.update(chunks[i])
            chain.next += 1

    # Batch [0..4) cut after 2, batch [4..8) arrives, then the continuation [2..4), then [8..10).
    for i in (0, 1, 4, 5, 6, 7, 2, 3, 8, 9):
        arrive(i)
    assert chain.next == 4  # 4.. arrived before 2 and 3: left for the reader
    chain.catch_up(0, chunks[0:4])
    chain.catch_up(4, chunks[4:8])
    chain.catch_up(8, chunks[8:10])
    assert chain.sha.digest() == hashlib.sha256(b"".join(chunks)).digest()


# -- against a real server -----------------------------------------------------------------


async def test_store_reads_through_the_bulk_reader(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)

    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await store.put(bucket_name, "obj", data, chunk_size=64 * 1024)
            assert await read_all(store, info, window=8) == data
            assert bulk_in_use(store)
            layout = await store.layout(info)
            got = await store.read_chunks(layout, 3, 5)
            assert b"".join(got) == data[3 * 65536 : 8 * 65536]
            assert await store.read_chunks(layout, layout.chunks - 1, 10) == [data[-17:]]
            await store.delete_bucket(bucket_name)
        finally:
            await store.close()

    await run(body)


async def test_fallback_without_bulk_reads_the_same(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    data = os.urandom(1024 * 1024 + 5)

    async def body() -> None:
        nc = await nats.connect(nats_server.url)
        store = NatsObjectStore(nc, 5.0, lean=False)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await store.put(bucket_name, "obj", data, chunk_size=32 * 1024)
            assert await read_all(store, info) == data
            layout = await store.layout(info)
            assert b"".join(await store.read_chunks(layout, 0, 100)) == data
            assert store.reader._bulk is None and store.reader._getter is not None
            await store.delete_bucket(bucket_name)
        finally:
            await store.close()

    await run(body)


@pytest.mark.parametrize("path", ["lean", "nats-py"])
async def test_read_of_a_deleted_bucket_is_not_found_on_both_paths(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, path: str
) -> None:
    """A batch direct get on a stream that is gone is answered by status 503 (no responders):
    NotFound (ENOENT) whichever connection reads, so the errno does not depend on TLS."""
    data = os.urandom(256 * 1024)

    async def body() -> None:
        if path == "lean":
            store = await connect([nats_server.url], timeout=5.0)
        else:  # the read path of websocket connections
            store = NatsObjectStore(await nats.connect(nats_server.url), 5.0, lean=False)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await store.put(bucket_name, "obj", data, chunk_size=64 * 1024)
            layout = await store.layout(info)
            assert b"".join(await store.read_chunks(layout, 0, 4)) == data
            assert bulk_in_use(store) == (path == "lean")
            await store.delete_bucket(bucket_name)
            with pytest.raises(errors.NotFound, match="503"):
                await store.read_chunks(layout, 0, 4)
            assert bulk_in_use(store) == (path == "lean")
        finally:
            await store.close()

    await run(body)


async def test_missing_chunk_is_corrupt(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    data = os.urandom(40 * 1024)

    async def body() -> None:
        store = await connect([nats_server.url], timeout=HANG_TIMEOUT)
        nc = await nats.connect(nats_server.url)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await store.put(bucket_name, "holey", data, chunk_size=1024)
            layout = await store.layout(info)
            await nc.jetstream().delete_msg(f"OBJ_{bucket_name}", layout.seqs[17])
            started = time.monotonic()
            with pytest.raises(errors.Corrupt, match="chunk 17"):
                await store.read_chunks(layout, 10, 20)
            with pytest.raises(errors.Corrupt, match="chunk 17"):
                await read_all(store, info, window=4)
            # The last chunk gone: the server answers the batch with nothing but its end.
            await nc.jetstream().delete_msg(f"OBJ_{bucket_name}", layout.seqs[-1])
            with pytest.raises(errors.Corrupt, match="chunk 39"):
                await store.read_chunks(layout, 39, 1)
            assert_no_timeout_waited(started)
            assert bulk_in_use(store)
            await store.delete_bucket(bucket_name)
        finally:
            await nc.close()
            await store.close()

    await run(body)


async def test_batches_cut_short_are_continued(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str
) -> None:
    """Every batch cut after 3 chunks (ADR-31 max_bytes): the store asks again for the rest."""
    chunk = 10 * 1024
    data = os.urandom(50 * chunk + 99)

    async def body() -> None:
        store = await connect([nats_server.url], timeout=5.0)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await store.put(bucket_name, "obj", data, chunk_size=chunk)
            layout = await store.layout(info)
            bulk = await store.reader.bulk_conn()
            assert bulk is not None
            plain = bulk.request
            counts: list[int] = []

            def cut(stream: str, seq: int, count: int, subject: str, **kw: Any) -> nats_bulk.Batch:
                counts.append(count)
                return plain(stream, seq, count, subject, max_bytes=3 * chunk, **kw)

            bulk.request = cut  # type: ignore[method-assign]
            got = await store.read_chunks(layout, 2, 40)
            assert b"".join(got) == data[2 * chunk : 42 * chunk]
            # Two batches of 20 asked for, each cut every 3 chunks and asked again for the rest.
            assert counts[:3] == [20, 20, 17] and len(counts) == 14
            assert await read_all(store, info, window=8) == data
            await store.delete_bucket(bucket_name)
        finally:
            await store.close()

    await run(body)


@pytest.mark.parametrize("how", ["push", "batch"])
async def test_server_stopped_mid_read_is_unavailable(
    run: Run[None], private_server: EmbeddedServer, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nats_reads, "PUSH_MIN_BYTES", 1 if how == "push" else 1 << 40)
    # Little read ahead, so most of the object is still on the server when it stops (with
    # the default 16 MiB a loaded machine could have it all before the stop).
    monkeypatch.setattr(nats_reads, "AHEAD_BYTES", 1 << 20)
    data = os.urandom(16 * 1024 * 1024)
    timeout = 1.0

    async def body() -> None:
        store = await connect([private_server.url], timeout=timeout)
        try:
            await store.create_bucket(BucketConfig("mid", storage="memory"))
            info = await store.put("mid", "obj", data)
            stream = store.read_stream(info, window=2)
            first = await stream.__anext__()
            assert first[0] == data[: len(first[0])]
            assert bulk_in_use(store)
            await asyncio.get_running_loop().run_in_executor(None, private_server.stop)
            started = time.monotonic()
            with pytest.raises(errors.Unavailable):
                async for _ in stream:
                    pass
            assert_within(started, timeout, waits=1)  # the take or batch in flight
            # The next read does not hang on the lean connection either.
            started = time.monotonic()
            with pytest.raises(errors.Unavailable):
                await store.read_chunks(await store.layout(info), 0, 4)
            assert_within(started, timeout, waits=2)  # the layout's get, then the batch
        finally:
            await store.close()

    await run(body)


async def test_server_frozen_mid_read_times_out(
    run: Run[None], private_server: EmbeddedServer
) -> None:
    data = os.urandom(8 * 1024 * 1024)
    timeout = 1.0

    async def body() -> None:
        store = await connect([private_server.url], timeout=timeout)
        assert private_server.proc is not None
        pid = private_server.proc.pid
        try:
            await store.create_bucket(BucketConfig("frozen", storage="memory"))
            info = await store.put("frozen", "obj", data)
            layout = await store.layout(info)
            await store.read_chunks(layout, 0, 1)  # opens the lean connection
            assert bulk_in_use(store)
            frozen_conn = store.reader._bulk
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(errors.Timeout):
                    await store.read_chunks(layout, 0, layout.chunks)
                assert_within(started, timeout, waits=1)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await read_all(store, info) == data
            # The timed-out connection was dropped; the read went on a fresh one.
            assert bulk_in_use(store) and store.reader._bulk is not frozen_conn
        finally:
            await store.close()

    await run(body)


async def test_server_frozen_mid_push_read_times_out(
    run: Run[None], private_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nats_reads, "PUSH_MIN_BYTES", 1)
    monkeypatch.setattr(nats_reads, "AHEAD_BYTES", 1 << 20)  # so the server must wait for us
    data = os.urandom(16 * 1024 * 1024)
    timeout = 1.0

    async def body() -> None:
        store = await connect([private_server.url], timeout=timeout)
        assert private_server.proc is not None
        pid = private_server.proc.pid
        try:
            await store.create_bucket(BucketConfig("frozen", storage="memory"))
            info = await store.put("frozen", "obj", data)
            stream = store.read_stream(info)
            await stream.__anext__()
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(errors.Timeout):
                    async for _ in stream:
                        await asyncio.sleep(0)
                assert_within(started, timeout, waits=2)  # the take, then the consumer delete
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await read_all(store, info) == data
        finally:
            await store.close()

    await run(body)


async def test_push_read(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large objects come from a push consumer: data, missing chunks, consumer cleaned up."""
    monkeypatch.setattr(nats_reads, "PUSH_MIN_BYTES", 1)
    chunk = 16 * 1024
    data = os.urandom(200 * chunk + 1)

    async def body() -> None:
        store = await connect([nats_server.url], timeout=HANG_TIMEOUT)
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        stream = f"OBJ_{bucket_name}"
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await store.put(bucket_name, "obj", data, chunk_size=chunk)
            bulk = await store.reader.bulk_conn()
            assert bulk is not None
            pushes: list[nats_bulk.PushRead] = []
            plain = bulk.push_read

            def spy(**kw: Any) -> nats_bulk.PushRead:
                pushes.append(plain(**kw))
                return pushes[-1]

            bulk.push_read = spy  # type: ignore[method-assign]
            assert await read_all(store, info) == data
            assert len(pushes) == 1 and not bulk._pushes  # used, then unsubscribed
            # The consumer is deleted after the read.
            deadline = time.monotonic() + 60
            while (await js.stream_info(stream)).state.consumer_count != 0:
                assert time.monotonic() < deadline, "the read's consumer was not deleted"
                await asyncio.sleep(0.05)

            layout = await store.layout(info)
            started = time.monotonic()
            await js.delete_msg(stream, layout.seqs[150])
            # Short of chunks: known when the consumer is created, before any data.
            with pytest.raises(errors.Corrupt, match="200 of 201 chunks"):
                await read_all(store, info)
            # A stray message on the chunk subject makes the count right again: the gap is
            # found by sequence.
            await js.publish(f"$O.{bucket_name}.C.{info.nuid}", b"stray")  # stored when acked
            with pytest.raises(errors.Corrupt, match="chunk 150 missing"):
                await read_all(store, info)
            assert_no_timeout_waited(started)
            await store.delete_bucket(bucket_name)
        finally:
            await nc.close()
            await store.close()

    await run(body)


SERVER_FC_WINDOW = 32 << 20
"""nats-server's most bytes a flow-controlled push consumer sends without an answered
flow-control request (``JsFlowControlMaxPending`` in server/consumer.go, 32 MiB since 2.10;
1 MiB before). The window starts at 1/16 of it and doubles with every answer."""


async def test_push_read_holds_flow_control_for_a_slow_reader(
    run: Run[None], nats_server: EmbeddedServer, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that stops taking: its flow-control answer waits, and the server stops.

    The reader answers a flow-control request at once while at most ``limit`` (AHEAD_BYTES)
    bytes wait for it, and holds the answer otherwise. The server asks for credit when half
    its window is unanswered and stops sending once a whole window is, so what waits in the
    reader is at most ``limit`` + one window + a chunk either side of the request, however
    slow the machine: the bound below. That the server really waited is seen, not assumed:
    an idle server sends a heartbeat, and one carrying ``Nats-Consumer-Stalled`` names the
    flow-control request it waits for; it must be one the reader holds, with the object far
    from all sent.
    """
    limit = 256 * 1024
    monkeypatch.setattr(nats_reads, "PUSH_MIN_BYTES", 1)
    monkeypatch.setattr(nats_reads, "AHEAD_BYTES", limit)
    chunk = 128 * 1024
    bound = limit + SERVER_FC_WINDOW + 2 * chunk
    data = os.urandom(bound + 48 * 1024 * 1024)
    timeout = 2.0  # the idle heartbeat follows it (max(1 s, timeout)): a short wait below

    async def body() -> None:
        store = await connect([nats_server.url], timeout=timeout)
        try:
            await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
            info = await store.put(bucket_name, "obj", data, chunk_size=chunk)
            bulk = await store.reader.bulk_conn()
            assert bulk is not None
            stalled: list[int] = []  # bytes waiting in the reader when the server said so
            plain_reply = bulk._reply

            def spy_reply(subject: bytes) -> None:
                for push in bulk._pushes.values():
                    if subject in push.held:  # a stall heartbeat naming a held request
                        stalled.append(push.buffered)
                plain_reply(subject)

            bulk._reply = spy_reply  # type: ignore[method-assign]
            out = bytearray()
            stream = store.read_stream(info)
            for c in await stream.__anext__():
                out += c
            # Stop taking until the server says it is waiting for us.
            deadline = time.monotonic() + 120
            while not stalled:
                assert time.monotonic() < deadline, "no stall heartbeat from the server"
                await asyncio.sleep(0.05)
            assert 0 < stalled[0] <= bound, (stalled[0], bound)
            assert len(out) + stalled[0] < len(data)  # it stopped short of the object
            async for batch in stream:
                for c in batch:
                    out += c
            assert out == data
            await store.delete_bucket(bucket_name)
        finally:
            await store.close()

    await run(body)


async def test_ping_is_answered(
    run: Run[None], server_with: ServerWith
) -> None:
    """A server pinging every 100 ms closes a client that leaves 10 pings unanswered.

    Twice that many answers, with the connection still open, show the client answers them
    (10 pings of slack, so that a loaded machine's pause does not cut it; a client that does
    not answer is closed after about a second and gives no answers at all).
    """
    srv = server_with('ping_interval: "100ms"\nping_max: 10')

    async def body() -> None:
        conn = await BulkConnection.open(*host_port(srv), timeout=2.0)
        try:
            transport = conn._transport
            assert transport is not None
            pongs = 0
            plain_write = transport.write

            def count(data: bytes | bytearray | memoryview) -> None:
                nonlocal pongs
                pongs += bytes(data).count(b"PONG\r\n")
                plain_write(data)

            transport.write = count  # type: ignore[method-assign]
            deadline = time.monotonic() + 120
            while pongs < 20:
                assert conn.is_open, f"closed by the server after {pongs} answers"
                assert time.monotonic() < deadline, f"only {pongs} pings answered"
                await asyncio.sleep(0.05)
            assert conn.is_open
            # Still usable: a request answered (no such stream: 503, no responders).
            with pytest.raises(errors.NotFound):
                await conn.wait(conn.request("OBJ_none", 1, 1, "$O.none.C.x"))
            assert conn.is_open
        finally:
            conn.close()

    await run(body)


async def test_user_password_auth(
    run: Run[None], server_with: ServerWith
) -> None:
    srv = server_with('authorization { user: "reader", password: "s3cr3t-pass" }')
    data = os.urandom(600 * 1024)

    async def body() -> None:
        with pytest.raises(Unsupported):
            await BulkConnection.open(
                *host_port(srv), auth=ConnectOptions(user="reader", password="wrong")
            )
        with pytest.raises(Unsupported):
            await BulkConnection.open(*host_port(srv))
        store = await connect([srv.url], user="reader", password="s3cr3t-pass")
        try:
            await store.create_bucket(BucketConfig("auth", storage="memory"))
            info = await store.put("auth", "obj", data)
            assert await read_all(store, info) == data
            assert bulk_in_use(store)
        finally:
            await store.close()
        # Credentials in the server URL, as nats-py accepts them.
        store = await connect([f"nats://reader:s3cr3t-pass@{srv.host}:{srv.port}"])
        try:
            info = await store.info("auth", "obj")
            assert await read_all(store, info) == data
            assert bulk_in_use(store)
        finally:
            await store.close()

    await run(body)


async def test_token_auth(run: Run[None], server_with: ServerWith) -> None:
    srv = server_with('authorization { token: "t0ken" }')
    data = os.urandom(300 * 1024)

    async def body() -> None:
        with pytest.raises(Unsupported):
            await BulkConnection.open(*host_port(srv), auth=ConnectOptions(token="nope"))
        store = await connect([srv.url], token="t0ken")
        try:
            await store.create_bucket(BucketConfig("tok", storage="memory"))
            info = await store.put("tok", "obj", data)
            assert await read_all(store, info) == data
            assert bulk_in_use(store)
        finally:
            await store.close()

    await run(body)


async def test_refused_credentials_fall_back_to_nats_py(
    run: Run[None], server_with: ServerWith
) -> None:
    """If the lean connection is refused, reads still work, through nats-py's connection."""
    srv = server_with('authorization { user: "u", password: "p" }')
    data = os.urandom(200 * 1024)

    async def body() -> None:
        nc = await nats.connect(srv.url, user="u", password="p")
        store = NatsObjectStore(
            nc, 5.0, options=ConnectOptions(user="u", password="not the password")
        )
        try:
            await store.create_bucket(BucketConfig("fb", storage="memory"))
            info = await store.put("fb", "obj", data)
            assert await read_all(store, info) == data
            assert store.reader._bulk is None and store.reader._bulk_auth is None  # not tried again
            assert await read_all(store, info) == data
        finally:
            await store.close()

    await run(body)
