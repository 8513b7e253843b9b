"""A ``--bucket`` mount's tree loaded in the background (``Filesystem.start(background=True)``,
what ``objfs mount`` does): operations wait for the load, a failed load is an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from fs_helpers import CHUNK, read_file, wait_for

from objfs import status
from objfs.fs import Filesystem
from objfs.fs.inodes import ROOT_INO
from objfs.options import MountOptions
from objfs.store.api import BucketConfig
from objfs.store.errors import NotFound, Unavailable


async def background_fs(store: Any, bucket: str, tmp_path: Path, make_fs: Any) -> Filesystem:
    """A Filesystem started with ``background=True`` (shut down by the autouse fixture)."""
    opts = MountOptions(
        mountpoint=tmp_path / "mnt", bucket=bucket, chunk_size=CHUNK, spool_dir=tmp_path / "bg"
    )
    fs = Filesystem(store, opts)
    make_fs.made.append(fs)
    await fs.start(background=True)
    return fs


async def test_start_returns_before_the_load_and_a_lookup_waits_for_it(
    mem, bucket_name, tmp_path, make_fs
):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    await mem.put(bucket_name, "dir/hello", b"hello")
    await mem.put(bucket_name, "top", b"top")
    fs = await background_fs(mem, bucket_name, tmp_path, make_fs)
    # start checked the bucket only: nothing of it is in the tree, no watch was opened.
    assert fs.table.child(fs.root, "top") is None
    assert mem.store.calls["watch"] == 0
    assert not fs.coherence.loading.is_set()
    shown = status.collect(fs, dict)
    assert shown["watch"]["loaded"] is False  # objfs status says the tree is coming
    assert "loading the bucket" in status.format_status(shown)
    mem.store.delay = 0.2  # a slow store: the lookup below arrives while the load runs
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        directory = await fs.lookup(ROOT_INO, "dir")
        # The lookup waited for the snapshot instead of answering ENOENT from an empty tree.
        assert fs.coherence.loading.is_set() or fs.coherence.loaded(fs.root)
        hello = await fs.lookup(directory.ino, "hello")
        mem.store.delay = 0
        assert await read_file(fs, hello.ino) == b"hello"
        names = sorted(n.name for _, n in await fs.readdir(ROOT_INO, 0))
        assert names == ["dir", "top"]
        await wait_for(lambda: fs.coherence.loading.is_set(), "the background load's end")
        assert fs.coherence.load_error is None
        assert status.collect(fs, dict)["watch"]["loaded"] is True
        assert mem.store.calls["watch"] == 1  # one load: the lookup and the task shared it
        nursery.cancel_scope.cancel()


async def test_a_failed_load_is_an_error_not_an_empty_directory(
    mem, bucket_name, tmp_path, make_fs
):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    await mem.put(bucket_name, "kept", b"data")
    fs = await background_fs(mem, bucket_name, tmp_path, make_fs)
    down = Unavailable("server gone away")
    for _ in range(3):  # the background load, then the readdir's and the lookup's own tries
        mem.store.fail_next("watch", down)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.coherence.loading.is_set(), "the background load's end")
        assert fs.coherence.load_error is down
        assert not fs.coherence.loaded(fs.root)
        shown = status.collect(fs, dict)
        assert shown["watch"]["load_error"] == "server gone away"
        assert "could not be loaded: server gone away" in status.format_status(shown)
        # The store's error, not an empty listing nor ENOENT from a tree never loaded.
        with pytest.raises(Unavailable):
            await fs.readdir(ROOT_INO, 0)
        with pytest.raises(Unavailable):
            await fs.lookup(ROOT_INO, "kept")
        # The next operation loads it (the server is back): no restart of the mount needed.
        assert [n.name for _, n in await fs.readdir(ROOT_INO, 0)] == ["kept"]
        assert fs.coherence.load_error is None
        kept = await fs.lookup(ROOT_INO, "kept")
        assert await read_file(fs, kept.ino) == b"data"
        assert mem.store.calls["watch"] == 4
        nursery.cancel_scope.cancel()


async def test_a_missing_bucket_still_fails_the_start(mem, bucket_name, tmp_path, make_fs):
    opts = MountOptions(mountpoint=tmp_path / "mnt", bucket=bucket_name, spool_dir=tmp_path / "s")
    fs = Filesystem(mem, opts)
    make_fs.made.append(fs)
    with pytest.raises(NotFound):
        await fs.start(background=True)


def tree_of(fs: Filesystem) -> dict[str, tuple[str, int, int, int]]:
    """Every node below the bucket root: path -> (kind, size, mode, mtime); an implicit
    directory's mtime is the time it was made, left out."""
    return {
        node.path: (
            node.kind.name,
            node.size,
            node.attrs.mode,
            node.attrs.mtime_ns if node.info is not None else 0,
        )
        for node in fs.table.walk(fs.root)
        if node is not fs.root
    }


