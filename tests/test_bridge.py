"""Tests of objfs.bridge: calls, cancellation and iteration across trio and asyncio.

The bridge is the only crossing between pyfuse3's trio loop and nats-py's asyncio loop, so
every store call of the filesystem goes through it: results and errors must come back intact,
a cancelled trio request must not leave work running on the asyncio side, and iterators must
be closed on the asyncio side whatever the trio consumer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from objfs.bridge import AsyncioThread, Bridge, TrioStore
from objfs.store.api import BucketConfig
from objfs.store.errors import NameTooLong, NotFound, Unavailable
from objfs.store.memory import MemoryObjectStore

WAIT = 60.0
"""A generous deadline for any one wait (only a failing test waits it out)."""


async def wait_thread_event(event: threading.Event) -> bool:
    """Wait (bounded, without blocking trio) for an event set on the asyncio thread."""
    return await trio.to_thread.run_sync(event.wait, WAIT)


class CountingBridge(Bridge):
    """A Bridge that records, for each hop, the function's name and what it returned."""

    def __init__(self, thread: AsyncioThread) -> None:
        super().__init__(thread)
        self.hops: list[tuple[str, Any]] = []

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        result = await super().call(fn, *args, **kwargs)
        self.hops.append((getattr(fn, "__name__", "?"), result))
        return result


@pytest.fixture
async def bridge(asyncio_thread: AsyncioThread) -> Bridge:
    return Bridge(asyncio_thread)


# -- call ----------------------------------------------------------------------------------


async def test_call_returns_result_from_asyncio_thread(
    bridge: Bridge, asyncio_thread: AsyncioThread
) -> None:
    async def work(a: int, *, b: int) -> tuple[int, bool]:
        await asyncio.sleep(0)
        return a + b, asyncio.get_running_loop() is asyncio_thread.loop

    assert await bridge.call(work, 2, b=3) == (5, True)


async def test_call_propagates_exceptions_with_their_type(bridge: Bridge) -> None:
    async def fail(exc: BaseException) -> None:
        await asyncio.sleep(0)
        raise exc

    with pytest.raises(NameTooLong) as exc:
        await bridge.call(fail, NameTooLong("long"))
    assert exc.value.errno == errno.ENAMETOOLONG and str(exc.value) == "long"
    with pytest.raises(NotFound) as nf:
        await bridge.call(fail, NotFound("gone"))
    assert nf.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="plain"):
        await bridge.call(fail, ValueError("plain"))


async def call_cancelled_once_started(
    bridge: Bridge, fn: Callable[[], Awaitable[None]], started: threading.Event
) -> trio.CancelScope:
    """``bridge.call(fn)``, cancelled from trio once ``fn`` has set ``started``."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_when_started() -> None:
                await wait_thread_event(started)
                scope.cancel()

            nursery.start_soon(cancel_when_started)
            await bridge.call(fn)
    return scope


async def test_trio_cancellation_cancels_the_asyncio_task(bridge: Bridge) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()
    finished = threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
            finished.set()
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    with trio.move_on_after(WAIT) as outer:
        scope = await call_cancelled_once_started(bridge, slow, started)
    assert not outer.cancelled_caught, "the call did not end when cancelled"
    assert scope.cancelled_caught
    assert await wait_thread_event(saw_cancel)
    assert not finished.is_set()


async def test_cancelled_call_returns_only_once_the_asyncio_task_has_finished(
    bridge: Bridge,
) -> None:
    """A coroutine that keeps working after its cancellation (as a put abandoning its chunks
    does) still owns what the caller lent it: trio must not resume before it ends."""
    started = threading.Event()
    cleaned_up = threading.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # still reading the caller's file, say
            cleaned_up.set()
            raise

    with trio.fail_after(WAIT):
        scope = await call_cancelled_once_started(bridge, stubborn, started)
    # Checked at once: before the fix trio resumed 0.3 s before the clean-up ended.
    assert cleaned_up.is_set(), "trio resumed while the asyncio task was still running"
    assert scope.cancelled_caught


async def test_asyncio_side_cancellation_is_not_a_trio_cancel(bridge: Bridge) -> None:
    """A coroutine cancelled on the asyncio side (not by trio) surfaces as an error."""

    async def cancelled_by_itself() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    raised: BaseException | None = None
    with trio.fail_after(WAIT):
        try:
            await bridge.call(cancelled_by_itself)
        except BaseException as e:  # a stray trio.Cancelled must be seen, not swallowed
            raised = e
    assert isinstance(raised, Unavailable), repr(raised)


async def test_call_results_in_concurrent_tasks(bridge: Bridge) -> None:
    results: dict[int, int] = {}

    async def square(x: int) -> int:
        await asyncio.sleep(0.001 * (x % 3))
        return x * x

    async def one(x: int) -> None:
        results[x] = await bridge.call(square, x)

    async with trio.open_nursery() as nursery:
        for x in range(30):
            nursery.start_soon(one, x)
    assert results == {x: x * x for x in range(30)}


# -- iterate -------------------------------------------------------------------------------


async def test_iterate_delivers_items_in_batches(asyncio_thread: AsyncioThread) -> None:
    bridge = CountingBridge(asyncio_thread)

    queued = threading.Event()

    async def numbers() -> AsyncIterator[int]:
        for i in range(20):
            if i == 9:
                # Item 8 is queued: the queue (8 items) holds at least 4 untaken ones,
                # whatever the first hop took (at most 4).
                queued.set()
            yield i

    got = []
    async for x in bridge.iterate(numbers, batch=4):
        got.append(x)
        if x == 0:
            # Wait for the asyncio side to queue up items, so the next hop carries a full batch.
            assert await wait_thread_event(queued)
    assert got == list(range(20))
    sizes = [len(result[0]) for name, result in bridge.hops if name == "take"]
    assert sum(sizes) == 20
    assert max(sizes) == 4, sizes
    assert len(sizes) < 20


async def test_iterate_raises_after_delivering_prior_items(bridge: Bridge) -> None:
    async def broken() -> AsyncIterator[int]:
        for i in range(5):
            yield i
        raise NotFound("vanished mid-way")

    got = []
    with pytest.raises(NotFound, match="vanished"):
        async for x in bridge.iterate(broken, batch=64):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


async def test_iterate_of_a_failing_factory_raises(bridge: Bridge) -> None:
    def make() -> AsyncIterator[int]:
        raise NotFound("no such bucket")

    with trio.fail_after(WAIT), pytest.raises(NotFound):
        async for _ in bridge.iterate(make):
            pass


def endless(closed: threading.Event) -> Callable[[], AsyncIterator[int]]:
    async def gen() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    return gen


async def test_iterate_closes_generator_on_early_break(bridge: Bridge) -> None:
    closed = threading.Event()
    got = []
    async with contextlib.aclosing(bridge.iterate(endless(closed), batch=8)) as it:
        async for x in it:
            got.append(x)
            if x == 3:
                break
    assert got == [0, 1, 2, 3]
    assert closed.is_set(), "closing the trio iterator must close the asyncio generator"


async def test_iterate_closes_generator_when_abandoned(bridge: Bridge) -> None:
    """Without aclosing, trio's async-generator finalizer closes it (a little later)."""
    closed = threading.Event()
    async for x in bridge.iterate(endless(closed)):
        if x == 2:
            break
    assert await wait_thread_event(closed)


