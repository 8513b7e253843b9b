"""The numbers objfs status and the metrics report, counted by the components (core, memory
store): upload progress moves as the store's put reads the spool, the cache counts hits and
misses, reads and writes count bytes, df takes the account's limit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from fs_helpers import CALLER, CHUNK, no_connection, read_file, wait_for, write_file

from objfs.bridge import AsyncioThread, Bridge, TrioStore
from objfs.fs.attributes import UNLIMITED_BYTES
from objfs.fs.inodes import ROOT_INO
from objfs.status import collect, format_status
from objfs.store.errors import Unavailable
from objfs.store.memory import MemoryObjectStore


class GatedStore(MemoryObjectStore):
    """A memory store whose put reads its source one chunk per ``allow``: an upload that
    stays in flight, at a known position, for as long as the test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces = asyncio.Semaphore(0)

    async def put(self, bucket: str, name: str, source: Any, **kw: Any) -> Any:
        if isinstance(source, bytes):
            return await super().put(bucket, name, source, **kw)
        data = bytearray()
        while True:
            await self.pieces.acquire()
            piece = source.read(CHUNK)
            if not piece:
                break
            data += piece
        return await super().put(bucket, name, bytes(data), **kw)


@pytest.fixture
async def gated(asyncio_thread: AsyncioThread) -> AsyncIterator[tuple[TrioStore, GatedStore]]:
    bridge = Bridge(asyncio_thread)

    async def make() -> GatedStore:
        return GatedStore()

    backend = await bridge.call(make)
    yield TrioStore(backend, bridge), backend
    await bridge.call(backend.close)


async def allow(store: TrioStore, backend: GatedStore, n: int) -> None:
    async def release() -> None:
        for _ in range(n):
            backend.pieces.release()

    await store.bridge.call(release)


async def test_upload_progress_moves_as_the_put_reads(gated, bucket_name, make_fs):
    store, backend = gated
    fs = await make_fs(store, bucket_name)
    handle, node = await fs.create(ROOT_INO, "big", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    data = os.urandom(4 * CHUNK)
    await fs.write(handle.fh, 0, data)
    # Written, not closed: pending, not in flight.
    status = collect(fs, no_connection)
    assert status["uploads"]["pending"] == [{"path": "/big", "size": 4 * CHUNK}]
    assert status["uploads"]["in_flight"] == []
    assert fs.stats.status_line() == "1 upload pending, 16.0 KiB"

    def in_flight() -> list[dict[str, Any]]:
        return list(collect(fs, no_connection)["uploads"]["in_flight"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.flush, handle.fh)
        await wait_for(in_flight, "the upload in flight")
        assert in_flight()[0]["done"] == 0
        assert collect(fs, no_connection)["uploads"]["pending"] == []
        await allow(store, backend, 1)
        await wait_for(lambda: in_flight()[0]["done"] == CHUNK, "one chunk read")
        await allow(store, backend, 2)
        await wait_for(lambda: in_flight()[0]["done"] == 3 * CHUNK, "three chunks read")
        assert (in_flight()[0]["path"], in_flight()[0]["size"]) == ("/big", 4 * CHUNK)
        text = format_status(collect(fs, no_connection))
        assert "/big: 12.0 KiB of 16.0 KiB (75%)" in text, text
        await allow(store, backend, 2)  # the last chunk, then the end of the file
    await fs.release(handle.fh)
    status = collect(fs, no_connection)
    assert status["uploads"]["in_flight"] == [] and status["uploads"]["pending"] == []
    assert (status["uploads"]["done"], status["uploads"]["bytes"]) == (1, 4 * CHUNK)
    assert fs.stats.status_line() == "idle, nothing to upload"
    assert await read_file(fs, node.ino) == data


async def test_cache_hits_misses_and_bytes(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    data = os.urandom(3 * CHUNK)
    await mem.put(bucket_name, "f", data, chunk_size=CHUNK)
    reader = await make_fs(mem, bucket_name)
    node = await reader.lookup(ROOT_INO, "f")
    assert await read_file(reader, node.ino) == data
    first = collect(reader, no_connection)["cache"]
    assert (first["hits"], first["misses"]) == (0, 3)
    assert first["used"] == 3 * CHUNK
    assert await read_file(reader, node.ino) == data
    second = collect(reader, no_connection)["cache"]
    assert (second["hits"], second["misses"]) == (3, 3)
    assert second["hit_ratio"] == 0.5
    assert collect(reader, no_connection)["io"]["bytes_read"] == 6 * CHUNK
    await write_file(fs, "g", b"x" * 100)
    assert collect(fs, no_connection)["io"]["bytes_written"] == 100


async def test_df_takes_the_account_limit(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    await write_file(fs, "f", b"x" * 10_000)
    unlimited = await fs.statfs()
    assert unlimited.blocks * unlimited.frsize > UNLIMITED_BYTES  # no limit known anywhere
    mem.store.account_limit = 64 * CHUNK
    st = await fs.statfs()
    used = (await mem.bucket_status(bucket_name)).size
    assert st.blocks * st.frsize == 64 * CHUNK
    assert st.bavail == (64 * CHUNK - used) // CHUNK
    # An account whose info cannot be read (a user allowed its streams, not $JS.API.INFO):
    # df still answers, as if no limit were known.
    mem.store.fail_next("account_usage", Unavailable("$JS.API.INFO: no answer"))
    assert (await fs.statfs()).blocks * CHUNK > UNLIMITED_BYTES


async def test_df_of_the_embedded_server_is_its_disk(
    mem, bucket_name, make_fs, tmp_path, monkeypatch
):
    """No account limit, and the server is the mount's own: df is the free space of the disk
    under its JetStream store on top of what the buckets use."""
    fs = await make_fs(mem, bucket_name, server_store=tmp_path)
    await write_file(fs, "f", b"x" * 10_000)
    used = (await mem.bucket_status(bucket_name)).size
    real_statvfs = os.statvfs
    seen: list[str] = []

    def statvfs(path: Any) -> Any:
        seen.append(str(path))
        r = real_statvfs(path)
        return os.statvfs_result((*r[:4], 1000, *r[5:]))  # f_bavail: 1000 blocks

    monkeypatch.setattr(os, "statvfs", statvfs)
    st = await fs.statfs()
    assert seen == [str(tmp_path)]
    free = 1000 * real_statvfs(tmp_path).f_frsize
    assert st.blocks == (used + free) // st.frsize
    assert st.bavail == free // st.frsize
