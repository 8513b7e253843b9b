"""The store contract: what every ObjectStore backend does, checked on each of them.

Every test takes the ``store`` fixture (tests/conftest.py), so it runs against the in-memory
store and against the NATS backend on a real nats-server, both seen from trio through the
bridge exactly as the filesystem sees them. A behaviour that differs between the two is a bug
in one of them: the upper layers are tested on the memory store and must not be surprised by
NATS.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from objfs.bridge import Bridge, TrioStore
from objfs.store.api import DEFAULT_CHUNK_SIZE, BucketConfig, Link, ObjectInfo, ObjectMeta
from objfs.store.errors import (
    Corrupt,
    Exists,
    InvalidLink,
    InvalidName,
    NameTooLong,
    NoSpace,
    NotFound,
    ReadOnly,
    StoreError,
)
from objfs.store.names import MAX_NAME_BYTES

WAIT = 60.0
"""Upper bound for any single wait on a watch event (a hang fails, it does not block CI)."""

MakeBucket = Callable[..., Awaitable[str]]


def digest_of(data: bytes) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def chunks_for(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


async def read_all(store: TrioStore, info: ObjectInfo, window: int = 64) -> bytes:
    out = bytearray()
    async for batch in store.read_stream(info, window=window):
        assert isinstance(batch, list) and batch, "batches are non-empty lists of chunks"
        for chunk in batch:
            out += chunk
    return bytes(out)


def check_error(exc: pytest.ExceptionInfo[StoreError], code: int) -> None:
    assert exc.value.errno == code, f"{type(exc.value).__name__} carries errno {exc.value.errno}"


@pytest.fixture
async def make_bucket(store: TrioStore, bucket_name: str) -> AsyncIterator[MakeBucket]:
    """Create buckets for this test (names derived from ``bucket_name``); delete them after."""
    made: list[str] = []

    async def make(suffix: str = "", **config: Any) -> str:
        name = bucket_name + suffix
        config.setdefault("storage", "memory")
        await store.create_bucket(BucketConfig(name, **config))
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(NotFound):
            await store.delete_bucket(name)


@pytest.fixture
async def bucket(make_bucket: MakeBucket) -> str:
    return await make_bucket()


# -- data round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1024, DEFAULT_CHUNK_SIZE])
async def test_sizes_around_chunk_boundaries(
    store: TrioStore, make_bucket: MakeBucket, chunk_size: int
) -> None:
    b = await make_bucket(chunk_size=chunk_size)
    for size in (0, 1, chunk_size - 1, chunk_size, chunk_size + 1, 2 * chunk_size + 7):
        data = os.urandom(size)
        name = f"obj-{size}"
        info = await store.put(b, name, data)
        assert (info.bucket, info.name, info.size) == (b, name, size)
        assert info.chunks == chunks_for(size, chunk_size)
        assert info.digest == digest_of(data)
        assert not info.deleted and info.link is None and info.nuid
        again = await store.info(b, name)
        assert (again.size, again.digest, again.nuid, again.revision) == (
            size,
            info.digest,
            info.nuid,
            info.revision,
        )
        assert await read_all(store, again) == data
        lay = await store.layout(again)
        assert lay.chunks == info.chunks and lay.size == size
        assert list(lay.offsets) == [min(i * chunk_size, size) for i in range(info.chunks)] + [size]
        assert list(lay.seqs) == sorted(set(lay.seqs))


async def test_64_mib_object(store: TrioStore, bucket: str) -> None:
    data = os.urandom(64 * 1024 * 1024)
    info = await store.put(bucket, "big.bin", data)
    assert info.size == len(data)
    assert info.chunks == len(data) // DEFAULT_CHUNK_SIZE
    assert info.digest == digest_of(data)
    got = await read_all(store, info)
    assert len(got) == len(data) and got == data
    lay = await store.layout(info)
    middle = await store.read_chunks(lay, 300, 3)
    assert b"".join(middle) == data[300 * DEFAULT_CHUNK_SIZE : 303 * DEFAULT_CHUNK_SIZE]


async def test_put_explicit_chunk_size(store: TrioStore, bucket: str) -> None:
    data = os.urandom(2600)
    info = await store.put(bucket, "c", data, chunk_size=500)
    assert info.chunks == 6
    lay = await store.layout(info)
    assert list(lay.offsets) == [0, 500, 1000, 1500, 2000, 2500, 2600]
    assert await read_all(store, info) == data


async def test_put_from_file_object(
    store: TrioStore, make_bucket: MakeBucket, tmp_path: Path
) -> None:
    b = await make_bucket(chunk_size=4096)
    prefix, data = b"skip me", os.urandom(3 * 4096 + 100)
    path = tmp_path / "src.bin"
    path.write_bytes(prefix + data)
    with path.open("rb") as f:
        f.seek(len(prefix))  # the put reads from the current position
        info = await store.put(b, "from-file", f)
    assert info.size == len(data) and info.digest == digest_of(data)
    assert await read_all(store, info) == data
    sink = io.BytesIO()
    got = await store.get(b, "from-file", sink)
    assert sink.getvalue() == data and got.nuid == info.nuid


async def test_read_chunks_ranges_and_layout(store: TrioStore, make_bucket: MakeBucket) -> None:
    b = await make_bucket(chunk_size=1000)
    data = os.urandom(9500)
    info = await store.put(b, "ranges", data)
    lay = await store.layout(info)
    assert lay.nuid == info.nuid and lay.bucket == b
    assert list(lay.offsets) == [*range(0, 9001, 1000), 9500]
    assert len(lay.seqs) == 10
    assert lay.chunk_at(0) == 0 and lay.chunk_at(999) == 0 and lay.chunk_at(1000) == 1
    assert lay.chunk_at(9499) == 9 and lay.chunk_at(9500) == 10
    for first, count in [(0, 1), (3, 4), (9, 1), (8, 5), (0, 100), (5, 0), (10, 1), (12, 3)]:
        got = await store.read_chunks(lay, first, count)
        last = min(first + count, 10)
        assert len(got) == max(0, last - first)
        for i, chunk in enumerate(got, start=first):
            assert chunk == data[lay.offsets[i] : lay.offsets[i + 1]]


async def test_read_stream_small_window(store: TrioStore, make_bucket: MakeBucket) -> None:
    b = await make_bucket(chunk_size=100)
    data = os.urandom(1050)
    info = await store.put(b, "w", data)
    assert await read_all(store, info, window=3) == data
    assert await read_all(store, info, window=1) == data


async def test_concurrent_readers_of_one_chunk(store: TrioStore, make_bucket: MakeBucket) -> None:
    b = await make_bucket(chunk_size=4096)
    data = os.urandom(5 * 4096)
    info = await store.put(b, "shared", data)
    lay = await store.layout(info)
    results: list[list[bytes] | None] = [None] * 20

    async def reader(i: int) -> None:
        results[i] = await store.read_chunks(lay, 2, 1)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(reader, i)
    assert results == [[data[2 * 4096 : 3 * 4096]]] * 20


async def test_replace_is_atomic_and_purges_old_chunks(store: TrioStore, bucket: str) -> None:
    first = await store.put(bucket, "f", b"version one")
    old_layout = await store.layout(first)
    second = await store.put(bucket, "f", b"version two!")
    assert second.nuid != first.nuid and second.revision > first.revision
    assert await read_all(store, await store.info(bucket, "f")) == b"version two!"
    with pytest.raises((Corrupt, NotFound)):
        await store.read_chunks(old_layout, 0, 1)
    assert [i.name for i in await store.list(bucket)] == ["f"]


async def test_many_small_objects_then_list(store: TrioStore, bucket: str) -> None:
    expected = {f"dir{i % 7}/file-{i:03d}": os.urandom(i % 50) for i in range(300)}
    for name, data in expected.items():
        await store.put(bucket, name, data)
    listed = await store.list(bucket)
    assert sorted(i.name for i in listed) == sorted(expected)
    assert {i.name: i.size for i in listed} == {n: len(d) for n, d in expected.items()}
    assert {i.name: i.digest for i in listed} == {n: digest_of(d) for n, d in expected.items()}
    assert (await store.bucket_status(bucket)).objects == 300


async def test_unicode_names(store: TrioStore, bucket: str) -> None:
    names = ["emoji 😀🚀.txt", "中文/文件名.txt", "with  spaces ", "a/b/c/d", "ünïcödé", "日本語"]
    for n in names:
        await store.put(bucket, n, n.encode())
    assert sorted(i.name for i in await store.list(bucket)) == sorted(names)
    for n in names:
        info = await store.info(bucket, n)
        assert info.name == n
        assert await read_all(store, info) == n.encode()


async def test_name_length_limit(store: TrioStore, bucket: str) -> None:
    longest = "a" * MAX_NAME_BYTES
    info = await store.put(bucket, longest, b"x")
    assert (await store.info(bucket, longest)).name == longest and info.size == 1
    multibyte = "é" * (MAX_NAME_BYTES // 2)  # two bytes each: exactly at the limit
    await store.put(bucket, multibyte, b"y")
    for too_long in ("a" * (MAX_NAME_BYTES + 1), multibyte + "a"):
        with pytest.raises(NameTooLong) as exc:
            await store.put(bucket, too_long, b"z")
        check_error(exc, errno.ENAMETOOLONG)
    with pytest.raises(NameTooLong) as exc:
        await store.info(bucket, "b" * (MAX_NAME_BYTES + 1))
    check_error(exc, errno.ENAMETOOLONG)
    assert sorted(i.name for i in await store.list(bucket)) == sorted([longest, multibyte])


async def test_empty_bucket_lists_nothing(store: TrioStore, bucket: str) -> None:
    assert await store.list(bucket) == []
    assert await store.list(bucket, deleted=True) == []
    status = await store.bucket_status(bucket)
    assert status.objects == 0 and not status.sealed


# -- metadata, tombstones, rename, links -------------------------------------------------


async def test_put_meta_and_update_meta_round_trip(store: TrioStore, bucket: str) -> None:
    meta = ObjectMeta(
        description="a file",
        headers={"Objfs-Mode": ["0644"], "X-Multi": ["one", "two", "three"]},
        metadata={"owner": "me", "ünï": "cödé"},
    )
    info = await store.put(bucket, "m", b"payload", meta=meta)
    got = await store.info(bucket, "m")
    assert (got.description, got.headers, got.metadata) == (
        meta.description,
        meta.headers,
        meta.metadata,
    )
    assert got.meta == meta
    new_meta = ObjectMeta(
        description="changed", headers={"X-Multi": ["b", "a", "b"]}, metadata={"k": "v"}
    )
    updated = await store.update_meta(bucket, "m", new_meta)
    assert updated.revision > info.revision
    got = await store.info(bucket, "m")
    assert got.meta == new_meta
    assert (got.nuid, got.digest, got.size) == (info.nuid, info.digest, info.size)
    assert await read_all(store, got) == b"payload"
    # A put replaces the meta as a whole.
    await store.put(bucket, "m", b"again")
    assert (await store.info(bucket, "m")).meta == ObjectMeta()


async def test_update_meta_of_missing_object(store: TrioStore, bucket: str) -> None:
    with pytest.raises(NotFound) as exc:
        await store.update_meta(bucket, "nope", ObjectMeta(description="x"))
    check_error(exc, errno.ENOENT)


async def test_delete_leaves_a_tombstone(store: TrioStore, bucket: str) -> None:
    info = await store.put(bucket, "gone", b"some bytes", meta=ObjectMeta(description="d"))
    await store.put(bucket, "kept", b"k")
    tomb = await store.delete(bucket, "gone")
    assert tomb.deleted and tomb.size == 0 and tomb.chunks == 0 and tomb.nuid == info.nuid
    assert tomb.revision > info.revision
    with pytest.raises(NotFound) as exc:
        await store.info(bucket, "gone")
    check_error(exc, errno.ENOENT)
    shown = await store.info(bucket, "gone", deleted=True)
    assert shown.deleted and shown.size == 0 and shown.chunks == 0 and shown.nuid == info.nuid
    assert [i.name for i in await store.list(bucket)] == ["kept"]
    with_deleted = {i.name: i.deleted for i in await store.list(bucket, deleted=True)}
    assert with_deleted == {"gone": True, "kept": False}
    assert (await store.bucket_status(bucket)).objects == 1
    with pytest.raises(NotFound):
        await store.delete(bucket, "gone")
    again = await store.put(bucket, "gone", b"reborn")
    assert not again.deleted and await read_all(store, again) == b"reborn"


async def test_rename_keeps_data_and_meta(store: TrioStore, make_bucket: MakeBucket) -> None:
    b = await make_bucket(chunk_size=1024)
    data = os.urandom(5000)
    meta = ObjectMeta("desc", {"X-H": ["1", "2"]}, {"m": "v"})
    info = await store.put(b, "old/name", data, meta=meta)
    moved = await store.rename(b, "old/name", "new/name")
    assert moved.name == "new/name" and moved.nuid == info.nuid
    assert moved.revision > info.revision and moved.mtime_ns == info.mtime_ns
    got = await store.info(b, "new/name")
    assert (got.nuid, got.size, got.chunks, got.digest) == (
        info.nuid,
        info.size,
        info.chunks,
        info.digest,
    )
    assert got.meta == meta
    assert await read_all(store, got) == data
    with pytest.raises(NotFound):
        await store.info(b, "old/name")
    tomb = await store.info(b, "old/name", deleted=True)
    assert tomb.deleted and tomb.size == 0 and tomb.revision > moved.revision
    assert [i.name for i in await store.list(b)] == ["new/name"]
    # The tombstone shares the nuid: deleting the new name later must still work.
    await store.delete(b, "new/name")
    assert await store.list(b) == []


async def test_rename_onto_live_object(store: TrioStore, bucket: str) -> None:
    src = await store.put(bucket, "src", b"source data")
    dst = await store.put(bucket, "dst", b"destination data")
    dst_layout = await store.layout(dst)
    with pytest.raises(Exists) as exc:
        await store.rename(bucket, "src", "dst")
    check_error(exc, errno.EEXIST)
    assert await read_all(store, await store.info(bucket, "dst")) == b"destination data"
    assert await read_all(store, await store.info(bucket, "src")) == b"source data"
    moved = await store.rename(bucket, "src", "dst", replace=True)
    assert moved.nuid == src.nuid
    got = await store.info(bucket, "dst")
    assert got.nuid == src.nuid and await read_all(store, got) == b"source data"
    assert [i.name for i in await store.list(bucket)] == ["dst"]
    with pytest.raises((Corrupt, NotFound)):
        await store.read_chunks(dst_layout, 0, 1)


async def test_rename_onto_tombstone(store: TrioStore, bucket: str) -> None:
    await store.put(bucket, "a", b"a")
    await store.put(bucket, "b", b"b")
    await store.delete(bucket, "b")
    await store.rename(bucket, "a", "b")
    assert await read_all(store, await store.info(bucket, "b")) == b"a"


async def test_rename_missing(store: TrioStore, bucket: str) -> None:
    with pytest.raises(NotFound) as exc:
        await store.rename(bucket, "nope", "other")
    check_error(exc, errno.ENOENT)


async def test_links(store: TrioStore, make_bucket: MakeBucket) -> None:
    b = await make_bucket()
    other = await make_bucket("-o")
    await store.put(b, "target", b"target data")
    await store.put(other, "far", b"far data")
    link = await store.add_link(b, "ln", b, "target")
    assert link.link == Link(b, "target") and link.is_link and not link.deleted
    assert (await store.info(b, "ln")).link == Link(b, "target")
    resolved = await store.resolve(b, "ln")
    assert resolved.name == "target" and await read_all(store, resolved) == b"target data"
    sink = io.BytesIO()
    await store.get(b, "ln", sink)
    assert sink.getvalue() == b"target data"
    # A link may replace a link, also across buckets.
    await store.add_link(b, "ln", other, "far")
    assert (await store.info(b, "ln")).link == Link(other, "far")
    assert await read_all(store, await store.resolve(b, "ln")) == b"far data"
    blink = await store.add_bucket_link(b, "to-other", other)
    assert blink.link == Link(other) and blink.link.is_bucket_link
    # A link over an object is refused.
    with pytest.raises(Exists) as exc:
        await store.add_link(b, "target", other, "far")
    check_error(exc, errno.EEXIST)
    # No link to a link.
    with pytest.raises(InvalidLink) as ilexc:
        await store.add_link(b, "ln2", b, "ln")
    check_error(ilexc, errno.EINVAL)
    # No link to a missing or deleted object, nor to a missing bucket.
    with pytest.raises(NotFound) as nfexc:
        await store.add_link(b, "ln3", b, "missing")
    check_error(nfexc, errno.ENOENT)
    await store.delete(other, "far")
    with pytest.raises(NotFound):
        await store.add_link(b, "ln4", other, "far")
    with pytest.raises(NotFound):
        await store.add_bucket_link(b, "ln5", b + "-nobucket")
    names = sorted(i.name for i in await store.list(b))
    assert names == ["ln", "target", "to-other"]
    # Deleting a link leaves its target alone.
    await store.delete(b, "ln")
    assert await read_all(store, await store.info(b, "target")) == b"target data"


# -- errors --------------------------------------------------------------------------------


async def test_not_found_errors(store: TrioStore, bucket: str) -> None:
    missing_bucket = bucket + "-missing"
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.info(bucket, "nope"),
        lambda: store.delete(bucket, "nope"),
        lambda: store.rename(bucket, "nope", "x"),
        lambda: store.info(missing_bucket, "x"),
        lambda: store.list(missing_bucket),
        lambda: store.put(missing_bucket, "x", b"data"),
        lambda: store.bucket_status(missing_bucket),
        lambda: store.delete_bucket(missing_bucket),
        lambda: store.update_bucket(BucketConfig(missing_bucket)),
        lambda: store.seal_bucket(missing_bucket),
    ]
    for call in calls:
        with pytest.raises(NotFound) as exc:
            await call()
        check_error(exc, errno.ENOENT)


async def test_exists_errors(store: TrioStore, bucket: str) -> None:
    with pytest.raises(Exists) as exc:
        await store.create_bucket(BucketConfig(bucket, storage="memory"))
    check_error(exc, errno.EEXIST)


async def test_if_revision(store: TrioStore, bucket: str) -> None:
    first = await store.put(bucket, "r", b"one", if_revision=0)
    second = await store.put(bucket, "r", b"two", if_revision=first.revision)
    assert second.revision > first.revision
    size_before = (await store.bucket_status(bucket)).size
    for stale in (0, first.revision):
        with pytest.raises(Exists) as exc:
            await store.put(bucket, "r", os.urandom(300_000), if_revision=stale)
        check_error(exc, errno.EEXIST)
    # Nothing left behind: same object, same stored bytes.
    current = await store.info(bucket, "r")
    assert (current.nuid, current.revision) == (second.nuid, second.revision)
    assert await read_all(store, current) == b"two"
    assert (await store.bucket_status(bucket)).size == size_before
    with pytest.raises(Exists):
        await store.put(bucket, "fresh", b"x", if_revision=second.revision)
    assert [i.name for i in await store.list(bucket)] == ["r"]


async def test_exclusive_create_race(store: TrioStore, bucket: str) -> None:
    """Two clients create one name with ``if_revision=0`` at once: exactly one wins (also over
    a tombstone: a deleted name is free again)."""
    for trial in range(6):
        name = f"lock-{trial % 3}"
        if trial >= 3:
            await store.delete(bucket, name)  # the name is a tombstone now
        results: list[ObjectInfo | StoreError] = []

        async def claim(
            payload: bytes, results: list[ObjectInfo | StoreError] = results, name: str = name
        ) -> None:
            try:
                results.append(await store.put(bucket, name, payload, if_revision=0))
            except Exists as e:
                results.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(claim, b"A")
            nursery.start_soon(claim, b"B")
        won = [r for r in results if isinstance(r, ObjectInfo)]
        assert len(won) == 1 and len(results) == 2, results
        lost = next(r for r in results if not isinstance(r, ObjectInfo))
        assert lost.errno == errno.EEXIST
        current = await store.info(bucket, name)
        assert current.nuid == won[0].nuid
        assert await read_all(store, current) in (b"A", b"B")


async def test_bucket_create_race(store: TrioStore, bucket_name: str) -> None:
    """Two clients create one bucket at once (mkdir of a bucket): exactly one succeeds."""
    for trial in range(3):
        name = f"{bucket_name}-{trial}"
        outcomes: list[str] = []

        async def create(name: str = name, outcomes: list[str] = outcomes) -> None:
            try:
                await store.create_bucket(BucketConfig(name, storage="memory"))
                outcomes.append("created")
            except Exists:
                outcomes.append("exists")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            nursery.start_soon(create)
        try:
            assert sorted(outcomes) == ["created", "exists"]
            assert (await store.bucket_status(name)).config.metadata == {}
        finally:
            await store.delete_bucket(name)


def lose_next_ack(store: TrioStore, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """The next ``what`` ("put": its meta publish) is carried out, and its answer lost: the
    memory store's ``fail_after``; on NATS the meta publish raises Timeout once it is stored
    (what a connection lost before the ack looks like, once every retry is spent)."""
    from objfs.store.errors import Timeout
    from objfs.store.memory import MemoryObjectStore

    backend = store.store
    if isinstance(backend, MemoryObjectStore):
        backend.fail_after(what, Timeout("injected: answer lost"))
        return
    from objfs.store.nats_store import NatsObjectStore

    assert isinstance(backend, NatsObjectStore)
    real = backend.js.publish
    fired = False

    async def publish(subject: str, payload: bytes, *args: Any, **kwargs: Any) -> int:
        nonlocal fired
        seq = await real(subject, payload, *args, **kwargs)
        if ".M." in subject and not fired:
            fired = True
            raise Timeout(f"injected: ack of {subject} lost")
        return seq

    monkeypatch.setattr(backend.js, "publish", publish)


async def test_put_whose_answer_was_lost_keeps_the_object(
    store: TrioStore, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put stored, its acknowledgement lost: the name holds a whole object afterwards,
    the new one (whether the put reported success or the error), never purged chunks."""
    await store.put(bucket, "f", os.urandom(300_000))
    data = os.urandom(3 * DEFAULT_CHUNK_SIZE + 5)
    lose_next_ack(store, monkeypatch, "put")
    with contextlib.suppress(StoreError):
        await store.put(bucket, "f", data)
    monkeypatch.undo()
    current = await store.info(bucket, "f")
    assert current.digest == digest_of(data)
    assert await read_all(store, current) == data