async def test_iterate_closes_generator_when_consumer_cancelled(bridge: Bridge) -> None:
    closed = threading.Event()

    async def silent() -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.sleep(30)
            yield 2
        finally:
            closed.set()

    got = []

    async def cancel_once_waiting(scope: trio.CancelScope) -> None:
        # Once the consumer has item 1 and every trio task is blocked, it waits for item 2.
        while not got:
            await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(cancel_once_waiting, scope)
                async with contextlib.aclosing(bridge.iterate(silent)) as it:
                    async for x in it:
                        got.append(x)
    assert scope.cancelled_caught and got == [1]
    assert closed.is_set()


async def test_closing_an_iterator_that_swallowed_its_cancellation_still_ends_it(
    bridge: Bridge,
) -> None:
    """An iterator that catches its first cancellation and goes on (as nats-py's requests can
    on Python 3.11, store/deadline.py) is cancelled again: closing it returns, the iterator
    has ended. It hung the unmount: a watch went on waiting for heartbeats."""
    cancels = 0
    ended = threading.Event()

    async def stubborn() -> AsyncIterator[int]:
        nonlocal cancels
        try:
            yield 1
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    cancels += 1
                    if cancels > 1:
                        raise
        finally:
            ended.set()

    with trio.fail_after(WAIT):
        async with contextlib.aclosing(bridge.iterate(stubborn)) as it:
            async for x in it:
                assert x == 1
                break
    assert ended.is_set() and cancels == 2


async def test_a_put_whose_cancellation_was_swallowed_stops_reading_its_feed(
    bridge: Bridge, asyncio_thread: AsyncioThread
) -> None:
    """A cancelled put that went back for more of its source (the cancellation swallowed on
    the way) gets CancelledError from the feed instead of waiting for ever."""
    feed = TrioStore(MemoryObjectStore(), bridge).feed()
    await feed.push(b"a")
    outcome: list[str] = []
    swallowing = asyncio.Event()

    async def consume() -> None:
        async for piece in feed:
            assert piece == b"a"
            swallowing.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)  # where nats-py would swallow the cancel
        outcome.append("the feed ended")

    async def run() -> str:
        task = asyncio.ensure_future(consume())
        await swallowing.wait()  # the cancel must meet the swallowing sleep
        task.cancel()
        try:
            await asyncio.wait_for(task, WAIT)
        except asyncio.CancelledError:
            return "cancelled"
        return outcome[0]

    assert asyncio_thread.run(run(), WAIT) == "cancelled"


# -- TrioStore -----------------------------------------------------------------------------


async def test_trio_store_forwards_methods_and_iterators(bridge: Bridge) -> None:
    backend = await bridge.call(_make_memory_store)
    store = TrioStore(backend, bridge)
    assert store.store.delay == 0.0  # the backend stays reachable
    await store.create_bucket(BucketConfig("b", chunk_size=3))
    info = await store.put("b", "x", b"abcdefgh")
    assert (await store.info("b", "x")).nuid == info.nuid
    chunks = [c async for batch in store.read_stream(info, window=2) for c in batch]
    assert chunks == [b"abc", b"def", b"gh"]
    events = []
    async with contextlib.aclosing(store.watch("b")) as watch:
        async for ev in watch:
            events.append((ev.kind, ev.info.name if ev.info else None))
            if ev.kind == "snapshot_end":
                break
    assert events == [("put", "x"), ("snapshot_end", None)]
    with pytest.raises(NotFound):
        await store.info("b", "missing")
    await bridge.call(backend.close)


async def test_trio_store_runs_methods_on_the_asyncio_loop(
    bridge: Bridge, asyncio_thread: AsyncioThread
) -> None:
    class Probe:
        async def list_buckets(self) -> bool:
            return asyncio.get_running_loop() is asyncio_thread.loop

    assert await TrioStore(Probe(), bridge).list_buckets() is True


async def _make_memory_store() -> MemoryObjectStore:
    return MemoryObjectStore()
