"""Live coherence in the core: exact invalidations, pinned reader versions, writers racing
remote changes, reconciliation after a broken watch, and the bucket-list watch."""

from __future__ import annotations

import errno
import logging
import os
import stat

import pytest
import trio
from fs_helpers import CALLER, CHUNK, read_file, stored, wait_for, watch_barrier

from objfs.fs.errors import FsError
from objfs.fs.inodes import ROOT_INO, Kind
from objfs.fs.invalidation import InvalidateEntry, InvalidateInode
from objfs.store.api import BucketConfig, ObjectMeta, WatchEvent
from objfs.store.errors import Unavailable


def about(fs, ino: int) -> list:
    """Invalidation requests queued that concern inode ``ino`` (as inode or parent)."""
    return [r for r in fs.queue.sent if getattr(r, "ino", getattr(r, "parent", None)) == ino]


async def test_invalidates_exactly_what_changed(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    for name in ("a", "b", "c"):
        await mem.put(bucket_name, name, name.encode() * 10)
    fs = await make_fs(mem, bucket_name)
    a, b, c = (fs.table.child(fs.root, n) for n in ("a", "b", "c"))
    a.lookups = b.lookups = 1  # the kernel knows a and b, not c
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        fs.queue.sent.clear()
        # Meta only (same nuid): b's attributes, not its pages, not the directory.
        meta = b.info.meta
        meta.description = "changed"
        await mem.update_meta(bucket_name, "b", meta)
        await wait_for(lambda: b.info.description == "changed", "b's meta change")
        assert fs.queue.sent == [InvalidateInode(b.ino, attr_only=True)]
        # New content (new nuid): a's attributes and pages; nothing else.
        fs.queue.sent.clear()
        await mem.put(bucket_name, "a", b"new a")
        await wait_for(lambda: a.size == 5, "a's overwrite")
        assert fs.queue.sent == [InvalidateInode(a.ino, attr_only=False)]
        # c is unknown to the kernel: its overwrite invalidates nothing.
        fs.queue.sent.clear()
        await mem.put(bucket_name, "c", b"new c!")
        await wait_for(lambda: c.size == 6, "c's overwrite")
        assert fs.queue.sent == []
        # A new name: the parent's dentry for it (negative dentries) and the listing.
        await mem.put(bucket_name, "d", b"d")
        await wait_for(lambda: fs.table.child(fs.root, "d") is not None, "the new d")
        assert fs.queue.sent == [
            InvalidateEntry(ROOT_INO, "d", 0),
            InvalidateInode(ROOT_INO, attr_only=False),
        ]
        # A delete: the parent's dentry, naming the inode it pointed to.
        fs.queue.sent.clear()
        await mem.delete(bucket_name, "a")
        await wait_for(lambda: fs.table.child(fs.root, "a") is None, "a's delete")
        assert fs.queue.sent[0] == InvalidateEntry(ROOT_INO, "a", a.ino)
        assert not about(fs, b.ino) and not about(fs, c.ino)
        nursery.cancel_scope.cancel()


async def test_kind_change_gets_a_new_inode(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    await mem.put(bucket_name, "f", b"plain file")
    fs = await make_fs(mem, bucket_name)
    f = fs.table.child(fs.root, "f")
    f.lookups = 1
    info = await mem.put(
        bucket_name, "f", b"", meta=ObjectMeta(headers={"Objfs-Symlink": ["elsewhere"]})
    )
    fs.watcher.apply(fs.root, WatchEvent("put", info))
    link = fs.table.child(fs.root, "f")
    assert link.ino != f.ino and link.kind is Kind.SYMLINK and f.kind is Kind.FILE
    assert fs.readlink(link.ino) == "elsewhere"
    assert InvalidateEntry(ROOT_INO, "f", f.ino) in fs.queue.sent


async def test_open_reader_keeps_its_version_then_estale(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    old, new = os.urandom(4 * CHUNK), os.urandom(4 * CHUNK)
    await mem.put(bucket_name, "f", old)
    fs = await make_fs(mem, bucket_name)
    f = fs.table.child(fs.root, "f")
    h, _ = await fs.open(f.ino, os.O_RDONLY)
    assert await fs.read(h.fh, 0, CHUNK) == old[:CHUNK]
    info = await mem.put(bucket_name, "f", new)  # replaces; the old chunks are dropped
    fs.watcher.apply(fs.root, WatchEvent("put", info))
    # The open handle still reads its version where it can (cached chunk) ...
    assert await fs.read(h.fh, 0, CHUNK) == old[:CHUNK]
    # ... and fails clearly where it cannot: never the new version's bytes.
    with pytest.raises(FsError) as e:
        await fs.read(h.fh, 2 * CHUNK, CHUNK)
    assert e.value.errno == errno.ESTALE
    await fs.release(h.fh)
    assert await read_file(fs, f.ino) == new  # a new open reads the new version
    # Deleted remotely while open: the same (a third version, none of it cached yet).
    third = os.urandom(4 * CHUNK)
    fs.watcher.apply(fs.root, WatchEvent("put", await mem.put(bucket_name, "f", third)))
    h, _ = await fs.open(f.ino, os.O_RDONLY)
    assert await fs.read(h.fh, CHUNK, CHUNK) == third[CHUNK : 2 * CHUNK]
    tomb = await mem.delete(bucket_name, "f")
    fs.watcher.apply(fs.root, WatchEvent("delete", tomb))
    assert fs.table.child(fs.root, "f") is None
    assert await fs.read(h.fh, CHUNK, CHUNK) == third[CHUNK : 2 * CHUNK]
    with pytest.raises(FsError) as e:
        await fs.read(h.fh, 3 * CHUNK, CHUNK)
    assert e.value.errno == errno.ESTALE
    await fs.release(h.fh)


async def test_remote_change_while_writing_last_close_wins(store, bucket_name, make_fs, caplog):
    fs = await make_fs(store, bucket_name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        h, node = await fs.create(ROOT_INO, "w", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
        await fs.write(h.fh, 0, b"written here")
        await store.put(bucket_name, "w", b"written elsewhere first")
        await watch_barrier(fs, store, bucket_name)  # the put's event is applied (held) now
        assert await fs.read(h.fh, 0, 100) == b"written here"  # local content wins while open
        with caplog.at_level(logging.WARNING, "objfs.fs.watcher"):
            await fs.flush(h.fh)
            await fs.release(h.fh)
        assert await stored(store, bucket_name, "w") == b"written here"
        assert "last close wins" in caplog.text
        # Open for writing but nothing written: the remote version shows after the close.
        h, _ = await fs.open(node.ino, os.O_RDWR)
        await store.put(bucket_name, "w", b"newer elsewhere")
        await watch_barrier(fs, store, bucket_name)  # it arrived while open, not after
        await fs.flush(h.fh)
        await fs.release(h.fh)
        assert node.size == len(b"newer elsewhere")
        assert await read_file(fs, node.ino) == b"newer elsewhere"
        # Deleted elsewhere while open for writing here, nothing written: it goes at close.
        h, _ = await fs.open(node.ino, os.O_RDWR)
        await store.delete(bucket_name, "w")
        await watch_barrier(fs, store, bucket_name)  # the delete arrived while open
        assert fs.table.child(fs.root, "w") is node
        await fs.release(h.fh)
        assert fs.table.child(fs.root, "w") is None
        nursery.cancel_scope.cancel()


async def test_own_overwrite_is_not_reported_as_a_remote_change(
    store, bucket_name, make_fs, caplog
):
    """The watch may report this mount's own upload before the put returns: that event is
    ours, not a version "changed elsewhere", and closing must not warn about it."""
    fs = await make_fs(store, bucket_name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        h, node = await fs.create(ROOT_INO, "f", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
        await fs.write(h.fh, 0, b"first")
        await fs.release(h.fh)
        with caplog.at_level(logging.WARNING, "objfs.fs.watcher"):
            for i in range(3):
                h, _ = await fs.open(node.ino, os.O_WRONLY)
                await fs.write(h.fh, 0, b"again %d" % i)
                await fs.flush(h.fh)
                await watch_barrier(fs, store, bucket_name)  # our put's event arrived
                await fs.release(h.fh)
        assert "last close wins" not in caplog.text
        assert await stored(store, bucket_name, "f") == b"again 2"
        nursery.cancel_scope.cancel()


async def test_broken_watch_reconciles_without_flooding(mem, bucket_name, make_fs):
    await mem.create_bucket(BucketConfig(name=bucket_name, chunk_size=CHUNK))
    for i in range(50):
        await mem.put(bucket_name, f"f{i:02}", b"x")
    fs = await make_fs(mem, bucket_name)
    for n in fs.table.walk(fs.root):
        n.lookups += 1
    backend = mem.store

    async def break_watch_and_change() -> None:
        # The watch fails; what changes before it is re-established must still arrive.
        backend._buckets[bucket_name].notify(Unavailable("connection lost"))
        await backend.put(bucket_name, "f01", b"changed")
        await backend.delete(bucket_name, "f02")
        await backend.put(bucket_name, "new", b"n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.coherence.watches[bucket_name]._following, "the watch following")
        fs.queue.sent.clear()
        await mem.bridge.call(break_watch_and_change)
        await wait_for(lambda: fs.table.child(fs.root, "new") is not None, "the reconciled changes")
        nursery.cancel_scope.cancel()
    assert fs.table.child(fs.root, "f01").size == len(b"changed")
    assert fs.table.child(fs.root, "f02") is None
    assert len([n for n in fs.root.children if n.startswith("f")]) == 49
    touched = {r.name for r in fs.queue.sent if isinstance(r, InvalidateEntry)}
    inodes = {r.ino for r in fs.queue.sent if isinstance(r, InvalidateInode)}
    f01 = fs.table.child(fs.root, "f01").ino
    assert touched == {"f02", "new"}
    assert inodes == {ROOT_INO, f01}  # nothing for the 47 unchanged files


async def test_unexpected_error_in_a_watch_restarts_it(mem, bucket_name, make_fs, caplog):
    """A bug met while applying an event must not end run_background (and so the mount):
    the watch is logged, re-established and reconciled."""
    fs = await make_fs(mem, bucket_name)
    apply = fs.watcher.apply
    failures = [RuntimeError("a bug")]

    def flaky(root, event):
        if failures and event.kind == "put":
            raise failures.pop()
        apply(root, event)

    fs.watcher.apply = flaky
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.coherence.watches[bucket_name]._following, "the watch following")
        with caplog.at_level(logging.ERROR, "objfs.fs.watcher"):
            await mem.put(bucket_name, "x", b"x")
            await wait_for(lambda: fs.table.child(fs.root, "x") is not None, "x after the restart")
        assert not failures and "a bug" in caplog.text
        nursery.cancel_scope.cancel()


async def test_bucket_list_watch(store, bucket_name, make_fs):
    fs = await make_fs(store, None)
    assert fs.bucket_list is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        await wait_for(lambda: fs.bucket_list.live, "the bucket list watch live")
        await store.create_bucket(BucketConfig(name=bucket_name, storage="memory"))
        await wait_for(lambda: fs.table.child(fs.root, bucket_name) is not None, "the new bucket")
        assert InvalidateEntry(ROOT_INO, bucket_name, 0) in fs.queue.sent
        node = fs.table.child(fs.root, bucket_name)
        node.lookups = 1
        # ls of the root needs no listing once the watch is live. Counted on the store as
        # the filesystem calls it: a backend's own polling (the memory store's watch_buckets
        # lists every 50 ms, however long this readdir takes) does not go through here.
        listed: list[None] = []
        real_list_buckets = store.list_buckets

        async def list_buckets():
            listed.append(None)
            return await real_list_buckets()

        store.list_buckets = list_buckets
        try:
            assert bucket_name in [n.name for _, n in await fs.readdir(ROOT_INO, 0)]
        finally:
            del store.list_buckets
        assert not listed
        await store.seal_bucket(bucket_name)
        await wait_for(lambda: bucket_name in fs.sealed_buckets, "the seal")
        assert not node.attrs.mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        assert InvalidateInode(node.ino, attr_only=True) in fs.queue.sent
        await store.delete_bucket(bucket_name)
        await wait_for(lambda: fs.table.child(fs.root, bucket_name) is None, "the bucket's delete")
        assert InvalidateEntry(ROOT_INO, bucket_name, node.ino) in fs.queue.sent
        nursery.cancel_scope.cancel()