async def test_sealed_bucket_is_read_only(store: TrioStore, bucket: str) -> None:
    info = await store.put(bucket, "a", b"sealed data")
    await store.put(bucket, "b", b"b")
    status = await store.seal_bucket(bucket)
    assert status.sealed
    assert (await store.bucket_status(bucket)).sealed
    writes: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.put(bucket, "c", b"new"),
        lambda: store.put(bucket, "a", b"overwrite"),
        lambda: store.delete(bucket, "a"),
        lambda: store.rename(bucket, "a", "z"),
        lambda: store.update_meta(bucket, "a", ObjectMeta(description="x")),
        lambda: store.add_link(bucket, "ln", bucket, "a"),
    ]
    for write in writes:
        with pytest.raises(ReadOnly) as exc:
            await write()
        check_error(exc, errno.EROFS)
    assert await read_all(store, await store.info(bucket, "a")) == b"sealed data"
    assert sorted(i.name for i in await store.list(bucket)) == ["a", "b"]
    lay = await store.layout(info)
    assert await store.read_chunks(lay, 0, 1) == [b"sealed data"]
    with pytest.raises(ReadOnly) as exc:
        await store.update_bucket(BucketConfig(bucket, description="x", storage="memory"))
    check_error(exc, errno.EROFS)


async def test_max_bytes_gives_no_space(store: TrioStore, make_bucket: MakeBucket) -> None:
    b = await make_bucket(max_bytes=100_000)
    small = os.urandom(20_000)
    await store.put(b, "small", small)
    size_before = (await store.bucket_status(b)).size
    with pytest.raises(NoSpace) as exc:
        await store.put(b, "big", os.urandom(200_000))
    check_error(exc, errno.ENOSPC)
    # Many chunks, the first ones fit: the failed put must not leave them behind.
    with pytest.raises(NoSpace):
        await store.put(b, "big2", os.urandom(150_000), chunk_size=10_000)
    assert [i.name for i in await store.list(b)] == ["small"]
    assert await read_all(store, await store.info(b, "small")) == small
    assert (await store.bucket_status(b)).size == size_before
    await store.put(b, "fits", os.urandom(10_000))


