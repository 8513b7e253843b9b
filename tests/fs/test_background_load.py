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
