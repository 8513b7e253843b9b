"""Benchmarks: objfs's store layer against raw NATS and nats-py's ObjectStore; mount coherence.

Run it with ``scripts/bench`` (``--size 64M`` for a quick run, ``--json FILE`` to keep the
figures for BENCHMARKS.md). One run starts one private nats-server (``EmbeddedServer`` in a
temporary directory, default ``max_payload``), writes one object of ``--size`` bytes and
measures:

- the raw read ceiling: the faster of pipelined batch direct gets (ADR-31) and an ordered push
  consumer that answers flow control at once, each draining the object's chunk subject and
  doing nothing else;
- nats-py's ObjectStore ``put`` and ``get`` (``get`` with ``writeinto``; it is slow on large
  objects, so its full-size run is capped in time and reports the rate it reached);
- objfs's store layer ``put`` (from a file) and ``read_stream``, through the trio bridge as the
  filesystem uses it, and directly on asyncio;
- with FUSE available, on real mounts (``objfs mount`` child processes): the change-visibility
  latency (a file written and closed in one mount until a ``stat`` in a second mount of the
  bucket shows it, p50/p99 over ``--changes`` changes), and the scale figures of a bucket of
  ``--objects`` objects (time to mount with the snapshot in, time to list it, memory per
  object);

then prints the ratios the project targets, PASS or MISS.

This module imports nats (and nats-py's ObjectStore) on purpose: it measures raw NATS and the
official Python client. It is the one exception, besides ``objfs.store.nats_store``, to the
rule that only the NATS backend imports nats. Nothing in the filesystem imports this module.

Each benchmark is an async or sync function taking the ``Bench`` context and returning
``Result`` rows; ``BENCHMARKS`` lists them in order, so later benchmarks (a ``cp`` through a
mount, change-visibility latency) are added as one more function.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from objfs.bridge import AsyncioThread
from objfs.server import EmbeddedServer, find_binary

MiB = 1024 * 1024
CHUNK = 128 * 1024
"""The chunk size every writer here uses (ADR-20's default), so all read the same layout."""
SETTLE = 1.0
"""Seconds to pause between writing and reading: the server writes a put to disk (and purges
the chunks it replaced) after acknowledging it, and reads measured during that ran up to 2x
slower on the 2-core machine; reads are measured on a settled server."""


@dataclass
class Result:
    """One measured figure: ``bytes`` moved in ``seconds`` (best of ``samples``)."""

    key: str
    label: str
    bytes: int
    seconds: float
    samples: list[float] = field(default_factory=list)
    note: str = ""
    complete: bool = True
    """False when the run was cut at its time cap: the rate is what it reached until then."""

    @property
    def mib_s(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Bench:
    """What every benchmark gets: the server, the payload, the options, results so far."""

    server: EmbeddedServer
    thread: AsyncioThread
    workdir: Path
    payload: Path
    size: int
    digest: str
    """``SHA-256=`` + padded base64url digest of the payload (ADR-20 form)."""
    repeat: int
    natspy_get_cap: float
    natspy_small: int
    results: dict[str, Result] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    objects: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    """Objects written so far: label -> (bucket, nuid, chunks)."""
    changes: int = 200
    scale_objects: int = 100_000
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Figures that are not throughputs (latencies, times, memory), by benchmark."""

    def figure(self, key: str, label: str, **values: Any) -> None:
        self.figures[key] = {"label": label, **values}
        shown = ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
        )
        print(f"  {label:<52} {shown}", flush=True)

    def add(self, result: Result) -> None:
        self.results[result.key] = result
        state = "" if result.complete else " (cut at time cap)"
        print(
            f"  {result.label:<52} {result.mib_s:9.1f} MiB/s  "
            f"{result.bytes / MiB:7.1f} MiB in {result.seconds:6.2f} s{state}",
            flush=True,
        )


# --------------------------------------------------------------------------------------------
# helpers


def parse_size(text: str) -> int:
    """``256M``, ``1G``, ``512K`` or a plain byte count."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 256M, 1G, 65536)")
    mult = {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}[m.group(2).upper()]
    return int(m.group(1)) * mult


def make_payload(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their ADR-20 digest."""
    import base64

    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, 8 * MiB))
            h.update(piece)
            f.write(piece)
            left -= len(piece)
    return "SHA-256=" + base64.urlsafe_b64encode(h.digest()).decode()


async def connect_nats(ctx: Bench) -> NATS:
    # Big pending limits: a window of in-flight chunks must never trip nats-py's slow-consumer
    # cut-off, which would turn a throughput figure into a hang.
    return await nats.connect(ctx.server.url, connect_timeout=5, max_reconnect_attempts=0)


class CountingSink:
    """A write-only sink that counts bytes (no hashing, no copy): measures the reader only."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        self.size += n
        return n


async def best_of(
    ctx: Bench, fn: Callable[[], Awaitable[int]], runs: int | None = None
) -> tuple[int, float, list[float]]:
    """Run ``fn`` (returns bytes moved) ``runs`` times; bytes and best time, all times."""
    times: list[float] = []
    moved = 0
    for _ in range(runs or ctx.repeat):
        t0 = time.perf_counter()
        moved = await fn()
        times.append(time.perf_counter() - t0)
    return moved, min(times), times


# --------------------------------------------------------------------------------------------
# raw NATS reads


async def raw_batch_direct_get(
    nc: NATS, bucket: str, nuid: str, chunks: int, *, batch: int = 64, window: int = 4
) -> int:
    """Read every chunk of ``$O.<bucket>.C.<nuid>`` with pipelined batch direct gets.

    The first batch starts at sequence 0 and tells the first chunk's sequence; chunks of one
    put are contiguous (verified below), so the other batches are asked for at once, up to
    ``window`` in flight, each ending with a ``204 EOB`` status. Returns the bytes received.
    """
    # Measured: 256 x 2 chunks of 128 KiB (64 MiB) in flight made the server cut the
    # connection (its per-client pending limit, max_pending, is 64 MiB by default: a slow
    # consumer). Stay well below it.
    if batch * window * CHUNK > 32 * MiB:
        raise ValueError("more than 32 MiB of direct gets in flight would trip max_pending")
    stream = f"OBJ_{bucket}"
    subject = f"$O.{bucket}.C.{nuid}"
    api = f"$JS.API.DIRECT.GET.{stream}"
    inbox = nc.new_inbox()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    first_seq: asyncio.Future[int] = loop.create_future()
    state = {"bytes": 0, "msgs": 0, "next": 1, "in_flight": 1}
    batches = (chunks + batch - 1) // batch

    def request(k: int, seq: int) -> Awaitable[None]:
        body = json.dumps({"seq": seq, "batch": batch, "next_by_subj": subject}).encode()
        return nc.publish(api, body, reply=f"{inbox}.{k}")

    async def on_msg(msg: Msg) -> None:
        hdr = msg.headers or {}
        status = hdr.get("Status")
        if status is not None:
            if status != "204":
                if not done.done():
                    done.set_exception(RuntimeError(f"direct get: {status} {hdr}"))
                return
            state["in_flight"] -= 1
            k = state["next"]
            if k < batches and first_seq.done():
                state["next"] += 1
                state["in_flight"] += 1
                await request(k, first_seq.result() + k * batch)
            return
        if not first_seq.done():
            first_seq.set_result(int(hdr["Nats-Sequence"]))
        state["bytes"] += len(msg.data)
        state["msgs"] += 1
        if state["msgs"] == chunks and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(
        inbox + ".*", cb=on_msg, pending_bytes_limit=1024 * MiB, pending_msgs_limit=1 << 20
    )
    try:
        await request(0, 0)
        seq0 = await asyncio.wait_for(asyncio.shield(first_seq), 10)
        # Fill the window now that the first chunk's sequence is known.
        while state["next"] < min(batches, window):
            k = state["next"]
            state["next"] += 1
            state["in_flight"] += 1
            await request(k, seq0 + k * batch)
        await asyncio.wait_for(done, 120)
    finally:
        await sub.unsubscribe()
    return state["bytes"]


async def raw_push_consumer(
    nc: NATS, bucket: str, nuid: str, chunks: int, *, digest: bool = False
) -> int:
    """Read every chunk through an ordered-style push consumer answering flow control at once.

    An ephemeral consumer (no acks, memory state, flow control, heartbeats) delivers the chunk
    subject to an inbox; the callback counts bytes and answers each flow-control request
    immediately (nats-py's own get answers from a 0.25 s polling loop, which is why it stalls).
    With ``digest`` it also feeds every chunk to SHA-256 in line: the ceiling for a reader
    that verifies the digest, as objfs must.
    """
    sha = hashlib.sha256()
    stream = f"OBJ_{bucket}"
    subject = f"$O.{bucket}.C.{nuid}"
    deliver = nc.new_inbox()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    state = {"bytes": 0, "msgs": 0}

    async def on_msg(msg: Msg) -> None:
        if not msg.data and msg.headers and msg.headers.get("Status") == "100":
            if msg.reply:  # a flow-control request (heartbeats carry no reply)
                await nc.publish(msg.reply, b"")
            return
        if digest:
            sha.update(msg.data)
        state["bytes"] += len(msg.data)
        state["msgs"] += 1
        if state["msgs"] == chunks and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(
        deliver, cb=on_msg, pending_bytes_limit=1024 * MiB, pending_msgs_limit=1 << 20
    )
    config = {
        "deliver_subject": deliver,
        "filter_subject": subject,
        "deliver_policy": "all",
        "ack_policy": "none",
        "max_deliver": 1,
        "flow_control": True,
        "idle_heartbeat": 5_000_000_000,
        "mem_storage": True,
        "num_replicas": 1,
        "inactive_threshold": 30_000_000_000,
    }
    resp = await nc.request(
        f"$JS.API.CONSUMER.CREATE.{stream}",
        json.dumps({"stream_name": stream, "config": config}).encode(),
        timeout=5,
    )
    reply = json.loads(resp.data)
    if "error" in reply:
        await sub.unsubscribe()
        raise RuntimeError(f"consumer create: {reply['error']}")
    try:
        await asyncio.wait_for(done, 120)
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await nc.request(f"$JS.API.CONSUMER.DELETE.{stream}.{reply['name']}", b"", timeout=5)
    return state["bytes"]


async def raw_lean_drain(host: str, port: int, bucket: str, nuid: str, chunks: int) -> int:
    """Read every chunk with objfs's lean bulk reader (``objfs.store.nats_bulk``), counting
    bytes only: pipelined batch direct gets of ``BATCH_BYTES``, up to ``AHEAD_BYTES`` in flight
    (objfs's read settings), without verification or digest. Not part of the raw ceiling,
    which is defined with nats-py's primitives; it shows what the lean reader costs."""
    from objfs.store.nats_bulk import BulkConnection
    from objfs.store.nats_reads import AHEAD_BYTES, BATCH_BYTES

    stream = f"OBJ_{bucket}"
    subject = f"$O.{bucket}.C.{nuid}"
    per = max(1, BATCH_BYTES // CHUNK)
    ahead = max(per, AHEAD_BYTES // CHUNK)
    conn = await BulkConnection.open(host, port, timeout=30.0)
    try:
        first = await conn.wait(conn.request(stream, 0, 1, subject))
        seq0 = first.seqs[0]
        moved = issued = done = 0
        inflight: list[Any] = []
        while done < chunks:
            while issued < chunks and issued - done < ahead:
                n = min(per, chunks - issued)
                inflight.append((n, conn.request(stream, seq0 + issued, n, subject)))
                issued += n
            n, req = inflight.pop(0)
            batch = await conn.wait(req)
            if len(batch.datas) != n:
                raise RuntimeError(f"lean drain: {len(batch.datas)} chunks of {n}")
            moved += sum(map(len, batch.datas))
            done += n
        return moved
    finally:
        conn.close()


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
            return int(info.size)

        moved, best, times = await best_of(ctx, put)
        info = await obs.get_info("big")
        ctx.objects["natspy"] = ("bench_natspy", str(info.nuid), int(info.chunks))
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
    best = a if a.mib_s >= b.mib_s else b
    ctx.results["raw"] = dataclasses.replace(
        best, key="raw", label="raw read ceiling", note=f"from {best.key}"
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
    builds the object in memory with ``bytes +=`` (quadratic: the 1.5 MiB/s DESIGN.md measured
    at 256 MiB); a cut run has delivered nothing, so its rate is an upper bound, size / cap.
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


# --------------------------------------------------------------------------------------------
# real mounts: change visibility and scale

CHANGE_P99_TARGET_MS = 200.0
"""The change-visibility p99 the project targets on the 2-core machine."""


def _fuse_ok() -> str | None:
    """Why real mounts cannot be made here (None: they can)."""
    import shutil

    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        return "FUSE is not available (/dev/fuse and fusermount3)"
    return None


class _Mount:
    """``objfs mount`` as a child process (as tests/mount/mounting.py, kept minimal)."""

    def __init__(self, ctx: Bench, bucket: str, name: str) -> None:
        self.path = ctx.workdir / name
        self.path.mkdir()
        self.log = open(ctx.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "objfs", "mount", "--server", ctx.server.url]
        cmd += ["--timeout", "30", "--bucket", bucket, "--create", str(self.path)]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 600
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"objfs mount of {bucket} failed: see {self.log.name}")
            time.sleep(0.01)
        os.stat(self.path)
        self.seconds = time.perf_counter() - self.started

    def rss(self) -> int:
        """Resident memory of the mount process, bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        for _ in range(100):
            if not os.path.ismount(self.path):
                break
            if subprocess.run(
                ["fusermount3", "-u", str(self.path)], capture_output=True
            ).returncode:
                time.sleep(0.1)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-uz", str(self.path)], check=False)
        self.log.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bench_change_latency(ctx: Bench) -> None:
    """Write and close a file in one mount; time until a second mount's ``stat`` shows it.

    Half the changes create a new file (the second mount has looked for it first, so the
    kernel holds a negative dentry), half overwrite one with a new size (the second mount has
    its attributes cached). Both caches last 1 s: anything faster is the watcher's doing.
    """
    why = _fuse_ok()
    if why is not None:
        ctx.skipped["change_latency"] = why
        return
    a = _Mount(ctx, "bench_latency", "lat_a")
    try:
        b = _Mount(ctx, "bench_latency", "lat_b")
        try:
            times: list[float] = []
            for i in range(ctx.changes):
                name = f"c{i // 2:05}"
                size = i + 1
                there = b.path / name
                with contextlib.suppress(FileNotFoundError):
                    os.stat(there)  # prime b's caches with the old answer
                t0 = time.perf_counter()
                with open(a.path / name, "wb") as f:
                    f.write(b"x" * size)
                deadline = t0 + 10.0
                while True:
                    try:
                        if os.stat(there).st_size == size:
                            break
                    except FileNotFoundError:
                        pass
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"change {i} not visible in the other mount in 10 s")
                    time.sleep(0.0005)
                times.append((time.perf_counter() - t0) * 1000)
            p99 = _percentile(times, 99)
            ctx.figure(
                "change_latency",
                f"change visibility, {len(times)} changes (ms)",
                p50=_percentile(times, 50),
                p99=p99,
                max=max(times),
                target_p99=CHANGE_P99_TARGET_MS,
                verdict="PASS" if p99 < CHANGE_P99_TARGET_MS else "MISS",
            )
        finally:
            b.stop()
    finally:
        a.stop()


async def populate_metas(url: str, bucket: str, count: int, window: int = 2000) -> float:
    """Create bucket ``bucket`` with ``count`` empty objects ``f000000``... fast: raw
    JetStream publishes of ADR-20 meta messages (no chunks: an empty object has none), a
    window of publishes in flight. Returns the seconds it took."""
    import base64

    from objfs.store.api import BucketConfig, ObjectInfo
    from objfs.store.names import encode_name
    from objfs.store.nats_store import connect
    from objfs.store.wire import encode_info

    store = await connect([url], timeout=30.0)
    try:
        with contextlib.suppress(Exception):
            await store.create_bucket(BucketConfig(bucket))
    finally:
        await store.close()
    digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(b"").digest()).decode()
    nc = await nats.connect(url, pending_size=256 * MiB)
    js = nc.jetstream(timeout=60)
    t0 = time.perf_counter()
    try:
        now = time.time_ns()
        for start in range(0, count, window):
            pubs = []
            for i in range(start, min(count, start + window)):
                name = f"f{i:06}"
                info = ObjectInfo(bucket, name, f"bench{i:018}", digest=digest, mtime_ns=now)
                pubs.append(
                    js.publish(
                        f"$O.{bucket}.M.{encode_name(name)}",
                        encode_info(info),
                        headers={"Nats-Rollup": "sub"},
                    )
                )
            await asyncio.gather(*pubs)
    finally:
        await nc.close()
    return time.perf_counter() - t0


def bench_scale(ctx: Bench) -> None:
    """A bucket of ``--objects`` objects: populate, mount, list (``ls -f`` and ``ls -l``),
    and the mount's resident memory per object against a mount of an empty bucket."""
    why = _fuse_ok()
    if why is not None:
        ctx.skipped["scale"] = why
        return
    n = ctx.scale_objects
    populate = ctx.thread.run(populate_metas(ctx.server.url, "bench_scale", n))
    empty = _Mount(ctx, "bench_scale_empty", "scale_empty")
    try:
        os.listdir(empty.path)
        rss_empty = empty.rss()
    finally:
        empty.stop()
    m = _Mount(ctx, "bench_scale", "scale")
    try:
        t0 = time.perf_counter()
        names = os.listdir(m.path)
        list_s = time.perf_counter() - t0
        if len(names) != n:
            raise RuntimeError(f"listed {len(names)} of {n} objects")
        t0 = time.perf_counter()
        for entry in os.scandir(m.path):
            entry.stat()
        list_l_s = time.perf_counter() - t0
        rss = m.rss()
        ctx.figure(
            "scale",
            f"bucket of {n} objects",
            populate_s=populate,
            mount_s=m.seconds,
            ls_s=list_s,
            ls_l_s=list_l_s,
            rss_mib=rss / MiB,
            rss_empty_mib=rss_empty / MiB,
            bytes_per_object=(rss - rss_empty) / n,
        )
    finally:
        m.stop()


BENCHMARKS: list[tuple[str, Callable[[Bench], Any]]] = [
    ("natspy_put", bench_natspy_put),
    ("raw", bench_raw),
    ("objfs_trio", bench_objfs_trio),
    ("objfs_asyncio", bench_objfs_asyncio),
    ("natspy_get", bench_natspy_get),
    ("change_latency", bench_change_latency),
    ("scale", bench_scale),
]
"""In run order: nats-py's put first (it writes the object the raw reads use), nats-py's slow
get last (its cut run is the least predictable)."""


# --------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class Target:
    label: str
    numerator: str
    denominator: str
    minimum: float


TARGETS = [
    Target("objfs get / raw read ceiling", "objfs_get", "raw", 0.9),
    Target("objfs get / nats-py get (writeinto)", "objfs_get", "natspy_get", 20.0),
    Target("objfs get / nats-py get (in memory)", "objfs_get", "natspy_get_mem", 20.0),
    Target("objfs put / nats-py put", "objfs_put", "natspy_put", 1.3),
]
INFO_RATIOS = [
    Target("objfs get / raw + SHA-256 (no target)", "objfs_get", "raw_push_sha", 0.0),
    Target("objfs get / lean reader drain (no target)", "objfs_get", "raw_lean", 0.0),
    Target("objfs get / raw push, malloc tuned (no target)", "objfs_get", "raw_push_tuned", 0.0),
    Target("objfs get asyncio / raw ceiling (no target)", "objfs_get_asyncio", "raw", 0.0),
]
"""Explanatory ratios, printed without a verdict."""


def machine() -> dict[str, str]:
    """Where the figures come from."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        server = subprocess.run(
            [find_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception as e:  # the report must not die on a missing detail
        server = f"unknown ({e})"
    from importlib.metadata import version

    rev = ""
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "nats-server": server,
        "nats-py": version("nats-py"),
        "os": f"{platform.system()} {platform.release()}",
        "objfs commit": rev or "unknown",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def ratios(ctx: Bench, targets: list[Target]) -> list[dict[str, Any]]:
    out = []
    for t in targets:
        num, den = ctx.results.get(t.numerator), ctx.results.get(t.denominator)
        if num is None or den is None or den.mib_s == 0:
            out.append({"target": t.label, "minimum": t.minimum, "ratio": None, "verdict": "N/A"})
            continue
        r = num.mib_s / den.mib_s
        # A denominator that never finished has an upper-bound rate: the ratio is a lower bound.
        bound = not den.complete and not den.note.startswith("cut")
        out.append(
            {
                "target": t.label,
                "minimum": t.minimum,
                "ratio": r,
                "bound": bound,
                "verdict": ("PASS" if r >= t.minimum else "MISS") if t.minimum else "",
            }
        )
    return out


def report(ctx: Bench, info: dict[str, str]) -> dict[str, Any]:
    print("\nmachine:")
    for k, v in info.items():
        print(f"  {k:<13} {v}")
    print(
        f"\nobject size {ctx.size / MiB:.0f} MiB, chunk {CHUNK // 1024} KiB, "
        f"best of {ctx.repeat} (nats-py get: one run)\n"
    )
    print(f"  {'figure':<56} {'MiB/s':>9} {'seconds':>9}")
    for r in ctx.results.values():
        rate = f"{r.mib_s:9.1f}" if r.complete or r.note.startswith("cut") else f"<{r.mib_s:8.1f}"
        note = f"  [{r.note}]" if r.note else ""
        print(f"  {r.label:<56} {rate} {r.seconds:9.2f}{note}")
    for k, why in ctx.skipped.items():
        print(f"  {k:<56} {'-':>9}  not measured: {why}")
    for fig in ctx.figures.values():
        shown = ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in fig.items()
            if k != "label"
        )
        print(f"  {fig['label']:<56} {shown}")
    print()
    rows = ratios(ctx, TARGETS)
    info_rows = ratios(ctx, INFO_RATIOS)
    for row in rows + info_rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        if row.get("bound"):
            ratio = ">=" + ratio
        want = f"(target >= {row['minimum']:g})" if row["minimum"] else ""
        print(f"  {row['target']:<46} {ratio:>7}  {want:<17} {row['verdict']}")
    if any(r.get("bound") for r in rows):
        print(
            "\n  '>=': the denominator did not finish within its cap, so its rate is an upper "
            "bound and the ratio a lower bound."
        )
    return {
        "machine": info,
        "size": ctx.size,
        "chunk_size": CHUNK,
        "repeat": ctx.repeat,
        "results": {k: {**dataclasses.asdict(r), "mib_s": r.mib_s} for k, r in ctx.results.items()},
        "skipped": ctx.skipped,
        "figures": ctx.figures,
        "ratios": rows,
        "info_ratios": info_rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=256 * MiB, help="object size (256M)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, best kept (3)")
    parser.add_argument(
        "--natspy-get-cap",
        type=float,
        default=60.0,
        help="seconds nats-py's get of the full object may run before it is cut (60)",
    )
    parser.add_argument(
        "--natspy-small",
        type=parse_size,
        default=16 * MiB,
        help="also time nats-py's get in full on an object this big (16M)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[n for n, _ in BENCHMARKS],
        help="run only these benchmarks (repeatable; natspy_put always runs)",
    )
    parser.add_argument(
        "--changes", type=int, default=200, help="changes timed for change visibility (200)"
    )
    parser.add_argument(
        "--objects", type=int, default=100_000, help="objects in the scale bucket (100000)"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args(argv)

    info = machine()
    with tempfile.TemporaryDirectory(prefix="objfs-bench-") as tmp:
        work = Path(tmp)
        payload = work / "payload.bin"
        print(f"writing a {args.size / MiB:.0f} MiB payload ...", flush=True)
        digest = make_payload(payload, args.size)
        with EmbeddedServer(work / "nats") as server, AsyncioThread("bench-asyncio") as thread:
            ctx = Bench(
                server=server,
                thread=thread,
                workdir=work,
                payload=payload,
                size=args.size,
                digest=digest,
                repeat=max(1, args.repeat),
                natspy_get_cap=args.natspy_get_cap,
                natspy_small=args.natspy_small,
                changes=max(1, args.changes),
                scale_objects=max(1, args.objects),
            )
            print(f"nats-server at {server.url}; measuring:", flush=True)
            for name, fn in BENCHMARKS:
                if args.only and name not in args.only and name != "natspy_put":
                    continue
                if asyncio.iscoroutinefunction(fn):
                    thread.run(fn(ctx))
                else:
                    fn(ctx)
    data = report(ctx, info)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