async def test_invalid_names(store: TrioStore, bucket: str) -> None:
    for bad in ("has space", "dot.ted", "star*", "", "slash/ed"):
        with pytest.raises(InvalidName) as exc:
            await store.create_bucket(BucketConfig(bad, storage="memory"))
        check_error(exc, errno.EINVAL)
    for call in (
        lambda: store.put(bucket, "", b"x"),
        lambda: store.info(bucket, ""),
        lambda: store.info("bad bucket", "x"),
    ):
        with pytest.raises(InvalidName) as exc:
            await call()
        check_error(exc, errno.EINVAL)


# -- buckets -------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["memory", "file"], ids=["ram", "disk"])
async def test_bucket_lifecycle(store: TrioStore, bucket_name: str, storage: str) -> None:
    config = BucketConfig(
        bucket_name,
        description="a bucket",
        chunk_size=1000,
        max_bytes=10_000_000,
        replicas=1,
        storage=storage,  # type: ignore[arg-type]
        compression=storage == "file",
        ttl=3600.0,
        metadata={"purpose": "test"},
    )
    try:
        created = await store.create_bucket(config)
        for status in (created, await store.bucket_status(bucket_name)):
            c = status.config
            assert status.name == bucket_name and not status.sealed
            assert (c.description, c.max_bytes, c.replicas, c.storage) == (
                "a bucket",
                10_000_000,
                1,
                storage,
            )
            assert c.compression == (storage == "file") and c.ttl == 3600.0
            assert c.chunk_size == 1000
            assert c.metadata.get("purpose") == "test"
        data = os.urandom(5000)
        assert (await store.put(bucket_name, "x", data)).chunks == 5
        await store.put(bucket_name, "y", b"y")
        await store.delete(bucket_name, "y")
        status = await store.bucket_status(bucket_name)
        assert status.objects == 1 and status.size >= len(data)

        updated = await store.update_bucket(
            BucketConfig(
                bucket_name,
                description="changed",
                chunk_size=2000,
                max_bytes=20_000_000,
                storage=storage,  # type: ignore[arg-type]
                compression=storage == "file",
                ttl=7200.0,
            )
        )
        for status in (updated, await store.bucket_status(bucket_name)):
            c = status.config
            assert (c.description, c.max_bytes, c.ttl, c.storage) == (
                "changed",
                20_000_000,
                7200.0,
                storage,
            )
        assert await read_all(store, await store.info(bucket_name, "x")) == data
        assert (await store.put(bucket_name, "z", data)).chunks == 3  # the new chunk size

        listed = {s.name: s for s in await store.list_buckets()}
        assert bucket_name in listed
        assert listed[bucket_name].config.description == "changed"
        assert listed[bucket_name].objects == 2
    finally:
        await store.delete_bucket(bucket_name)
    with pytest.raises(NotFound):
        await store.bucket_status(bucket_name)
    assert bucket_name not in {s.name for s in await store.list_buckets()}


