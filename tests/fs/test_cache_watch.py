"""The chunk cache (merged fetches, version keys, readahead), the watcher and the adapter."""

from __future__ import annotations

import errno
import os

import pytest
import trio
from fs_helpers import CALLER, CHUNK, read_file, stored, wait_for, watch_barrier, write_file

from objfs.fs.inodes import ROOT_INO
from objfs.fs.invalidation import InvalidateEntry, InvalidateInode
from objfs.store.api import BucketConfig, WatchEvent
from objfs.store.errors import NoSpace


async def test_concurrent_reads_fetch_each_chunk_once(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    data = os.urandom(8 * CHUNK)
    await mem.put(bucket_name, "big", data)
    fs = await make_fs(mem, bucket_name)
    node = await fs.lookup(ROOT_INO, "big")
    mem.store.delay = 0.02  # slow store: the fetches overlap
    handle, _ = await fs.open(node.ino, os.O_RDONLY)
    before = mem.store.calls["read_chunks"]
    results: dict[int, bytes] = {}

    async def reader(i: int) -> None:
        results[i] = await fs.read(handle.fh, 0, 8 * CHUNK)

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(reader, i)
    mem.store.delay = 0.0
    assert all(r == data for r in results.values())
    assert mem.store.calls["read_chunks"] - before == 1
    # Cached now: another read needs no store call.
    assert await fs.read(handle.fh, CHUNK + 3, 10) == data[CHUNK + 3 : CHUNK + 13]
    assert mem.store.calls["read_chunks"] - before == 1
    await fs.release(handle.fh)


async def test_overwrite_never_serves_stale_chunks(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    node = await write_file(fs, "v", b"A" * (2 * CHUNK))
    assert await read_file(fs, node.ino) == b"A" * (2 * CHUNK)
    handle, keep = await fs.open(node.ino, os.O_RDONLY)
    assert keep  # nothing changed since this mount served it
    await fs.release(handle.fh)
    await mem.put(bucket_name, "v", b"B" * (2 * CHUNK))  # another client
    fresh = await mem.info(bucket_name, "v")
    fs.watcher.apply(fs.root, WatchEvent("put", fresh))
    handle, keep = await fs.open(node.ino, os.O_RDONLY)
    assert not keep
    assert await fs.read(handle.fh, 0, 2 * CHUNK) == b"B" * (2 * CHUNK)
    await fs.release(handle.fh)


async def test_sequential_reads_read_ahead(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    data = os.urandom(64 * CHUNK)
    await mem.put(bucket_name, "seq", data)
    fs = await make_fs(mem, bucket_name)
    fs.cache.readahead.max_bytes = 16 * CHUNK
    node = await fs.lookup(ROOT_INO, "seq")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.cache.spawn is not None, "run_background taking readahead")
        handle, _ = await fs.open(node.ino, os.O_RDONLY)
        got = b"".join([await fs.read(handle.fh, off, CHUNK) for off in range(0, len(data), CHUNK)])
        await fs.release(handle.fh)
        assert got == data
        nursery.cancel_scope.cancel()
    # One-chunk reads: without readahead 64 read_chunks calls, with a 16-chunk window ~5.
    calls = mem.store.calls["read_chunks"]
    assert calls <= 12, calls


async def test_watcher_applies_remote_changes(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    mine = await write_file(fs, "mine", b"local")
    fs.table.ref(fs.root)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await store.put(bucket_name, "remote/new.txt", b"from elsewhere")
        await wait_for(lambda: fs.table.child(fs.root, "remote") is not None, "remote/new.txt")
        remote = fs.table.child(fs.root, "remote")
        f = fs.table.child(remote, "new.txt")
        assert f is not None and f.size == len(b"from elsewhere")
        assert await read_file(fs, f.ino) == b"from elsewhere"
        assert InvalidateEntry(ROOT_INO, "remote", 0) in fs.queue.sent
        # A remote overwrite of a file the kernel knows invalidates its pages.
        mine.lookups = 1
        await store.put(bucket_name, "mine", b"changed remotely")
        await wait_for(lambda: mine.size == len(b"changed remotely"), "the overwrite of mine")
        assert InvalidateInode(mine.ino, attr_only=False) in fs.queue.sent
        assert await read_file(fs, mine.ino) == b"changed remotely"
        # A remote delete removes the entry (and the now empty implicit directory).
        await store.delete(bucket_name, "remote/new.txt")
        await wait_for(lambda: fs.table.child(fs.root, "remote") is None, "the remote delete")
        # Our own writes are not invalidated needlessly.
        fs.queue.sent.clear()
        own = await write_file(fs, "own", b"x")
        own.lookups = 1
        await watch_barrier(fs, store, bucket_name, "marker-after")  # own's events are in
        assert not [r for r in fs.queue.sent if getattr(r, "ino", None) == own.ino]
        nursery.cancel_scope.cancel()
    assert await stored(store, bucket_name, "own") == b"x"


async def test_adapter_maps_errors(mem, bucket_name, make_fs):
    pyfuse3 = pytest.importorskip("pyfuse3")
    from objfs.fs import FuseOperations

    fs = await make_fs(mem, bucket_name)
    ops = FuseOperations(fs)
    assert fs.invalidator is not None

    class Ctx:
        uid, gid, umask, pid = CALLER.uid, CALLER.gid, CALLER.umask, 1

    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.getattr(424242, Ctx())
    assert e.value.errno == errno.ENOENT
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.lookup(ROOT_INO, b"missing", Ctx())
    assert e.value.errno == errno.ENOENT
    attr = await ops.mkdir(ROOT_INO, b"d", 0o755, Ctx())
    assert attr.st_ino > ROOT_INO and attr.entry_timeout == attr.attr_timeout == 1.0

    async def boom(*args):
        raise RuntimeError("bug")

    fs.statfs = boom
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.statfs(Ctx())
    assert e.value.errno == errno.EIO
    mem.store.fail_next("put", NoSpace("full"))
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.mkdir(ROOT_INO, b"e", 0o755, Ctx())
    assert e.value.errno == errno.ENOSPC
    opts = fs.fuse_options()
    assert {"subtype=objfs", "default_permissions", f"fsname=objfs:{bucket_name}"} <= opts


async def test_own_renames_survive_the_watch(store, bucket_name, make_fs):
    """The watch reports our own renames (put new, tombstone old) while they are under way;
    they must neither drop the moved entries nor add duplicates."""
    fs = await make_fs(store, bucket_name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        d = await fs.mkdir(ROOT_INO, "d", 0o755, CALLER)
        for i in range(5):
            await write_file(fs, f"x{i}", b"x", parent=d.ino)
        await write_file(fs, "f", b"f")
        await fs.rename(ROOT_INO, "d", ROOT_INO, "e")
        await fs.rename(ROOT_INO, "f", ROOT_INO, "g")
        # Every event of the renames above has been applied once the marker's is.
        await watch_barrier(fs, store, bucket_name, "marker")
        nursery.cancel_scope.cancel()
    e = fs.table.child(fs.root, "e")
    assert sorted(n.name for _, n in await fs.readdir(e.ino, 0)) == [f"x{i}" for i in range(5)]
    assert sorted(n.name for _, n in await fs.readdir(ROOT_INO, 0)) == ["e", "g", "marker"]
    assert fs.table.child(fs.root, "g").info.name == "g"


async def test_adapter_drops_invalidations_before_the_kernels_init(
    mem, bucket_name, make_fs, monkeypatch
):
    """Before INIT the kernel caches nothing and answers a notification with ENOSYS (which
    pyfuse3's notify thread logged as a traceback): nothing is sent until ``init``."""
    import pyfuse3

    from objfs.fs import FuseOperations

    sent = []
    monkeypatch.setattr(pyfuse3, "invalidate_entry_async", lambda *a, **kw: sent.append(a))
    fs = await make_fs(mem, bucket_name)
    ops = FuseOperations(fs)
    request = InvalidateEntry(ROOT_INO, "gone", deleted=0)
    await fs.invalidator(request)
    assert sent == []
    ops.init()
    await fs.invalidator(request)
    assert sent == [(ROOT_INO, b"gone", 0)]
