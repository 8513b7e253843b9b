"""Durability in the core: failed uploads retried in the background, spool records, and the
recovery decisions (store, conflict copy, keep) on the memory store."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from fs_helpers import CALLER, no_connection, stored, wait_for, write_file

from objfs.fs import FsError, spool_dir, spool_record
from objfs.fs.inodes import ROOT_INO
from objfs.fs.recovery import Recovery
from objfs.fs.spool import RECORD_BEFORE_UPLOAD
from objfs.fs.spool_record import SpoolRecord
from objfs.status import collect, format_status
from objfs.store.api import ObjectMeta
from objfs.store.errors import NotFound, Unavailable


async def test_failed_close_is_stored_by_the_background_retry(mem, bucket_name, make_fs, caplog):
    fs = await make_fs(mem, bucket_name)
    fs.files.retry.first_delay = 0.01
    for _ in range(3):  # the flush, the release, and the first retry
        mem.store.fail_next("put", Unavailable("server gone"))
    handle, node = await fs.create(ROOT_INO, "u", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"precious")
    with caplog.at_level(logging.INFO, logger="objfs"):
        with pytest.raises(FsError) as e:
            await fs.flush(handle.fh)
        assert e.value.errno == errno.EIO
        with pytest.raises(FsError):
            await fs.release(handle.fh)
        [(path, size, attempts, error)] = fs.files.pending_uploads()
        assert (path, size, attempts) == ("/u", 8, 2) and "server gone" in error
        uploads = collect(fs, no_connection)["uploads"]
        assert uploads["pending"] == []  # not open any more: waiting for its retry
        assert uploads["retrying"] == [
            {"path": "/u", "size": 8, "attempts": 2, "last_error": error}
        ]
        text = format_status(collect(fs, no_connection))
        assert f"/u: 8 B to retry after 2 failed attempt(s): {error}" in text, text
        spool_path = node.spool.path
        record = spool_record.read(spool_path)
        assert record is not None and record.complete and record.synced  # survives a crash
        assert (record.bucket, record.name, record.base, record.size) == (bucket_name, "u", None, 8)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.run_background)
            await wait_for(lambda: not fs.files.pending_uploads(), "the retry storing it")
            nursery.cancel_scope.cancel()
    assert await stored(mem, bucket_name, "u") == b"precious"
    assert node.spool is None and not spool_path.exists()
    assert not spool_record.path_for(spool_path).exists()
    messages = [r.getMessage() for r in caplog.records]
    # Logged once when it started failing and once when stored, not at every attempt.
    assert len([m for m in messages if "upload of /u failed" in m]) == 1, messages
    assert len([m for m in messages if "upload of /u stored after 3" in m]) == 1, messages


async def test_a_write_after_a_failed_close_marks_the_record_incomplete(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    mem.store.fail_next("put", Unavailable("server gone"))
    handle, node = await fs.create(ROOT_INO, "w", 0o644, os.O_RDWR | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"first")
    with pytest.raises(FsError):
        await fs.fsync(handle.fh)
    assert spool_record.read(node.spool.path).complete
    await fs.write(handle.fh, 5, b" and more")  # a crash now would leave a half-written file
    assert not spool_record.read(node.spool.path).complete
    await fs.release(handle.fh)
    assert await stored(mem, bucket_name, "w") == b"first and more"


# -- recovery decisions --------------------------------------------------------------------


def dead_spool(base: Path, origin: str) -> Path:
    """A spool directory whose mount is gone (its lock released, as when a process dies)."""
    directory = spool_dir.create(base, origin)
    spool_dir.release(directory)
    return directory


def left_file(directory: Path, content: bytes, record: SpoolRecord | None) -> Path:
    path = directory / f"objfs-{len(list(directory.iterdir()))}.spool"
    path.write_bytes(content)
    if record is not None:
        spool_record.write(path, record)
    return path


async def test_recovery_stores_conflicts_and_keeps(mem, bucket_name, make_fs, tmp_path):
    fs = await make_fs(mem, bucket_name)
    await write_file(fs, "same", b"base")
    await write_file(fs, "changed", b"base")
    base_same = await mem.info(bucket_name, "same")
    base_changed = await mem.info(bucket_name, "changed")
    await mem.put(bucket_name, "changed", b"theirs")
    await mem.put(bucket_name, "taken", b"someone else's new file")
    spools = tmp_path / "spools"
    old = dead_spool(spools, "here")
    meta = ObjectMeta(headers={"X-Test": ["1"]})

    def rec(name: str, base, size: int, *, complete: bool = True) -> SpoolRecord:
        r = SpoolRecord.of(bucket_name, name, base, meta, size)
        r.complete = complete
        return r

    left_file(old, b"ours over base", rec("same", base_same, 14))
    left_file(old, b"ours, a new file", rec("new", None, 16))
    left_file(old, b"ours over base", rec("changed", base_changed, 14))
    left_file(old, b"ours, also new", rec("taken", None, 14))
    unfinished = left_file(old, b"half", rec("unfinished", None, 4, complete=False))
    unknown = left_file(old, b"no record", None)
    left_file(old, b"", None)  # opened, never written: nothing to keep
    other_bucket = left_file(old, b"x", SpoolRecord.of("elsewhere", "x", None, meta, 1))
    torn = rec("torn", None, 1)
    torn.boot_id = "another boot"
    torn_path = left_file(old, b"t", torn)
    elsewhere = dead_spool(spools, "another store")
    foreign = left_file(elsewhere, b"f", rec("foreign", None, 1))

    own = spool_dir.create(spools, "here")  # this mount's own directory: never touched
    mine = left_file(own, b"mine", rec("mine", None, 4))
    result = await Recovery(mem, spools, own, "here", bucket=bucket_name).run()

    assert await stored(mem, bucket_name, "same") == b"ours over base"
    assert (await mem.info(bucket_name, "same")).headers["X-Test"] == ["1"]
    assert await stored(mem, bucket_name, "new") == b"ours, a new file"
    assert await stored(mem, bucket_name, "changed") == b"theirs"
    assert await stored(mem, bucket_name, "taken") == b"someone else's new file"
    copies = {c[1]: c[2] for c in result.conflicts}
    assert sorted(copies) == ["changed", "taken"]
    assert copies["changed"].startswith("changed.objfs-conflict-")
    assert await stored(mem, bucket_name, copies["changed"]) == b"ours over base"
    assert await stored(mem, bucket_name, copies["taken"]) == b"ours, also new"
    for name in ("unfinished", "torn", "x", "mine", "foreign"):
        with pytest.raises(NotFound):
            await mem.info(bucket_name, name)
    kept = {p for p, _ in result.kept}
    assert kept == {unfinished, unknown, other_bucket, torn_path}
    for path in (unfinished, unknown, other_bucket, torn_path, mine, foreign):
        assert path.exists()
    assert sorted(p.name for p in old.glob("objfs-*.spool")) == sorted(p.name for p in kept)
    spool_dir.remove(own)


async def test_recovery_of_a_stored_put_does_not_copy_it(mem, bucket_name, make_fs, tmp_path):
    """The mount died after its put landed but before it heard the ack: nothing to do."""
    fs = await make_fs(mem, bucket_name)
    await write_file(fs, "f", b"old")
    base = await mem.info(bucket_name, "f")
    await mem.put(bucket_name, "f", b"new content")  # the put that did land
    spools = tmp_path / "spools"
    old = dead_spool(spools, "o")
    left_file(old, b"new content", SpoolRecord.of(bucket_name, "f", base, ObjectMeta(), 11))
    own = spool_dir.create(spools, "o")
    result = await Recovery(mem, spools, own, "o", bucket=bucket_name).run()
    assert result.conflicts == [] and result.kept == []
    assert [i.name for i in await mem.list(bucket_name)] == ["f"]
    assert not old.exists()
    spool_dir.remove(own)


async def test_recovery_skips_a_directory_whose_lock_is_held(mem, bucket_name, make_fs, tmp_path):
    """Its pid is gone (or reused: both are ours here), but a live process holds its lock."""
    await make_fs(mem, bucket_name)
    spools = tmp_path / "spools"
    busy = dead_spool(spools, "o")
    path = left_file(busy, b"in use", SpoolRecord.of(bucket_name, "b", None, ObjectMeta(), 6))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(busy / spool_dir.LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        own = spool_dir.create(spools, "o")
        result = await Recovery(mem, spools, own, "o", bucket=bucket_name).run()
        assert result.stored == [] and path.exists()
        with pytest.raises(NotFound):
            await mem.info(bucket_name, "b")
    finally:
        holder.kill()
        holder.wait()
    result = await Recovery(mem, spools, own, "o", bucket=bucket_name).run()  # its holder is gone
    assert result.stored == [(bucket_name, "b", 6)] and not busy.exists()
    assert await stored(mem, bucket_name, "b") == b"in use"
    spool_dir.remove(own)


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


async def test_a_read_waiting_behind_the_last_upload_reads_the_stored_version(
    mem, bucket_name, make_fs
):
    """The last close's upload holds the spool lock; a read waiting for it must not find the
    spool closed under it (it failed with 'I/O operation on closed file')."""
    fs = await make_fs(mem, bucket_name)
    writer, node = await fs.create(ROOT_INO, "r", 0o644, os.O_RDWR | os.O_CREAT, CALLER)
    await fs.write(writer.fh, 0, b"the content")
    reader, _ = await fs.open(node.ino, os.O_RDONLY)
    spool = node.spool
    mem.store.delay = 0.05  # the upload's put takes a while: the read queues behind it
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.release, writer.fh)
        await wait_for(lambda: spool.lock.locked(), "the upload holding the spool")

        async def read() -> None:
            got.append(await fs.read(reader.fh, 0, 100))

        nursery.start_soon(read)
    mem.store.delay = 0.0
    assert got == [b"the content"]
    assert node.spool is None
    await fs.release(reader.fh)


async def test_recovery_keeps_a_file_whose_bucket_is_gone_and_goes_on(
    mem, bucket_name, make_fs, tmp_path
):
    await make_fs(mem, bucket_name)
    spools = tmp_path / "spools"
    old = dead_spool(spools, "o")
    gone = left_file(old, b"g", SpoolRecord.of("gone-bucket", "g", None, ObjectMeta(), 1))
    left_file(old, b"kept", SpoolRecord.of(bucket_name, "k", None, ObjectMeta(), 4))
    own = spool_dir.create(spools, "o")
    result = await Recovery(mem, spools, own, "o").run()  # a mount of every bucket
    assert [p for p, _ in result.kept] == [gone] and gone.exists()
    assert result.stored == [(bucket_name, "k", 4)]
    assert await stored(mem, bucket_name, "k") == b"kept"
    spool_dir.remove(own)


@pytest.mark.parametrize("size", [100, RECORD_BEFORE_UPLOAD])
async def test_a_large_spool_is_recorded_before_its_upload(mem, bucket_name, make_fs, size):
    """A mount killed during a long upload leaves a record recovery acts on; a small file's
    record is written only if its upload fails (it costs as much as a small put)."""
    fs = await make_fs(mem, bucket_name)
    handle, node = await fs.create(ROOT_INO, "big", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"x" * size)
    spool = node.spool
    mem.store.delay = 0.05
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.release, handle.fh)
        await wait_for(lambda: spool.lock.locked(), "the upload started")
        record = spool_record.read(spool.path)
        if size >= RECORD_BEFORE_UPLOAD:
            assert record is not None and record.complete and record.size == size
        else:
            assert record is None
    mem.store.delay = 0.0
    assert not spool_record.path_for(spool.path).exists()  # gone with the stored spool