async def test_delete_bucket_with_objects(store: TrioStore, bucket_name: str) -> None:
    await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
    await store.put(bucket_name, "a", b"a")
    await store.delete_bucket(bucket_name)
    with pytest.raises(NotFound):
        await store.info(bucket_name, "a")
    # The name can be used again, and starts empty.
    await store.create_bucket(BucketConfig(bucket_name, storage="memory"))
    try:
        assert await store.list(bucket_name, deleted=True) == []
    finally:
        await store.delete_bucket(bucket_name)


async def test_list_buckets_without_buckets(
    store: TrioStore, request: pytest.FixtureRequest
) -> None:
    """On a server (or memory store) that holds no bucket at all, the list is empty."""
    if store.store.__class__.__name__ == "MemoryObjectStore":
        from objfs.store.memory import MemoryObjectStore

        async def make() -> Any:
            return MemoryObjectStore()
    else:
        from objfs.store.nats_store import connect

        srv = request.getfixturevalue("private_server")

        async def make() -> Any:
            return await connect([srv.url], timeout=5.0)

    bridge: Bridge = store.bridge
    fresh = TrioStore(await bridge.call(make), bridge)
    try:
        assert await fresh.list_buckets() == []
    finally:
        await bridge.call(fresh.store.close)


# -- watch ---------------------------------------------------------------------------------


