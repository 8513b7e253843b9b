"""Remote changes are not deferred without bound by local operations that keep overlapping."""

from __future__ import annotations

import stat
from typing import Any

import trio
from fs_helpers import CALLER, wait_for

from objfs.fs.inodes import ROOT_INO


class Overlapping:
    """Wraps the store of ``Files`` so that its puts overlap: put k returns only once put k+1
    has started, so some local operation holds the bucket at every moment, as long as new
    operations may start (the watcher's barrier, ``draining``, lets the running one end)."""

    def __init__(self, inner: Any, watcher: Any, bucket: str) -> None:
        self.inner = inner
        self.watcher = watcher
        self.bucket = bucket
        self.started = 0
        self.stopped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put(self, *args: Any, **kwargs: Any) -> Any:
        k = self.started
        self.started += 1
        draining = getattr(self.watcher, "draining", lambda bucket: False)
        while self.started <= k + 1 and not self.stopped and not draining(self.bucket):
            await trio.sleep(0.005)
        return await self.inner.put(*args, **kwargs)


async def test_remote_change_is_applied_while_local_operations_keep_overlapping(
    mem, bucket_name, make_fs
):
    fs = await make_fs(mem, bucket_name)
    relay = Overlapping(mem, fs.watcher, bucket_name)
    fs.special.store = relay  # mknod stores the new (empty) file at once
    created = 0

    async def creator(prefix: str) -> None:
        nonlocal created
        i = 0
        while not relay.stopped:
            await fs.mknod(ROOT_INO, f"{prefix}{i}", stat.S_IFREG | 0o644, 0, CALLER)
            created += 1
            i += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)
        nursery.start_soon(creator, "a")
        await wait_for(lambda: relay.started >= 1, "the first local create")
        nursery.start_soon(creator, "b")
        await wait_for(lambda: created >= 4, "local creates overlapping")
        await mem.put(bucket_name, "remote", b"from another client")
        await wait_for(
            lambda: fs.table.child(fs.root, "remote") is not None, "the remote put applied"
        )
        assert not relay.stopped  # the local operations were still running all along
        before = created
        await wait_for(lambda: created > before + 2, "local creates going on after it")
        relay.stopped = True
        nursery.cancel_scope.cancel()
    assert fs.table.child(fs.root, "remote").size == len(b"from another client")


async def test_the_barrier_wait_is_bounded_when_a_running_operation_does_not_end(
    mem, bucket_name, make_fs
):
    """A hold that outlasts the barrier (a long directory rename, or a rename waiting for the
    spool lock of an xattr update that waits at the barrier) must not block others for ever."""
    fs = await make_fs(mem, bucket_name)
    fs.watcher.defer_bound = 0.05
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.run_background)

        async def long_operation() -> None:
            async with fs.watcher.hold(bucket_name):
                await release.wait()

        nursery.start_soon(long_operation)
        await wait_for(lambda: fs.watcher._held.get(bucket_name), "the long hold")
        await mem.put(bucket_name, "remote", b"x")
        await wait_for(lambda: fs.watcher.draining(bucket_name), "the remote put deferred")
        for i in range(3):  # each waits a bound at most, then goes on under the long hold
            await fs.mknod(ROOT_INO, f"local{i}", stat.S_IFREG | 0o644, 0, CALLER)
        assert fs.table.child(fs.root, "remote") is None  # still deferred: the hold is on
        release.set()
        await wait_for(lambda: fs.table.child(fs.root, "remote") is not None, "remote applied")
        nursery.cancel_scope.cancel()
