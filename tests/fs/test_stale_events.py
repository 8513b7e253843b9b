"""A watch event from before this mount removed a name does not bring the name back.

On a busy machine the watch can deliver the put of a file's upload after this mount has
already renamed the file away or unlinked it (git: create ``config.lock``, write, rename it
over ``config``, create ``config.lock`` again with O_EXCL). Applied as a new object, that
put showed the old name again until its tombstone arrived, and the O_EXCL create failed with
EEXIST. The events are applied here by hand, in the late order, with no watch running.
"""

from __future__ import annotations

import errno
import os

import pytest
from fs_helpers import CALLER, CHUNK, read_file, write_file

from objfs.fs.errors import FsError
from objfs.fs.inodes import ROOT_INO
from objfs.store.api import BucketConfig, WatchEvent


async def _absent(fs, name: str) -> None:
    with pytest.raises(FsError) as e:
        await fs.lookup(ROOT_INO, name)
    assert e.value.errno == errno.ENOENT


async def test_late_put_of_a_renamed_away_name(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    fs = await make_fs(mem, bucket_name)
    await write_file(fs, "config.lock", b"[core]\n")
    uploaded = await mem.info(bucket_name, "config.lock")
    await fs.rename(ROOT_INO, "config.lock", ROOT_INO, "config")
    fs.watcher.apply(fs.root, WatchEvent("put", uploaded))  # delivered late
    await _absent(fs, "config.lock")
    handle, _ = await fs.create(
        ROOT_INO, "config.lock", 0o644, os.O_WRONLY | os.O_CREAT | os.O_EXCL, CALLER
    )
    await fs.release(handle.fh)
    config = await fs.lookup(ROOT_INO, "config")
    assert await read_file(fs, config.ino) == b"[core]\n"


async def test_late_put_of_an_unlinked_name(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    fs = await make_fs(mem, bucket_name)
    await write_file(fs, "a", b"1")
    uploaded = await mem.info(bucket_name, "a")
    await fs.unlink(ROOT_INO, "a")
    fs.watcher.apply(fs.root, WatchEvent("put", uploaded))
    await _absent(fs, "a")


async def test_a_later_put_elsewhere_still_shows(mem, bucket_name, make_fs):
    """Only what predates the removal is stale: another client's new object is shown, and
    after the tombstone arrived nothing is remembered about the name."""
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    fs = await make_fs(mem, bucket_name)
    await write_file(fs, "a", b"1")
    uploaded = await mem.info(bucket_name, "a")
    await fs.unlink(ROOT_INO, "a")
    tomb = await mem.info(bucket_name, "a", deleted=True)
    assert tomb.deleted and tomb.revision > uploaded.revision
    again = await mem.put(bucket_name, "a", b"from elsewhere")
    fs.watcher.apply(fs.root, WatchEvent("put", uploaded))
    fs.watcher.apply(fs.root, WatchEvent("delete", tomb))
    fs.watcher.apply(fs.root, WatchEvent("put", again))
    node = await fs.lookup(ROOT_INO, "a")
    assert await read_file(fs, node.ino) == b"from elsewhere"