class Watcher:
    """Consumes ``store.watch(bucket)`` in a nursery task; ``next()`` waits, bounded."""

    def __init__(self, store: TrioStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket
        self.send, self.recv = trio.open_memory_channel[Any](1000)

    async def run(self) -> None:
        async with self.send:
            async for event in self.store.watch(self.bucket):
                await self.send.send(event)

    async def next(self) -> tuple[str, str | None, bool]:
        with trio.fail_after(WAIT):
            ev = await self.recv.receive()
        info = ev.info
        return ev.kind, info.name if info else None, bool(info and info.deleted)

    async def until_snapshot_end(self) -> list[tuple[str, str | None, bool]]:
        seen = []
        while (ev := await self.next())[0] != "snapshot_end":
            seen.append(ev)
        return seen


async def test_watch_snapshot_then_live_changes(store: TrioStore, bucket: str) -> None:
    await store.put(bucket, "a", b"a")
    await store.put(bucket, "b", b"b")
    await store.put(bucket, "dead", b"x")
    await store.delete(bucket, "dead")
    await store.put(bucket, "a", b"a2")  # snapshot shows the latest version only
    w = Watcher(store, bucket)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run)
        snapshot = await w.until_snapshot_end()
        assert sorted(snapshot) == [("put", "a", False), ("put", "b", False)]

        await store.put(bucket, "c", b"c")
        assert await w.next() == ("put", "c", False)
        await store.update_meta(bucket, "c", ObjectMeta(description="new"))
        assert await w.next() == ("put", "c", False)
        await store.delete(bucket, "a")
        assert await w.next() == ("delete", "a", True)
        await store.rename(bucket, "b", "renamed")
        # The old name goes before the new one appears (as a NATS watch infers a rename).
        assert await w.next() == ("delete", "b", True)
        assert await w.next() == ("put", "renamed", False)
        await store.add_link(bucket, "ln", bucket, "c")
        assert await w.next() == ("put", "ln", False)
        nursery.cancel_scope.cancel()


