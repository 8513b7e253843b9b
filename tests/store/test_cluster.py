"""Replicated (R3) buckets on a three-node cluster: reads right after a write are never stale,
and a put survives the loss of its stream's leader.

Direct gets may be answered by any replica, and a replica may be behind the leader that just
acknowledged a write; these tests write through one node and read at once through another,
and kill the stream leader in the middle of a put. Bytes are compared every time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from cluster import Cluster
from nats_helpers import Run, read_all
from server_faults import kill

from objfs.store import errors
from objfs.store.api import BucketConfig
from objfs.store.nats_store import NatsObjectStore, connect

READS = 200


async def _create_r3(store: NatsObjectStore, name: str) -> None:
    deadline = asyncio.get_running_loop().time() + 120
    while True:  # a young cluster may not place an R3 stream at once
        try:
            await store.create_bucket(BucketConfig(name, replicas=3))
            return
        except errors.StoreError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_read_after_write_across_nodes_is_never_stale(
    run: Run[None], cluster: Cluster
) -> None:
    async def body() -> None:
        w = await connect([cluster.urls[0]], timeout=10.0)
        r = await connect([cluster.urls[1]], timeout=10.0)
        try:
            await _create_r3(w, "r3")
            wrong = []
            for i in range(READS):
                # One name rewritten (a stale read shows the previous version) and a few
                # sizes: empty, one chunk, several chunks.
                data = os.urandom((0, 1000, 300_000)[i % 3])
                put = await w.put("r3", "same", data)
                info = await r.info("r3", "same")
                got = await read_all(r, info)
                if info.nuid != put.nuid or got != data:
                    wrong.append(i)
            assert not wrong, f"{len(wrong)} stale or wrong reads of {READS}: {wrong[:10]}"
        finally:
            await w.close()
            await r.close()

    await run(body)


async def _stream_leader(store: NatsObjectStore, bucket: str) -> str:
    si = await store.js.api(f"STREAM.INFO.OBJ_{bucket}")
    return str(si["cluster"]["leader"])


async def test_put_survives_the_stream_leader_being_killed(
    run: Run[None], cluster: Cluster
) -> None:
    data = os.urandom(96 << 20)

    async def body() -> None:
        store = await connect(cluster.urls, timeout=20.0)
        try:
            await _create_r3(store, "lead")
            leader = await _stream_leader(store, "lead")
            node = next(n for n in cluster.nodes if n.server_name == leader)
            put = asyncio.ensure_future(store.put("lead", "big", data))
            deadline = asyncio.get_running_loop().time() + 120
            while (await store.bucket_status("lead")).size < 16 << 20:
                assert not put.done(), put.exception() if put.done() else None
                assert asyncio.get_running_loop().time() < deadline, "the put never got going"
                await asyncio.sleep(0.05)
            await asyncio.get_running_loop().run_in_executor(None, kill, node)
            info = await put
            assert info.size == len(data)
            assert await _stream_leader(store, "lead") != leader
            got = await read_all(store, await store.info("lead", "big"))
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        finally:
            await store.close()

    await run(body)
