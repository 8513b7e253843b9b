"""Helpers for filesystem-core tests: a Filesystem over a store, and file round trips.

Tests drive ``objfs.fs.Filesystem`` directly (no kernel). ``store`` (from tests/conftest.py)
runs a test over the memory store and a real nats-server; ``mem`` is the memory store alone,
for fault injection and call counting (``mem.store`` is the MemoryObjectStore).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fs_helpers import CHUNK

from objfs.bridge import AsyncioThread, Bridge, TrioStore
from objfs.fs import Filesystem
from objfs.fs.inodes import Node
from objfs.fs.invalidation import InvalidationQueue, Request
from objfs.fs.watcher import Watcher
from objfs.options import MountOptions
from objfs.store.api import WatchEvent


@pytest.fixture
async def mem(asyncio_thread: AsyncioThread) -> AsyncIterator[TrioStore]:
    from objfs.store.memory import MemoryObjectStore

    async def make() -> MemoryObjectStore:
        return MemoryObjectStore()

    bridge = Bridge(asyncio_thread)
    backend = await bridge.call(make)
    yield TrioStore(backend, bridge)
    await bridge.call(backend.close)


def record_invalidations(queue: InvalidationQueue) -> None:
    """Keep the last requests pushed to ``queue`` in ``queue.sent`` (the tests look at it)."""
    sent: list[Request] = []
    push = queue.push

    def recording(request: Request) -> None:
        sent.append(request)
        del sent[:-256]
        push(request)

    queue.push = recording  # type: ignore[method-assign]
    queue.sent = sent  # type: ignore[attr-defined]


def count_watch_events(watcher: Watcher) -> None:
    """Count the events handed to ``watcher.apply`` in ``watcher.applied`` (tests wait on it)."""
    apply = watcher.apply

    def counting(root: Node, event: WatchEvent) -> None:
        watcher.applied += 1  # type: ignore[attr-defined]
        apply(root, event)

    watcher.applied = 0  # type: ignore[attr-defined]
    watcher.apply = counting  # type: ignore[method-assign]


@pytest.fixture
def make_fs(tmp_path: Path) -> Callable[..., Any]:
    """``await make_fs(store, bucket, **options)``: a started Filesystem (shut down after)."""
    made: list[Filesystem] = []

    async def make(store: Any, bucket: str | None, *, create: bool = True, **kw: Any) -> Filesystem:
        kw.setdefault("chunk_size", CHUNK)
        kw.setdefault("spool_dir", tmp_path / f"spool{len(made)}")
        opts = MountOptions(mountpoint=tmp_path / "mnt", bucket=bucket, create=create, **kw)
        fs = Filesystem(store, opts)
        record_invalidations(fs.queue)
        count_watch_events(fs.watcher)
        await fs.start()
        made.append(fs)
        return fs

    make.made = made  # type: ignore[attr-defined]
    return make


@pytest.fixture(autouse=True)
async def _shutdown_filesystems(make_fs: Any) -> AsyncIterator[None]:
    """After each test: check every made Filesystem's inode table, then shut them down."""
    yield
    try:
        for fs in make_fs.made:
            fs.table.check_invariants()
    finally:
        for fs in make_fs.made:
            await fs.shutdown()
