"""The raw read ceiling: an object's chunk subject drained with nats-py's primitives only
(pipelined batch direct gets, a push consumer answering flow control at once), and with objfs's
lean reader counting bytes (what the lean reader itself costs)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from benchmarks.common import CHUNK, MiB
from objfs.store.nats_protocol import (
    API,
    DESCRIPTION,
    FLOW_CONTROL,
    SEQUENCE,
    STATUS,
    batch_end_error,
    consumer_create,
    consumer_delete,
    push_consumer_config,
)
from objfs.store.nats_subjects import bucket_stream, chunk_subject

# --------------------------------------------------------------------------------------------
# raw NATS reads


async def raw_batch_direct_get(
    nc: NATS, bucket: str, nuid: str, chunks: int, *, batch: int = 64, window: int = 4
) -> int:
    """Read every chunk of ``$O.<bucket>.C.<nuid>`` with pipelined batch direct gets.

    The first batch starts at sequence 0 and tells the first chunk's sequence; chunks of one
    put are contiguous (verified below), so the other batches are asked for at once, up to
    ``window`` in flight, each ending with a ``204 EOB`` status. Returns the bytes received.
    """
    # Measured: 256 x 2 chunks of 128 KiB (64 MiB) in flight made the server cut the
    # connection (its per-client pending limit, max_pending, is 64 MiB by default: a slow
    # consumer). Stay well below it.
    if batch * window * CHUNK > 32 * MiB:
        raise ValueError("more than 32 MiB of direct gets in flight would trip max_pending")
    stream = bucket_stream(bucket)
    subject = chunk_subject(bucket, nuid)
    api = f"{API}.DIRECT.GET.{stream}"
    inbox = nc.new_inbox()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    first_seq: asyncio.Future[int] = loop.create_future()
    state = {"bytes": 0, "msgs": 0, "next": 1, "in_flight": 1}
    batches = (chunks + batch - 1) // batch

    def request(k: int, seq: int) -> Awaitable[None]:
        body = json.dumps({"seq": seq, "batch": batch, "next_by_subj": subject}).encode()
        return nc.publish(api, body, reply=f"{inbox}.{k}")

    async def on_msg(msg: Msg) -> None:
        hdr = msg.headers or {}
        status = hdr.get(STATUS)
        if status is not None:
            error = batch_end_error(status, hdr.get(DESCRIPTION, ""), "direct get")
            if error is not None:
                if not done.done():
                    done.set_exception(error)
                return
            state["in_flight"] -= 1
            k = state["next"]
            if k < batches and first_seq.done():
                state["next"] += 1
                state["in_flight"] += 1
                await request(k, first_seq.result() + k * batch)
            return
        if not first_seq.done():
            first_seq.set_result(int(hdr[SEQUENCE]))
        state["bytes"] += len(msg.data)
        state["msgs"] += 1
        if state["msgs"] == chunks and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(
        inbox + ".*", cb=on_msg, pending_bytes_limit=1024 * MiB, pending_msgs_limit=1 << 20
    )
    try:
        await request(0, 0)
        seq0 = await asyncio.wait_for(asyncio.shield(first_seq), 10)
        # Fill the window now that the first chunk's sequence is known.
        while state["next"] < min(batches, window):
            k = state["next"]
            state["next"] += 1
            state["in_flight"] += 1
            await request(k, seq0 + k * batch)
        await asyncio.wait_for(done, 120)
    finally:
        await sub.unsubscribe()
    return state["bytes"]


async def raw_push_consumer(
    nc: NATS, bucket: str, nuid: str, chunks: int, *, digest: bool = False
) -> int:
    """Read every chunk through an ordered-style push consumer answering flow control at once.

    An ephemeral consumer (no acks, memory state, flow control, heartbeats) delivers the chunk
    subject to an inbox; the callback counts bytes and answers each flow-control request
    immediately (nats-py's own get answers from a 0.25 s polling loop, which is why it stalls).
    With ``digest`` it also feeds every chunk to SHA-256 in line: the ceiling for a reader
    that verifies the digest, as objfs must.
    """
    sha = hashlib.sha256()
    stream = bucket_stream(bucket)
    subject = chunk_subject(bucket, nuid)
    deliver = nc.new_inbox()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    state = {"bytes": 0, "msgs": 0}

    async def on_msg(msg: Msg) -> None:
        if not msg.data and msg.headers and msg.headers.get(STATUS) == FLOW_CONTROL:
            if msg.reply:  # a flow-control request (heartbeats carry no reply)
                await nc.publish(msg.reply, b"")
            return
        if digest:
            sha.update(msg.data)
        state["bytes"] += len(msg.data)
        state["msgs"] += 1
        if state["msgs"] == chunks and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(
        deliver, cb=on_msg, pending_bytes_limit=1024 * MiB, pending_msgs_limit=1 << 20
    )
    # The consumer objfs's own push reads create (nats_protocol), from the first chunk.
    config = push_consumer_config(
        deliver, subject, deliver_policy="all", heartbeat=5.0, inactive_threshold=30.0
    )
    create, body = consumer_create(stream, config)
    resp = await nc.request(f"{API}.{create}", json.dumps(body).encode(), timeout=5)
    reply = json.loads(resp.data)
    if "error" in reply:
        await sub.unsubscribe()
        raise RuntimeError(f"consumer create: {reply['error']}")
    try:
        await asyncio.wait_for(done, 120)
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await nc.request(consumer_delete(stream, reply["name"]), b"", timeout=5)
    return state["bytes"]


async def raw_lean_drain(host: str, port: int, bucket: str, nuid: str, chunks: int) -> int:
    """Read every chunk with objfs's lean bulk reader (``objfs.store.nats_bulk``), counting
    bytes only: pipelined batch direct gets of ``BATCH_BYTES``, up to ``AHEAD_BYTES`` in flight
    (objfs's read settings), without verification or digest. Not part of the raw ceiling,
    which is defined with nats-py's primitives; it shows what the lean reader costs."""
    from objfs.store.nats_bulk import BulkConnection
    from objfs.store.nats_reads import AHEAD_BYTES, BATCH_BYTES

    stream = bucket_stream(bucket)
    subject = chunk_subject(bucket, nuid)
    per = max(1, BATCH_BYTES // CHUNK)
    ahead = max(per, AHEAD_BYTES // CHUNK)
    conn = await BulkConnection.open(host, port, timeout=30.0)
    try:
        first = await conn.wait(conn.request(stream, 0, 1, subject))
        seq0 = first.seqs[0]
        moved = issued = done = 0
        inflight: list[Any] = []
        while done < chunks:
            while issued < chunks and issued - done < ahead:
                n = min(per, chunks - issued)
                inflight.append((n, conn.request(stream, seq0 + issued, n, subject)))
                issued += n
            n, req = inflight.pop(0)
            batch = await conn.wait(req)
            if len(batch.datas) != n:
                raise RuntimeError(f"lean drain: {len(batch.datas)} chunks of {n}")
            moved += sum(map(len, batch.datas))
            done += n
        return moved
    finally:
        conn.close()
