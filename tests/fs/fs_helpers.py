"""Round-trip helpers shared by the filesystem-core tests."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import trio

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


WAIT = 60.0
"""How long a test waits for something that must happen (a watch event applied, say): far
more than it takes even on a loaded machine; a pass never depends on being fast."""


async def wait_for(cond: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Poll ``cond`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"not seen within {timeout}s: {what}")


async def watch_barrier(fs: Filesystem, store: Any, bucket: str, name: str = "barrier") -> None:
    """An event barrier: another client puts ``name`` and we wait until ``fs`` shows it.

    A bucket's watch delivers its events in order, so once the marker is applied every change
    made before it has been applied (or deferred and settled) too: a test can then check
    what those earlier events did, or did not do, without sleeping.
    """
    info = await store.put(bucket, name, b"")

    def applied() -> bool:
        node = fs.table.child(fs.root, name)  # the same name may serve as barrier again
        return node is not None and node.info is not None and node.info.revision >= info.revision

    await wait_for(applied, f"the marker {name!r}")


def no_connection() -> dict[str, Any]:
    """The status document's ``server`` part for a core without a NATS connection."""
    return {"url": None, "connected": False, "reconnects": 0, "last_error": None}
