"""File data through the core: write/read round trips, copy on write, truncate, upload errors."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest
from fs_helpers import CALLER, CHUNK, read_file, stored, wait_for, write_file

from objfs.fs import FsError
from objfs.fs.inodes import ROOT_INO
from objfs.fs.values import SetAttr
from objfs.store.errors import Unavailable


def pattern(n: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (n // len(block) + 1))[:n]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
async def test_round_trip_sizes(store, bucket_name, make_fs, size):
    fs = await make_fs(store, bucket_name)
    data = pattern(size, size)
    node = await write_file(fs, "f.bin", data)
    assert await stored(store, bucket_name, "f.bin") == data
    assert fs.stat(node).size == size
    assert await read_file(fs, node.ino) == data
    # A fresh mount of the same bucket sees the same bytes.
    fs2 = await make_fs(store, bucket_name)
    again = await fs2.lookup(ROOT_INO, "f.bin")
    assert again.size == size
    assert await read_file(fs2, again.ino) == data


async def test_visible_while_written(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    handle, node = await fs.create(ROOT_INO, "w", 0o600, os.O_RDWR | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"hello")
    assert (await fs.lookup(ROOT_INO, "w")).size == 5
    assert await fs.read(handle.fh, 0, 100) == b"hello"
    assert await mem.list(bucket_name) == []  # not uploaded before close
    await fs.release(handle.fh)
    assert await stored(mem, bucket_name, "w") == b"hello"
    assert fs.stat(node).mode & 0o7777 == 0o600 & ~CALLER.umask


async def test_copy_on_write_partial_overwrite(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    data = pattern(3 * CHUNK + 5)
    node = await write_file(fs, "cow", data)
    handle, _ = await fs.open(node.ino, os.O_WRONLY)
    await fs.write(handle.fh, CHUNK + 10, b"XYZ")
    await fs.write(handle.fh, len(data), b"tail")  # append
    await fs.release(handle.fh)
    expect = data[: CHUNK + 10] + b"XYZ" + data[CHUNK + 13 :] + b"tail"
    assert await stored(store, bucket_name, "cow") == expect
    assert await read_file(fs, node.ino) == expect


async def test_truncate_up_and_down(store, bucket_name, make_fs):
    fs = await make_fs(store, bucket_name)
    data = pattern(2 * CHUNK + 100)
    node = await write_file(fs, "t", data)
    await fs.setattr(node.ino, SetAttr(size=CHUNK + 1), None, CALLER)
    assert await stored(store, bucket_name, "t") == data[: CHUNK + 1]
    await fs.setattr(node.ino, SetAttr(size=CHUNK + 50), None, CALLER)
    assert await stored(store, bucket_name, "t") == data[: CHUNK + 1] + b"\0" * 49
    assert fs.stat(node).size == CHUNK + 50
    # O_TRUNC open: no copy of the old content is needed, the result is empty.
    handle, _ = await fs.open(node.ino, os.O_WRONLY | os.O_TRUNC)
    assert node.spool is not None and node.spool.filled
    await fs.release(handle.fh)
    assert await stored(store, bucket_name, "t") == b""


async def test_shared_spool_between_handles(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    node = await write_file(fs, "s", b"0123456789")
    h1, _ = await fs.open(node.ino, os.O_RDWR)
    h2, _ = await fs.open(node.ino, os.O_RDWR)
    await fs.write(h1.fh, 0, b"AB")
    assert await fs.read(h2.fh, 0, 4) == b"AB23"
    await fs.flush(h1.fh)  # not the last writer: no upload yet
    assert await stored(mem, bucket_name, "s") == b"0123456789"
    await fs.release(h1.fh)
    await fs.write(h2.fh, 8, b"YZ")
    await fs.release(h2.fh)
    assert await stored(mem, bucket_name, "s") == b"AB234567YZ"


async def test_upload_failure_keeps_data_and_retries(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    backend = mem.store
    handle, node = await fs.create(ROOT_INO, "u", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"precious")
    backend.fail_next("put", Unavailable("server gone"))
    with pytest.raises(FsError) as e:
        await fs.fsync(handle.fh)
    assert e.value.errno == errno.EIO
    assert node.spool is not None and node.spool.dirty
    assert node.spool.path.read_bytes() == b"precious"
    backend.fail_next("put", Unavailable("server gone"))
    with pytest.raises(FsError) as e:
        await fs.flush(handle.fh)
    assert e.value.errno == errno.EIO
    await fs.release(handle.fh)  # retried here and succeeds
    assert await stored(mem, bucket_name, "u") == b"precious"
    assert node.spool is None


async def test_shutdown_reports_failed_upload(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    handle, _ = await fs.create(ROOT_INO, "late", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    await fs.write(handle.fh, 0, b"not yet")
    mem.store.fail_next("put", Unavailable("x"))
    with pytest.raises(FsError):
        await fs.release(handle.fh)
    mem.store.fail_next("put", Unavailable("x"))
    failures = await fs.shutdown()
    assert len(failures) == 1
    path, spool_file, message = failures[0]
    assert path == "/late" and "Unavailable" in message
    with open(spool_file, "rb") as f:
        assert f.read() == b"not yet"
    os.unlink(spool_file)


async def test_read_only_mount_refuses_without_store_calls(mem, bucket_name, make_fs):
    await make_fs(mem, bucket_name)
    fs = await make_fs(mem, bucket_name, read_only=True)
    before = dict(mem.store.calls)
    for op in (
        fs.create(ROOT_INO, "x", 0o644, os.O_WRONLY, CALLER),
        fs.mkdir(ROOT_INO, "d", 0o755, CALLER),
        fs.symlink(ROOT_INO, "l", "t", CALLER),
    ):
        with pytest.raises(FsError) as e:
            await op
        assert e.value.errno == errno.EROFS
    assert dict(mem.store.calls) == before


async def test_sealed_bucket_is_erofs(mem, bucket_name, make_fs):
    fs = await make_fs(mem, bucket_name)
    await mem.seal_bucket(bucket_name)
    with pytest.raises(Exception) as e:
        await fs.mkdir(ROOT_INO, "d", 0o755, CALLER)
    assert e.value.errno == errno.EROFS


async def test_unlink_during_upload_does_not_bring_the_file_back(mem, bucket_name, make_fs):
    import trio

    from objfs.store.errors import NotFound

    fs = await make_fs(mem, bucket_name)
    real_put = mem.put
    for existing in (False, True):
        if existing:
            node = await write_file(fs, "f", b"old version")
            handle, _ = await fs.open(node.ino, os.O_WRONLY)
        else:
            handle, _ = await fs.create(ROOT_INO, "f", 0o600, os.O_RDWR | os.O_CREAT, CALLER)
        await fs.write(handle.fh, 0, b"new version")
        # The upload is held at a gate until the unlink has taken the name away, so the
        # unlink lands while the put is under way however the tasks are scheduled. (The
        # unlink may then wait for the upload: it closes the spool the upload reads.)
        started, go = trio.Event(), trio.Event()

        async def gated_put(*args, started=started, go=go, **kwargs):
            started.set()
            await go.wait()
            return await real_put(*args, **kwargs)

        mem.put = gated_put
        try:
            async with trio.open_nursery() as n:
                n.start_soon(fs.release, handle.fh)
                await started.wait()
                n.start_soon(fs.unlink, ROOT_INO, "f")
                await wait_for(lambda: fs.table.child(fs.root, "f") is None, "the unlink")
                go.set()  # only now may the put reach the store
        finally:
            del mem.put
        with pytest.raises(NotFound):
            await mem.info(bucket_name, "f")
        with pytest.raises(FsError) as e:
            await fs.lookup(ROOT_INO, "f")
        assert e.value.errno == errno.ENOENT


async def test_unlinked_while_open_reads_on_until_closed(store, bucket_name, make_fs):
    from objfs.store.errors import NotFound

    fs = await make_fs(store, bucket_name)
    data = pattern(3 * CHUNK + 9, 5)
    node = await write_file(fs, "tmp", data)
    fs2 = await make_fs(store, bucket_name)  # a fresh mount: nothing of it is cached
    node = await fs2.lookup(ROOT_INO, "tmp")
    handle, _ = await fs2.open(node.ino, os.O_RDONLY)
    await fs2.unlink(ROOT_INO, "tmp")
    with pytest.raises(FsError) as e:
        await fs2.lookup(ROOT_INO, "tmp")
    assert e.value.errno == errno.ENOENT
    assert await fs2.read(handle.fh, 0, len(data)) == data  # as on a local disk
    await fs2.release(handle.fh)
    with pytest.raises(NotFound):
        await store.info(bucket_name, "tmp")
