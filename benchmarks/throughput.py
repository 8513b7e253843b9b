"""Put and read throughput: nats-py's ObjectStore, and objfs's store layer on asyncio and
through the trio bridge as the filesystem uses it (each benchmark adds ``Result`` rows)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import SETTLE, Bench, CountingSink, MiB, Result, best_of, connect_nats
from benchmarks.raw import raw_batch_direct_get, raw_lean_drain, raw_push_consumer

# --------------------------------------------------------------------------------------------
# benchmarks (each: ctx -> None, adding Result rows)


async def bench_natspy_put(ctx: Bench) -> None:
    """nats-py ObjectStore.put from a file (it waits for each chunk's ack in turn)."""
    nc = await connect_nats(ctx)
    try:
        js = nc.jetstream(timeout=30)
        obs = await js.create_object_store("bench_natspy")

        async def put() -> int:
            with open(ctx.payload, "rb") as f:
                info = await obs.put("big", f)
            assert info.digest == ctx.digest, "nats-py put stored a different digest"
            return int(info.size or 0)

        moved, best, times = await best_of(ctx, put)
        info = await obs.get_info("big")
        ctx.objects["natspy"] = ("bench_natspy", str(info.nuid), int(info.chunks or 0))
        ctx.add(Result("natspy_put", "nats-py ObjectStore.put (file)", moved, best, times))
    finally:
        await nc.close()


async def bench_raw(ctx: Bench) -> None:
    """The raw read ceiling on the object nats-py wrote (both methods, best of repeats)."""
    bucket, nuid, chunks = ctx.objects["natspy"]
    await asyncio.sleep(SETTLE)
    nc = await connect_nats(ctx)
    try:

        async def batch() -> int:
            return await raw_batch_direct_get(nc, bucket, nuid, chunks)

        async def push() -> int:
            return await raw_push_consumer(nc, bucket, nuid, chunks)

        async def push_sha() -> int:
            return await raw_push_consumer(nc, bucket, nuid, chunks, digest=True)

        for key, label, fn in (
            ("raw_batch", "raw: pipelined batch direct get (64 x 4)", batch),
            ("raw_push", "raw: push consumer, flow control answered", push),
            ("raw_push_sha", "raw: push consumer + SHA-256 in line (info)", push_sha),
        ):
            moved, best, times = await best_of(ctx, fn)
            if moved != ctx.size:
                raise RuntimeError(f"{key} read {moved} bytes of {ctx.size}")
            ctx.add(Result(key, label, moved, best, times))
    finally:
        await nc.close()
    a, b = ctx.results["raw_batch"], ctx.results["raw_push"]
    faster = a if a.mib_s >= b.mib_s else b
    ctx.results["raw"] = dataclasses.replace(
        faster, key="raw", label="raw read ceiling", note=f"from {faster.key}"
    )

    async def lean() -> int:
        return await raw_lean_drain(ctx.server.host, ctx.server.port, bucket, nuid, chunks)

    moved, best_t, times = await best_of(ctx, lean)
    if moved != ctx.size:
        raise RuntimeError(f"raw_lean read {moved} bytes of {ctx.size}")
    ctx.add(Result("raw_lean", "raw: objfs lean reader drain (info)", moved, best_t, times))
    # The lean reader set glibc's malloc thresholds for the whole process (nats_bulk's
    # tune_malloc); nats-py's receive path allocates chunk-sized bytes too, so measure its
    # ceiling again in the tuned process, for comparison (the headline stays the one above).
    nc = await connect_nats(ctx)
    try:
        for key, label, fn in (
            ("raw_batch_tuned", "raw: batch direct get, malloc tuned (info)", batch),
            ("raw_push_tuned", "raw: push consumer, malloc tuned (info)", push),
        ):
            moved, best_t, times = await best_of(ctx, fn)
            ctx.add(Result(key, label, moved, best_t, times))
    finally:
        await nc.close()


async def _natspy_get(ctx: Bench, name: str, size: int, cap: float, *, writeinto: bool) -> Result:
    """One nats-py get on its own connection, cut after ``cap`` seconds.

    With ``writeinto`` the chunks go to a counting sink (nats-py hands each to an executor
    thread); a cut run reports the bytes delivered so far over the cap. Without it nats-py
    builds the object in memory with ``bytes +=`` (quadratic: 1.5 MiB/s measured at
    256 MiB in the starting design's notes); a cut run has delivered nothing, so its rate is
    an upper bound, size / cap.
    A cut get leaves nats-py's subscription running; closing the connection ends it, so
    nothing of it slows the benchmarks after.
    """
    nc = await connect_nats(ctx)
    sink = CountingSink()
    t0 = time.perf_counter()
    complete = True
    try:
        obs = await nc.jetstream(timeout=30).object_store("bench_natspy")
        try:
            if writeinto:
                # nats-py annotates writeinto as io.BufferedIOBase but only calls .write on it.
                await asyncio.wait_for(obs.get(name, writeinto=sink), cap)  # type: ignore[arg-type]
            else:
                res = await asyncio.wait_for(obs.get(name), cap)
                sink.write(res.data or b"")
        except TimeoutError:
            complete = False
        elapsed = time.perf_counter() - t0
    finally:
        await nc.close()
    how = "writeinto" if writeinto else "in memory"
    label = f"nats-py ObjectStore.get ({size / MiB:.0f} MiB object, {how})"
    if complete:
        if sink.size != size:
            raise RuntimeError(f"nats-py get returned {sink.size} bytes of {size}")
        return Result("", label, size, elapsed, [elapsed])
    if writeinto:
        note = f"cut at {cap:.0f} s: average rate over the bytes delivered by then"
        return Result("", label, sink.size, elapsed, [elapsed], note=note, complete=False)
    note = f"did not finish in {cap:.0f} s: rate is an upper bound"
    return Result("", label, size, elapsed, [elapsed], note=note, complete=False)


async def bench_natspy_get(ctx: Bench) -> None:
    """nats-py ObjectStore.get: with writeinto and in memory, on a small and the full object."""
    small = min(ctx.natspy_small, ctx.size)
    if small < ctx.size:
        nc = await connect_nats(ctx)
        try:
            obs = await nc.jetstream(timeout=30).object_store("bench_natspy")
            with open(ctx.payload, "rb") as f:
                await obs.put("small", f.read(small))
        finally:
            await nc.close()
        await asyncio.sleep(SETTLE)
        for key, w in (("natspy_get_small", True), ("natspy_get_mem_small", False)):
            r = await _natspy_get(ctx, "small", small, max(ctx.natspy_get_cap, 120), writeinto=w)
            ctx.add(dataclasses.replace(r, key=key))
    for key, w in (("natspy_get", True), ("natspy_get_mem", False)):
        r = await _natspy_get(ctx, "big", ctx.size, ctx.natspy_get_cap, writeinto=w)
        ctx.add(dataclasses.replace(r, key=key))


def _objfs_connect() -> Callable[..., Awaitable[Any]] | None:
    try:
        from objfs.store.nats_store import connect
    except ImportError:
        return None
    return connect


async def bench_objfs_asyncio(ctx: Bench) -> None:
    """objfs's NATS store directly on asyncio: put from a file, read_stream into a sink."""
    from objfs.store.api import BucketConfig

    connect = _objfs_connect()
    if connect is None:
        ctx.skipped["objfs"] = "objfs.store.nats_store is not in this tree yet"
        return
    store = await connect([ctx.server.url], timeout=30.0)
    try:
        with contextlib.suppress(Exception):
            await store.create_bucket(BucketConfig("bench_objfs"))

        async def put() -> int:
            with open(ctx.payload, "rb") as f:
                info = await store.put("bench_objfs", "big", f)
            assert info.digest == ctx.digest, "objfs put stored a different digest"
            return int(info.size)

        async def get() -> int:
            info = await store.info("bench_objfs", "big")
            sink = CountingSink()
            async for batch in store.read_stream(info):
                for chunk in batch:
                    sink.write(chunk)
            return sink.size

        moved, best, times = await best_of(ctx, put)
        ctx.add(Result("objfs_put_asyncio", "objfs store put (file), asyncio", moved, best, times))
        await asyncio.sleep(SETTLE)
        moved, best, times = await best_of(ctx, get)
        if moved != ctx.size:
            raise RuntimeError(f"objfs read_stream returned {moved} bytes of {ctx.size}")
        ctx.add(Result("objfs_get_asyncio", "objfs store read_stream, asyncio", moved, best, times))
    finally:
        await store.close()


def bench_objfs_trio(ctx: Bench) -> None:
    """objfs's NATS store through the bridge from trio (TrioStore), as the filesystem uses it."""
    import trio

    from objfs.bridge import Bridge, TrioStore
    from objfs.store.api import BucketConfig

    connect = _objfs_connect()
    if connect is None:
        ctx.skipped["objfs"] = "objfs.store.nats_store is not in this tree yet"
        return

    async def main() -> None:
        bridge = Bridge(ctx.thread)
        backend = await bridge.call(connect, [ctx.server.url], timeout=30.0)
        store = TrioStore(backend, bridge)
        try:
            with contextlib.suppress(Exception):
                await store.create_bucket(BucketConfig("bench_objfs"))
            put_times: list[float] = []
            get_times: list[float] = []
            for _ in range(ctx.repeat):
                t0 = time.perf_counter()
                with open(ctx.payload, "rb") as f:
                    info = await store.put("bench_objfs", "big_trio", f)
                put_times.append(time.perf_counter() - t0)
                assert info.digest == ctx.digest, "objfs put stored a different digest"
            await trio.sleep(SETTLE)
            for _ in range(ctx.repeat):
                t0 = time.perf_counter()
                info = await store.info("bench_objfs", "big_trio")
                sink = CountingSink()
                async for batch in store.read_stream(info):
                    for chunk in batch:
                        sink.write(chunk)
                get_times.append(time.perf_counter() - t0)
                if sink.size != ctx.size:
                    raise RuntimeError(f"objfs read_stream returned {sink.size} of {ctx.size}")
            ctx.add(
                Result(
                    "objfs_put",
                    "objfs store put (file), trio via bridge",
                    ctx.size,
                    min(put_times),
                    put_times,
                )
            )
            ctx.add(
                Result(
                    "objfs_get",
                    "objfs store read_stream, trio via bridge",
                    ctx.size,
                    min(get_times),
                    get_times,
                )
            )
        finally:
            await bridge.call(backend.close)

    trio.run(main)
