"""The read path's digest check (objfs/fs/digests.py): whole, in-order reads are verified."""

from __future__ import annotations

import hashlib
import logging

import pytest

from objfs.fs.digests import CHECK_MAX_BYTES, DigestCheck
from objfs.store.api import ChunkLayout, ObjectInfo
from objfs.store.errors import Corrupt
from objfs.store.wire import format_digest

CHUNKS = [bytes([i]) * 100_000 for i in range(4)]  # some above THREAD_MIN in a batch


def version(
    content: bytes, nuid: str, *, size: int | None = None
) -> tuple[ObjectInfo, ChunkLayout]:
    size = len(content) if size is None else size
    info = ObjectInfo(
        bucket="b",
        name=f"obj-{nuid}",
        nuid=nuid,
        size=size,
        chunks=len(CHUNKS),
        digest=format_digest(hashlib.sha256(content).digest()),
    )
    offsets = [sum(len(c) for c in CHUNKS[:i]) for i in range(len(CHUNKS) + 1)]
    offsets[-1] = size
    return info, ChunkLayout("b", nuid, list(range(len(CHUNKS))), offsets)


async def test_an_in_order_read_of_the_right_content_passes() -> None:
    check = DigestCheck()
    info, layout = version(b"".join(CHUNKS), "good")
    await check.feed(info, layout, 0, CHUNKS[:2])
    await check.feed(info, layout, 1, CHUNKS[1:3])  # overlapping reads are fine
    await check.feed(info, layout, 3, CHUNKS[3:])
    await check.feed(info, layout, 0, CHUNKS[:1])  # and a second reading starts afresh


async def test_a_mismatch_fails_the_last_read_and_every_later_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check = DigestCheck()
    info, layout = version(b"something else", "bad")
    for i in range(3):
        await check.feed(info, layout, i, [CHUNKS[i]])
    with caplog.at_level(logging.ERROR), pytest.raises(Corrupt):
        await check.feed(info, layout, 3, [CHUNKS[3]])
    assert "b/obj-bad" in caplog.text
    with pytest.raises(Corrupt):
        await check.feed(info, layout, 1, [CHUNKS[1]])


async def test_random_access_and_big_objects_are_not_checked() -> None:
    check = DigestCheck()
    info, layout = version(b"wrong", "skip")
    await check.feed(info, layout, 0, [CHUNKS[0]])
    await check.feed(info, layout, 2, [CHUNKS[2]])  # skipped chunk 1: check dropped
    await check.feed(info, layout, 3, [CHUNKS[3]])
    big, big_layout = version(b"wrong", "big", size=CHECK_MAX_BYTES + 1)
    for i in range(4):
        await check.feed(big, big_layout, i, [CHUNKS[i]])
