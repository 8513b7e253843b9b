"""A reference model of durability under faults: writes, fsyncs and closes of a few files while
the store drops connections (puts fail), compared after every step with a plain model.

The model (docs/semantics.md, Durability): a write shows at once on this mount; an fsync or
close whose upload succeeds stores what the mount shows; one that fails (EIO) stores nothing
and keeps the data (the mount still shows it, a later fsync or close stores it); once the
server answers again the background retry stores every failed file nobody holds open for
writing. After every step the file contents read through the core and the objects in the store
are compared with the model; at the end every file is closed, and the store must hold exactly
what the mount showed.

Runs: small by default (``OBJFS_FAULT_EXAMPLES``, default 40 examples of up to 25 steps).
(The larger model test of the whole core, tests/fs/test_model.py, lives on main; this one is
its fault-injection counterpart for the durability rules.)
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from fs_helpers import CALLER, CHUNK, stored
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objfs.bridge import AsyncioThread, Bridge, TrioStore
from objfs.fs import Filesystem, FsError
from objfs.fs.handles import Handle
from objfs.fs.inodes import ROOT_INO
from objfs.options import MountOptions
from objfs.store.errors import NotFound, Unavailable
from objfs.store.memory import MemoryObjectStore

NAMES = ["a", "b"]
BUCKET = "faults"
WAIT = 60.0

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"),
            st.sampled_from(NAMES),
            st.integers(0, 3 * CHUNK),
            st.binary(min_size=1, max_size=2 * CHUNK),
        ),
        st.tuples(st.just("fsync"), st.sampled_from(NAMES)),
        st.tuples(st.just("close"), st.sampled_from(NAMES)),
        st.tuples(st.just("drop"), st.integers(1, 3)),  # the next n puts fail
        st.tuples(st.just("settle")),  # the server answers again; the retry runs
    ),
    max_size=25,
)


@dataclass
class Model:
    local: dict[str, bytes] = field(default_factory=dict)
    stored: dict[str, bytes] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    faults: int = 0

    def upload(self, name: str) -> bool:
        """One upload attempt of ``name`` (a put only if it is dirty); whether it stored."""
        if name not in self.dirty:
            return True
        if self.faults:
            self.faults -= 1
            return False
        self.stored[name] = self.local[name]
        self.dirty.discard(name)
        return True


class Runner:
    def __init__(self, fs: Filesystem, store: TrioStore, backend: MemoryObjectStore) -> None:
        self.fs = fs
        self.store = store
        self.backend = backend
        self.model = Model()
        self.open: dict[str, Handle] = {}

    async def step(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "write":
            _, name, offset, data = op
            handle = await self._writer(name)
            await self.fs.write(handle.fh, offset, data)
            old = self.model.local[name]
            new = old.ljust(offset, b"\0")
            self.model.local[name] = new[:offset] + data + new[offset + len(data) :]
            self.model.dirty.add(name)
        elif kind == "fsync":
            name = op[1]
            if name in self.open:
                ok = self.model.upload(name)
                await self._expect(self.fs.fsync(self.open[name].fh), ok)
        elif kind == "close":
            name = op[1]
            if name in self.open:
                handle = self.open.pop(name)
                # close(2): flush (uploads, the last writer), then release (uploads again
                # if the flush failed), as the kernel calls them.
                ok = self.model.upload(name)
                await self._expect(self.fs.flush(handle.fh), ok)
                ok = self.model.upload(name)
                await self._expect(self.fs.release(handle.fh), ok)
        elif kind == "drop":
            for _ in range(op[1]):
                self.backend.fail_next("put", Unavailable("connection dropped"))
            self.model.faults += op[1]
        elif kind == "settle":
            await self.settle()
        await self.check()

    async def _writer(self, name: str) -> Handle:
        if name in self.open:
            return self.open[name]
        node = self.fs.table.child(self.fs.root, name)
        if node is None:
            handle, _ = await self.fs.create(
                ROOT_INO, name, 0o644, os.O_RDWR | os.O_CREAT, CALLER
            )
            self.model.local[name] = b""
            self.model.dirty.add(name)  # even an empty new file is stored
        else:
            handle, _ = await self.fs.open(node.ino, os.O_RDWR)
        self.open[name] = handle
        return handle

    @staticmethod
    async def _expect(call: Any, ok: bool) -> None:
        try:
            await call
        except FsError as e:
            assert not ok, f"failed where the model stores: {e}"
            assert e.errno == errno.EIO
        else:
            assert ok, "succeeded where the model's put fails"

    async def settle(self) -> None:
        """The server answers again: burn what is left of the faults, let the retry store
        every failed file not open for writing."""
        while self.model.faults:
            self.model.faults -= 1
            try:
                await self.store.put(BUCKET, "burn", b"")
            except Unavailable:
                pass
            else:
                raise AssertionError("a fault the model counted was not there")
        waiting = {f"/{n}" for n in self.model.dirty if n not in self.open}
        self.fs.files.retry.first_delay = 0.001
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.fs.run_background)
            with trio.fail_after(WAIT):
                while {p for p, *_ in self.fs.files.pending_uploads()} & waiting:
                    await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
        for name in [n for n in self.model.dirty if n not in self.open]:
            self.model.stored[name] = self.model.local[name]
            self.model.dirty.discard(name)

    async def check(self) -> None:
        for name, content in self.model.local.items():
            node = self.fs.table.child(self.fs.root, name)
            assert node is not None, f"{name} is not shown"
            handle, _ = await self.fs.open(node.ino, os.O_RDONLY)
            try:
                got = await self.fs.read(handle.fh, 0, len(content) + 1)
            finally:
                await self.fs.release(handle.fh)
            assert got == content, f"{name} does not read as written"
        for name in NAMES:
            if name in self.model.stored:
                got = await stored(self.store, BUCKET, name)
                assert got == self.model.stored[name], f"the store's {name} is not the model's"
            else:
                try:
                    await self.store.info(BUCKET, name)
                except NotFound:
                    continue
                raise AssertionError(f"{name} is in the store, the model never stored it")


async def run_example(thread: AsyncioThread, ops: list[tuple[Any, ...]]) -> None:
    bridge = Bridge(thread)

    async def make() -> MemoryObjectStore:
        return MemoryObjectStore()

    backend = await bridge.call(make)
    store = TrioStore(backend, bridge)
    tmp = Path(tempfile.mkdtemp(prefix="objfs-faults-"))
    options = MountOptions(
        mountpoint=tmp / "mnt", bucket=BUCKET, create=True, chunk_size=CHUNK, spool_dir=tmp
    )
    fs = Filesystem(store, options)
    try:
        await fs.start()
        runner = Runner(fs, store, backend)
        for op in ops:
            await runner.step(op)
        for name in list(runner.open):
            await runner.step(("close", name))
        await runner.settle()
        await runner.check()
        assert runner.model.stored == runner.model.local
    finally:
        await fs.shutdown()
        await bridge.call(backend.close)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _shutdown_filesystems() -> None:
    """Overrides conftest's (async, so trio-only): ``run_example`` makes and shuts down its
    own filesystem."""


@settings(
    max_examples=int(os.environ.get("OBJFS_FAULT_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_durability_under_dropped_connections_matches_model(
    asyncio_thread: AsyncioThread, ops: list[tuple[Any, ...]]
) -> None:
    trio.run(run_example, asyncio_thread, ops)