async def test_watch_empty_bucket(store: TrioStore, bucket: str) -> None:
    w = Watcher(store, bucket)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run)
        assert await w.until_snapshot_end() == []
        info = await store.put(bucket, "first", b"1")
        with trio.fail_after(WAIT):
            ev = await w.recv.receive()
        assert ev.kind == "put" and ev.info.name == "first" and ev.info.nuid == info.nuid
        assert ev.info.size == 1 and ev.info.digest == digest_of(b"1")
        nursery.cancel_scope.cancel()


async def test_watch_missing_bucket(store: TrioStore, bucket: str) -> None:
    with pytest.raises(NotFound):
        async for _ in store.watch(bucket + "-missing"):
            pass


async def test_account_usage_counts_what_is_stored(
    store: TrioStore, make_bucket: MakeBucket
) -> None:
    # Neither the memory store nor the session's server sets an account limit (the NATS
    # account limit itself: tests/mount/test_status.py::test_df_reports_the_account_limit).
    bucket = await make_bucket(storage="file")
    before = await store.account_usage()
    assert before.limit is None
    await store.put(bucket, "sized", os.urandom(100_000))
    after = await store.account_usage()
    assert after.used >= before.used + 100_000
    assert after.limit is None


async def _stream_messages(store: TrioStore, bucket: str) -> int | None:
    """Messages in the bucket's stream (chunks and metas), on NATS; None on memory."""
    nc = getattr(store.store, "nc", None)
    if nc is None:
        return None

    async def count() -> int:
        info = await nc.jetstream().stream_info(f"OBJ_{bucket}")
        return int(info.state.messages)

    return await store.bridge.call(count)