async def test_changes_during_the_lean_snapshot_show_and_the_tree_is_the_same(
    asyncio_thread, nats_server, bucket_name, tmp_path, make_fs, monkeypatch
):
    """A NATS mount's first load reads the snapshot through the lean reader, then starts the
    live watch after it: changes made while the snapshot is read and between its end and the
    live watch's start all show, and the tree is the one the ordered consumer's snapshot
    builds (the path without the lean reader)."""
    from objfs.bridge import Bridge, TrioStore
    from objfs.store import nats_bulk, nats_js, nats_watch
    from objfs.store.nats_store import connect

    monkeypatch.setattr(nats_watch, "BULK_SNAPSHOT_MIN", 0)  # this small bucket too

    bridge = Bridge(asyncio_thread)

    async def make() -> Any:
        return await connect([nats_server.url], timeout=5.0)

    backend = await bridge.call(make)
    other = await bridge.call(make)
    store = TrioStore(backend, bridge)
    b = bucket_name
    take = nats_bulk.PushRead.take_stamped
    start = nats_js.OrderedConsumer.start
    hooked: list[str] = []

    async def during(self: Any, timeout: float) -> Any:
        if "during" not in hooked:
            hooked.append("during")
            await other.delete(b, "f00")
            await other.put(b, "f01", b"changed during the snapshot")
            await other.put(b, "d/new", b"new")
        return await take(self, timeout)

    async def after(self: Any, *, after: int | None = None) -> int:
        if after is not None and "after" not in hooked:
            hooked.append("after")
            await other.delete(b, "f02")
            await other.put(b, "late", b"after the snapshot")
            await other.rename(b, "d/x", "d/y")
        return await start(self, after=after)

    try:
        await store.create_bucket(BucketConfig(name=b, chunk_size=CHUNK))
        for i in range(40):
            await store.put(b, f"f{i:02}", f"data {i}".encode())
        await store.put(b, "d/x", b"x")
        await store.put(b, "e/", b"")  # a directory marker
        monkeypatch.setattr(nats_bulk.PushRead, "take_stamped", during)
        monkeypatch.setattr(nats_js.OrderedConsumer, "start", after)
        fs = await background_fs(store, b, tmp_path, make_fs)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.run_background)
            await fs.readdir(ROOT_INO, 0)  # waits for the load
            assert hooked == ["during", "after"]  # the lean snapshot, then the live watch
            want = sorted(i.name for i in await store.list(b))
            assert "f00" not in want and "f02" not in want and "late" in want

            def shown() -> list[str]:
                return sorted(
                    n.object_name for n in fs.table.walk(fs.root) if n.info is not None
                )

            await wait_for(lambda: shown() == want, f"the tree showing {want}")
            f01 = await fs.lookup(ROOT_INO, "f01")
            assert await read_file(fs, f01.ino) == b"changed during the snapshot"
            lean = tree_of(fs)
            nursery.cancel_scope.cancel()
        # The same bucket loaded by the ordered consumer alone: the same tree.
        backend.watcher.bulk = None
        fs2 = await background_fs(store, b, tmp_path / "2", make_fs)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs2.run_background)
            await fs2.readdir(ROOT_INO, 0)
            assert tree_of(fs2) == lean
            nursery.cancel_scope.cancel()
    finally:
        await bridge.call(other.close)
        await bridge.call(backend.close)
