"""Early publishing (fs/streaming_upload.py): a file written sequentially is uploaded while it
is written, and still published atomically at close; anything else falls back to the
ordinary upload. On both backends; NATS checks that abandoned chunks are purged."""

from __future__ import annotations

import os

import pytest
import trio
from fs_helpers import CALLER, CHUNK, stored, wait_for

from objfs.fs import streaming_upload
from objfs.fs.inodes import ROOT_INO
from objfs.store.api import BucketConfig
from objfs.store.errors import NotFound

PIECE = 2 * CHUNK


@pytest.fixture(autouse=True)
def _small_threshold(monkeypatch):
    monkeypatch.setattr(streaming_upload, "EARLY_MIN_BYTES", 8 * CHUNK)


async def _messages(store, bucket):
    """Messages (chunks and metas) in the bucket's stream on NATS; None on memory."""
    nc = getattr(store.store, "nc", None)
    if nc is None:
        return None

    async def count():
        return (await nc.jetstream().stream_info(f"OBJ_{bucket}")).state.messages

    return await store.bridge.call(count)


async def _started(fs, node):
    early = fs.files.early._files.get(node.ino)
    await wait_for(lambda: early is not None and early.feed is not None, "the early upload")
    return early


async def _write(fs, fh, data, start=0):
    for off in range(start, len(data), PIECE):
        await fs.write(fh, off, data[off : off + PIECE])


async def test_early_publishing_is_still_atomic_at_close(store, bucket_name, make_fs):
    await store.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    old = os.urandom(3 * CHUNK)
    await store.put(bucket_name, "over", old)
    fs = await make_fs(store, bucket_name)
    data = os.urandom(40 * CHUNK + 123)
    before = await _messages(store, bucket_name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.files.early.spawn is not None, "run_background")
        new, node = await fs.create(ROOT_INO, "new", 0o640, os.O_WRONLY | os.O_CREAT, CALLER)
        over_node = await fs.lookup(ROOT_INO, "over")
        over, _ = await fs.open(over_node.ino, os.O_WRONLY | os.O_TRUNC)
        await _write(fs, new.fh, data)
        await _write(fs, over.fh, data)
        for n in (node, over_node):
            early = await _started(fs, n)
            assert not early.done.is_set()  # streaming, not ended
        if before is not None:  # NATS: chunks are published while the files are open
            with trio.fail_after(60):
                while await _messages(store, bucket_name) < before + 2 * 30:
                    await trio.sleep(0.05)
        # All bytes written, most chunks published: no other client sees either version yet.
        with pytest.raises(NotFound):
            await store.info(bucket_name, "new")
        assert await stored(store, bucket_name, "over") == old
        node.attrs.mode = 0o100600  # a change after the last write is in the published meta
        for h in (new, over):
            await fs.flush(h.fh)
            await fs.release(h.fh)
        nursery.cancel_scope.cancel()
    assert await stored(store, bucket_name, "new") == data
    assert await stored(store, bucket_name, "over") == data
    info = await store.info(bucket_name, "new")
    assert info.headers["Objfs-Mode"] == ["600"]
    if getattr(store.store, "calls", None) is not None:
        assert store.store.calls["put"] == 3  # the old version, and one streaming put each


async def test_a_write_before_the_end_falls_back_and_purges_the_early_chunks(
    store, bucket_name, make_fs
):
    await store.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    fs = await make_fs(store, bucket_name)
    data = bytearray(os.urandom(40 * CHUNK))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.files.early.spawn is not None, "run_background")
        h, node = await fs.create(ROOT_INO, "seek", 0o644, os.O_RDWR | os.O_CREAT, CALLER)
        await _write(fs, h.fh, data[: 20 * CHUNK])
        early = await _started(fs, node)
        await fs.write(h.fh, 5, b"SEEK-BACK")  # a region already published
        data[5:14] = b"SEEK-BACK"
        await wait_for(lambda: early.done.is_set(), "the early upload to be abandoned")
        assert early.failed
        await _write(fs, h.fh, data, start=20 * CHUNK)
        await fs.flush(h.fh)
        await fs.release(h.fh)
        nursery.cancel_scope.cancel()
    assert await stored(store, bucket_name, "seek") == bytes(data)
    info = await store.info(bucket_name, "seek")
    want = info.chunks + 1  # the object's chunks and its meta: nothing of the abandoned put
    got = await _messages(store, bucket_name)
    if got is not None:
        with trio.fail_after(60):
            while got != want:
                await trio.sleep(0.05)
                got = await _messages(store, bucket_name)


async def test_unmount_under_an_early_published_writer_stores_what_was_written(
    store, bucket_name, make_fs
):
    await store.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    fs = await make_fs(store, bucket_name)
    data = os.urandom(30 * CHUNK + 5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.files.early.spawn is not None, "run_background")
        h, node = await fs.create(ROOT_INO, "open", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
        await _write(fs, h.fh, data)
        await _started(fs, node)
        nursery.cancel_scope.cancel()  # as the mount does when the FUSE loop ends
    assert await fs.shutdown() == []
    assert await stored(store, bucket_name, "open") == data


async def test_small_files_never_start_one(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.files.early.spawn is not None, "run_background")
        h, node = await fs.create(ROOT_INO, "small", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
        await _write(fs, h.fh, b"x" * (4 * CHUNK))
        early = fs.files.early._files.get(node.ino)
        assert early is not None and early.feed is None
        await fs.release(h.fh)
        nursery.cancel_scope.cancel()
    assert await stored(mem, bucket_name, "small") == b"x" * (4 * CHUNK)
    assert not fs.files.early._files
