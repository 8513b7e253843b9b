"""The one crossing between trio (pyfuse3's loop) and asyncio (nats-py's loop).

nats-py only runs on asyncio and pyfuse3 only under trio, so objfs runs an asyncio loop in a
dedicated thread and hops across here, and nowhere else. A hop costs about 55-110 us (the trio
side is woken with ``TrioToken.run_sync_soon``, the cheapest wake-up measured), against a NATS
round trip of 0.3-0.4 ms: callers make calls coarse (a batch of chunks, a whole put).

``TrioStore`` wraps an asyncio-side ``ObjectStore`` so that trio code awaits the same methods;
async-iterator methods (``read_stream``, ``watch``) are pulled across one batch per hop.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import trio

from objfs.store.api import (
    AccountUsage,
    BucketConfig,
    BucketEvent,
    BucketStatus,
    ChunkLayout,
    Chunks,
    ObjectInfo,
    ObjectMeta,
    ObjectStore,
    Source,
    WatchEvent,
)
from objfs.store.errors import Unavailable

T = TypeVar("T")

log = logging.getLogger(__name__)

CANCEL_GRACE = 120.0
"""Seconds a cancelled call waits for its asyncio task to finish before giving up on it (only
a hung store call waits this out: a cancelled put still abandons its chunks, bounded by the
store's own timeout)."""


class AsyncioThread:
    """An asyncio event loop running in a daemon thread, for the life of a ``with`` block."""

    def __init__(self, name: str = "objfs-asyncio") -> None:
        self._name = name
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> AsyncioThread:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop from any thread."""
        assert self.loop is not None, "AsyncioThread not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block this (non-loop) thread until it is done."""
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> AsyncioThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Bridge:
    """Await asyncio coroutines from trio. Create inside a trio run (it keeps the trio token)."""

    def __init__(self, thread: AsyncioThread) -> None:
        self.thread = thread
        self._token = trio.lowlevel.current_trio_token()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the asyncio loop and return its result in trio.

        Cancelling the trio task cancels the asyncio task too, and the trio side raises
        ``Cancelled`` only once that task has finished: until then it may still use what the
        caller handed it (an upload reads the spool file under ``spool.lock``, which the caller
        releases as soon as this returns). The wait is shielded and bounded by
        ``CANCEL_GRACE``, with a log line if the asyncio side overruns it.
        """
        loop = self.thread.loop
        assert loop is not None, "AsyncioThread not started"
        trio_task = trio.lowlevel.current_task()
        token = self._token
        # The asyncio task, set on the asyncio thread by ``start`` before anything else there
        # touches it (call_soon_threadsafe callbacks run in order); read on the trio thread
        # only after ``on_done`` ran, which the task's done callback schedules.
        box: list[asyncio.Task[T]] = []
        # ``aborted`` and ``finished`` belong to the trio thread (``abort`` and ``on_done`` both
        # run there): after an abort the task is no longer waiting to be rescheduled, so the
        # end of the asyncio task is signalled through ``finished`` instead.
        aborted = False
        finished = trio.Event()

        def on_done() -> None:
            if aborted:
                finished.set()
            else:
                trio.lowlevel.reschedule(trio_task)

        def notify(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(on_done)

        def start() -> None:
            task = loop.create_task(_as_coro(fn, *args, **kwargs))
            box.append(task)
            task.add_done_callback(notify)

        def cancel() -> None:
            box[0].cancel()

        def abort(_: Callable[[], Any]) -> trio.lowlevel.Abort:
            nonlocal aborted
            aborted = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs there
                loop.call_soon_threadsafe(cancel)
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError as e:  # the loop is closed (shutting down)
            raise Unavailable(f"{getattr(fn, '__name__', fn)}: the asyncio loop is closed") from e
        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        except BaseException:  # Cancelled (or KeyboardInterrupt, delivered the same way)
            if aborted:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(CANCEL_GRACE) as grace:
                        await finished.wait()
                if grace.cancelled_caught:
                    log.warning(
                        "%s: still running on the asyncio loop %gs after it was cancelled",
                        getattr(fn, "__name__", fn),
                        CANCEL_GRACE,
                    )
            raise
        task = box[0]
        if task.cancelled():
            # Cancelled on the asyncio side (e.g. its loop shutting down), not by trio: a
            # trio.Cancelled here would escape every cancel scope, so report an error.
            raise Unavailable(f"{getattr(fn, '__name__', fn)} was cancelled on the asyncio loop")
        return task.result()

    async def iterate(
        self, make: Callable[[], AsyncIterator[T]], *, batch: int = 1
    ) -> AsyncIterator[T]:
        """Iterate an asyncio async iterator from trio, up to ``batch`` ready items a hop.

        A pump task on the asyncio side runs the iterator into a bounded queue (so a slow
        consumer holds the producer back); each hop takes the first item, waiting if needed,
        plus whatever else is already queued.
        """
        pump = _Pump(make, maxsize=max(2 * batch, 2))
        await self.call(pump.start)
        try:
            while True:
                items, done = await self.call(pump.take, batch)
                for item in items:
                    yield item
                if done:
                    return
        finally:
            with trio.CancelScope(shield=True):
                await self.call(pump.close)


_END = object()


class _Pump:
    """Runs an async iterator on the asyncio loop into a bounded queue (see Bridge.iterate)."""

    def __init__(self, make: Callable[[], AsyncIterator[Any]], maxsize: int) -> None:
        self._make = make
        self._maxsize = maxsize
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = False

    async def start(self) -> None:
        self._queue = asyncio.Queue(self._maxsize)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        assert self._queue is not None
        it: AsyncIterator[Any] | None = None
        try:
            # Inside the try: a factory that raises must reach the consumer, not hang it.
            it = self._make()
            async for item in it:
                await self._queue.put(item)
            await self._queue.put(_END)
        except GeneratorExit:
            # Closed unfinished once its loop is gone (collected at exit): nothing can be
            # awaited any more, neither a hand-over nor the iterator's own close.
            it = None
            raise
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # handed to the consumer, which re-raises it in trio
            await self._queue.put(_Failure(e))
        finally:
            aclose = getattr(it, "aclose", None) if it is not None else None
            if aclose is not None:
                await aclose()

    async def take(self, limit: int) -> tuple[list[Any], bool]:
        assert self._queue is not None
        if self._done:
            return [], True
        items: list[Any] = []
        item = await self._queue.get()
        while True:
            if item is _END:
                self._done = True
                return items, True
            if isinstance(item, _Failure):
                self._done = True
                if items:
                    # Deliver what came before the error; the error comes on the next take.
                    self._queue.put_nowait(item)
                    self._done = False
                    return items, False
                raise item.error
            items.append(item)
            if len(items) >= limit or self._queue.empty():
                return items, False
            item = self._queue.get_nowait()

    async def close(self) -> None:
        """Cancel the iterator and wait for it to end, cancelling it again each second it
        goes on: nats-py's requests can swallow a cancellation (store/deadline.py), and a
        watch that swallowed it would run for ever while the unmount waits here. Given up
        with a warning after ``CANCEL_GRACE``."""
        task = self._task
        if task is None:
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + CANCEL_GRACE
        while not task.done():
            left = give_up - loop.time()
            if left <= 0:
                log.warning("an iterator still runs %gs after it was cancelled", CANCEL_GRACE)
                return
            task.cancel()
            await asyncio.wait([task], timeout=min(1.0, left))
        if not task.cancelled():
            task.exception()  # retrieved: the consumer has stopped listening


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Feed:
    """Bytes pushed from trio, iterated by a streaming ``put`` on the asyncio loop.

    ``push`` waits while ``maxsize`` pieces are queued (the put holds the writer back, so
    memory stays bounded); ``end`` ends the source, ``fail`` makes the put raise (abandoning
    its chunks). ``close`` (once the put is over, however it ended) empties the queue, so a
    writer blocked in ``push`` behind a put that died returns; later pushes are dropped.
    """

    def __init__(self, bridge: Bridge, maxsize: int = 8) -> None:
        self._bridge = bridge
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.closed = False

    async def push(self, data: bytes) -> None:
        if not self.closed:
            await self._bridge.call(self._queue.put, data)

    async def end(self) -> None:
        if not self.closed:
            await self._bridge.call(self._queue.put, _END)

    async def fail(self, error: BaseException) -> None:
        if not self.closed:
            await self._bridge.call(self._queue.put, _Failure(error))

    async def close(self) -> None:
        self.closed = True
        await self._bridge.call(self._drain)

    async def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def __aiter__(self) -> AsyncIterator[bytes]:  # on the asyncio loop
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # The put was cancelled, and a cancellation swallowed on its way (nats-py's
                # requests, store/deadline.py) let it come back for more: nothing more comes
                # (its trio side has given up), so it would wait here for ever.
                raise asyncio.CancelledError
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item


async def _as_coro(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    return await fn(*args, **kwargs)


class TrioStore:
    """An ``ObjectStore`` seen from trio: the same methods, each one bridge hop.

    Written out method by method (not forwarded by name) so that a call from the filesystem is
    checked against ``ObjectStore``'s signatures. ``read_stream``, ``watch`` and
    ``watch_buckets`` return trio async iterators, pulled across a few items a hop.
    """

    READ_STREAM_PER_HOP = 1
    """``read_stream`` items are already batches of chunks (MiBs each): one a hop, so at most
    two wait in the pump's queue and memory stays bounded by the reader's own flow control."""
    WATCH_PER_HOP = 4096
    """Watch events are small and a snapshot has one per object: many a hop. A hop takes what
    is queued, never waits for a full batch, so live events are not delayed; at 100,000
    objects 4,096 (rather than 256) took the snapshot across in 3.4-3.7 s instead of 4.0 s."""
    WATCH_BUCKETS_PER_HOP = 16

    def __init__(self, store: ObjectStore, bridge: Bridge) -> None:
        self.store = store
        self.bridge = bridge

    @property
    def max_chunk_size(self) -> int | None:
        """The backend's (a plain attribute: read without a hop)."""
        return self.store.max_chunk_size

    # -- buckets ---------------------------------------------------------------------------
    async def create_bucket(self, config: BucketConfig) -> BucketStatus:
        return await self.bridge.call(self.store.create_bucket, config)

    async def update_bucket(self, config: BucketConfig) -> BucketStatus:
        return await self.bridge.call(self.store.update_bucket, config)

    async def delete_bucket(self, name: str) -> None:
        await self.bridge.call(self.store.delete_bucket, name)

    async def bucket_status(self, name: str, *, count: bool = True) -> BucketStatus:
        return await self.bridge.call(self.store.bucket_status, name, count=count)

    async def list_buckets(self) -> list[BucketStatus]:
        return await self.bridge.call(self.store.list_buckets)

    async def seal_bucket(self, name: str) -> BucketStatus:
        return await self.bridge.call(self.store.seal_bucket, name)

    async def account_usage(self) -> AccountUsage:
        return await self.bridge.call(self.store.account_usage)

    # -- objects: metadata -----------------------------------------------------------------
    async def info(self, bucket: str, name: str, *, deleted: bool = False) -> ObjectInfo:
        return await self.bridge.call(self.store.info, bucket, name, deleted=deleted)

    async def list(self, bucket: str, *, deleted: bool = False) -> builtins.list[ObjectInfo]:
        return await self.bridge.call(self.store.list, bucket, deleted=deleted)

    async def update_meta(self, bucket: str, name: str, meta: ObjectMeta) -> ObjectInfo:
        return await self.bridge.call(self.store.update_meta, bucket, name, meta)

    async def rename(
        self, bucket: str, old: str, new: str, *, replace: bool = False, keep_replaced: bool = False
    ) -> ObjectInfo:
        return await self.bridge.call(
            self.store.rename, bucket, old, new, replace=replace, keep_replaced=keep_replaced
        )

    async def purge(self, bucket: str, nuid: str) -> None:
        await self.bridge.call(self.store.purge, bucket, nuid)

    async def delete(self, bucket: str, name: str) -> ObjectInfo:
        return await self.bridge.call(self.store.delete, bucket, name)

    async def add_link(
        self, bucket: str, name: str, target_bucket: str, target_name: str
    ) -> ObjectInfo:
        return await self.bridge.call(self.store.add_link, bucket, name, target_bucket, target_name)

    async def add_bucket_link(self, bucket: str, name: str, target_bucket: str) -> ObjectInfo:
        return await self.bridge.call(self.store.add_bucket_link, bucket, name, target_bucket)

    # -- objects: data ---------------------------------------------------------------------
    async def put(
        self,
        bucket: str,
        name: str,
        source: Source,
        *,
        meta: ObjectMeta | None = None,
        chunk_size: int | None = None,
        if_revision: int | None = None,
    ) -> ObjectInfo:
        return await self.bridge.call(
            self.store.put,
            bucket,
            name,
            source,
            meta=meta,
            chunk_size=chunk_size,
            if_revision=if_revision,
        )

    async def layout(self, info: ObjectInfo) -> ChunkLayout:
        return await self.bridge.call(self.store.layout, info)

    async def read_chunks(self, layout: ChunkLayout, first: int, count: int) -> Chunks:
        return await self.bridge.call(self.store.read_chunks, layout, first, count)

    def feed(self) -> Feed:
        """A source for a streaming ``put`` (see ``Feed``)."""
        return Feed(self.bridge)

    def read_stream(self, info: ObjectInfo, *, window: int | None = None) -> AsyncIterator[Chunks]:
        """``window`` None: the backend's own default (it may differ from the API's)."""
        if window is None:
            return self.bridge.iterate(
                lambda: self.store.read_stream(info), batch=self.READ_STREAM_PER_HOP
            )
        return self.bridge.iterate(
            lambda: self.store.read_stream(info, window=window), batch=self.READ_STREAM_PER_HOP
        )

    async def get(self, bucket: str, name: str, sink: BinaryIO) -> ObjectInfo:
        return await self.bridge.call(self.store.get, bucket, name, sink)

    async def resolve(self, bucket: str, name: str) -> ObjectInfo:
        return await self.bridge.call(self.store.resolve, bucket, name)

    # -- change notices --------------------------------------------------------------------
    def watch(self, bucket: str, *, batched: bool = False) -> AsyncIterator[WatchEvent]:
        return self.bridge.iterate(
            lambda: self.store.watch(bucket, batched=batched), batch=self.WATCH_PER_HOP
        )

    def watch_buckets(self) -> AsyncIterator[BucketEvent]:
        return self.bridge.iterate(self.store.watch_buckets, batch=self.WATCH_BUCKETS_PER_HOP)

    async def close(self) -> None:
        await self.bridge.call(self.store.close)


if TYPE_CHECKING:
    # The type checker proves here that TrioStore has every ObjectStore method, same signature.
    def _is_an_object_store(store: TrioStore) -> ObjectStore:
        return store
