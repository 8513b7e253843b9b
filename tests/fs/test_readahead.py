"""Readahead: the window grows on sequential access and resets on a seek; a sequential read
from the start streams the object into the cache, and a seek ends the stream."""

from __future__ import annotations

import contextlib
import os

import pytest
import trio
from fs_helpers import CHUNK, wait_for

from objfs.fs import readahead
from objfs.fs.inodes import ROOT_INO
from objfs.fs.readahead import Readahead
from objfs.store.api import BucketConfig


async def test_window_doubles_on_sequential_reads_and_resets_on_a_seek():
    ra = Readahead(max_bytes=8 * CHUNK, initial_bytes=CHUNK)
    key = ("b", "nuid")
    assert ra.observe(key, 0, 0).window == CHUNK  # a first read at the start: small window
    assert ra.observe(key, 1, 1).window == 2 * CHUNK
    assert ra.observe(key, 1, 1).window == 2 * CHUNK  # the same chunk again: no growth
    assert ra.observe(key, 2, 3).window == 4 * CHUNK
    assert ra.observe(key, 4, 4).window == 8 * CHUNK
    assert ra.observe(key, 5, 5).window == 8 * CHUNK  # capped
    seek = ra.observe(key, 40, 40)
    assert seek.window == 0  # a seek prefetches nothing
    assert not seek.from_start
    assert ra.observe(key, 41, 41).window == CHUNK  # sequential again: starts small
    other = ra.observe(("b", "other"), 7, 7)
    assert other.window == 0  # a first read elsewhere than the start waits for a second


async def _big_object(mem, bucket_name, chunks):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    data = os.urandom(chunks * CHUNK)
    await mem.put(bucket_name, "big", data)
    return data


async def _read_sequentially(fs, node, data):
    """Read the whole file a chunk at a time, with the background tasks (readahead) running."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.cache.spawn is not None, "run_background taking readahead")
        handle, _ = await fs.open(node.ino, os.O_RDONLY)
        got = [await fs.read(handle.fh, off, CHUNK) for off in range(0, len(data), CHUNK)]
        assert b"".join(got) == data
        await fs.release(handle.fh)
        nursery.cancel_scope.cancel()


async def test_sequential_read_from_the_start_streams(mem, bucket_name, make_fs, monkeypatch):
    monkeypatch.setattr(readahead, "STREAM_MIN_BYTES", 16 * CHUNK)
    data = await _big_object(mem, bucket_name, 256)
    fs = await make_fs(mem, bucket_name)
    fs.cache.readahead.max_bytes = 16 * CHUNK
    node = await fs.lookup(ROOT_INO, "big")
    await _read_sequentially(fs, node, data)
    assert mem.store.calls["read_stream"] == 1
    # The stream, not one batch per 16-chunk window (16 or more calls): only the reads before
    # it started.
    assert mem.store.calls["read_chunks"] <= 8, mem.store.calls["read_chunks"]


async def test_a_seek_ends_the_stream_and_random_reads_fetch_only_their_chunks(
    mem, bucket_name, make_fs, monkeypatch
):
    monkeypatch.setattr(readahead, "STREAM_MIN_BYTES", 16 * CHUNK)
    data = await _big_object(mem, bucket_name, 256)
    fs = await make_fs(mem, bucket_name)
    fs.cache.readahead.max_bytes = 16 * CHUNK
    node = await fs.lookup(ROOT_INO, "big")
    key = (bucket_name, (await mem.info(bucket_name, "big")).nuid)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.cache.spawn is not None, "run_background taking readahead")
        handle, _ = await fs.open(node.ino, os.O_RDONLY)
        for off in range(0, 3 * CHUNK, CHUNK):
            assert await fs.read(handle.fh, off, CHUNK) == data[off : off + CHUNK]
        access = fs.cache.readahead._access[key]
        stream = access.stream
        assert stream is not None
        assert await fs.read(handle.fh, 200 * CHUNK, 100) == data[200 * CHUNK : 200 * CHUNK + 100]
        assert access.stream is None and access.window == 0
        await wait_for(lambda: stream.finished, "the stream to end after the seek")
        # Random reads now: each fetches its own chunk, nothing ahead.
        before = mem.store.calls["read_chunks"]
        for k in (150, 90, 230, 120):
            assert (
                await fs.read(handle.fh, k * CHUNK + 5, 10) == data[k * CHUNK + 5 : k * CHUNK + 15]
            )
        assert mem.store.calls["read_chunks"] - before == 4
        assert not fs.cache._inflight  # no claim of the stream's is left behind
        await fs.release(handle.fh)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("fail", [True, False])
async def test_readers_waiting_on_a_failed_stream_fetch_themselves(
    mem, bucket_name, make_fs, monkeypatch, fail
):
    monkeypatch.setattr(readahead, "STREAM_MIN_BYTES", 16 * CHUNK)
    data = await _big_object(mem, bucket_name, 64)
    fs = await make_fs(mem, bucket_name)
    fs.cache.readahead.max_bytes = 16 * CHUNK
    if fail:
        real = fs.cache.store.read_stream

        async def broken(info, **kw):
            async with contextlib.aclosing(real(info, **kw)) as batches:
                async for batch in batches:
                    yield batch[:1]
                    raise OSError("stream broke")

        monkeypatch.setattr(fs.cache.store, "read_stream", broken)
    node = await fs.lookup(ROOT_INO, "big")
    await _read_sequentially(fs, node, data)


async def test_kernel_readahead_is_raised_where_sysfs_allows(tmp_path):
    from objfs.kernel_readahead import raise_readahead

    dev = os.makedev(0, 77)
    knob = tmp_path / "0:77" / "read_ahead_kb"
    knob.parent.mkdir()
    knob.write_text("128\n")
    assert raise_readahead(dev, 1024, root=tmp_path)
    assert knob.read_text() == "1024\n"
    knob.write_text("4096\n")
    assert raise_readahead(dev, 1024, root=tmp_path)  # never lowered
    assert knob.read_text() == "4096\n"
    assert not raise_readahead(os.makedev(0, 78), 1024, root=tmp_path)  # no such device
