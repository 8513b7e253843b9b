"""Round-trip helpers shared by the filesystem-core tests."""

from __future__ import annotations

import io
import os
from typing import Any

from objfs.fs import Filesystem
from objfs.fs.inodes import ROOT_INO, Node
from objfs.fs.values import Caller
from objfs.store.api import BucketConfig

CALLER = Caller(uid=1234, gid=5678, umask=0o022)
CHUNK = 4096
"""A small chunk size so that multi-chunk objects stay fast."""


async def write_file(fs: Filesystem, name: str, data: bytes, parent: int = ROOT_INO) -> Node:
    """create + write (in 64 KiB pieces) + flush + release, as ``cp`` would."""
    handle, node = await fs.create(parent, name, 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    for off in range(0, len(data), 65536):
        await fs.write(handle.fh, off, data[off : off + 65536])
    await fs.flush(handle.fh)
    await fs.release(handle.fh)
    return node


async def read_file(fs: Filesystem, ino: int, size: int = 1 << 30) -> bytes:
    handle, _ = await fs.open(ino, os.O_RDONLY)
    try:
        out = bytearray()
        while len(out) < size:
            piece = await fs.read(handle.fh, len(out), min(131072, size - len(out)))
            if not piece:
                break
            out += piece
        return bytes(out)
    finally:
        await fs.release(handle.fh)


async def stored(store: Any, bucket: str, name: str) -> bytes:
    sink = io.BytesIO()
    await store.get(bucket, name, sink)
    return sink.getvalue()


async def new_bucket(store: Any, name: str) -> str:
    await store.create_bucket(BucketConfig(name=name, chunk_size=CHUNK, storage="memory"))
    return name