async def test_streaming_put_publishes_the_meta_only_at_the_end(
    store: TrioStore, bucket: str
) -> None:
    old = await store.put(bucket, "s", b"old version")
    data = os.urandom(10 * 4096 + 17)
    meta = ObjectMeta(description="early")
    before = await _stream_messages(store, bucket)
    feed = store.feed()
    async with trio.open_nursery() as nursery:
        done: list[ObjectInfo] = []

        async def put() -> None:
            done.append(await store.put(bucket, "s", feed, meta=meta, chunk_size=4096))

        nursery.start_soon(put)
        for off in range(0, len(data), 3000):  # pieces that do not match the chunks
            await feed.push(data[off : off + 3000])
        # Every byte is sent (on NATS: the ten whole chunks published), the source not
        # ended: the old version is still the object, whole.
        if before is not None:
            await wait_until(lambda: _stream_messages(store, bucket), before + 10)
        assert (await store.info(bucket, "s")).nuid == old.nuid
        assert await read_all(store, await store.info(bucket, "s")) == b"old version"
        meta.headers = {"X-Late": ["set before the end"]}  # read once the source ends
        await feed.end()
    info = done[0]
    assert info.nuid != old.nuid and info.size == len(data) and info.chunks == 11
    assert info.headers == {"X-Late": ["set before the end"]} and info.description == "early"
    assert await read_all(store, await store.info(bucket, "s")) == data


async def test_a_failed_streaming_put_leaves_the_old_version_and_no_chunks(
    store: TrioStore, bucket: str
) -> None:
    old = await store.put(bucket, "s", b"old version")
    before = await _stream_messages(store, bucket)
    feed = store.feed()
    raised: list[BaseException] = []
    async with trio.open_nursery() as nursery:

        async def put() -> None:
            try:
                await store.put(bucket, "s", feed, chunk_size=4096)
            except OSError as e:
                raised.append(e)
            await feed.close()

        nursery.start_soon(put)
        for _ in range(8):
            await feed.push(os.urandom(4096))
        await feed.fail(OSError("writer gave up"))
    assert [str(e) for e in raised] == ["writer gave up"]
    assert (await store.info(bucket, "s")).nuid == old.nuid
    assert await read_all(store, await store.info(bucket, "s")) == b"old version"
    if before is not None:  # NATS: the abandoned chunks were purged
        await wait_until(lambda: _stream_messages(store, bucket), before)


async def wait_until(get: Callable[[], Awaitable[int | None]], want: int) -> None:
    with trio.fail_after(60):
        while (got := await get()) != want:
            await trio.sleep(0.05)
    assert got == want
