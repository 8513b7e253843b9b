"""Speed through the mount (issue 12): what users get from ``dd``, ``cp``, ``tar`` and ``ls`` on
a real ``objfs mount``, each against a reference measured in the same run on the same server.

Every figure is the median of ``--repeat`` runs (3), and so is its reference; a ratio is
``reference time / objfs time`` for the same work (higher is better, 1.0 is parity):

- cold sequential read of ``--size`` bytes (``dd bs=1M`` on a fresh mount) against the raw
  read ceiling on the same object (the faster of the two nats-py drains of ``raw``);
- the same over TLS (a TLS server started here, ``--tls-ca``) against a raw TLS drain;
- warm re-read (the same file again in the same mount) against tmpfs (/dev/shm);
- sequential write (``dd bs=1M conv=fsync``) against objfs's store ``put`` of the same file,
  plain and TLS;
- ``cp -r`` of many 4 KiB files into the mount against nats-py ``ObjectStore.put`` of the same
  files one after another, and ``cp -r`` out of a fresh mount against tmpfs;
- ``tar x`` of many 0.1-3 KB files (seconds; tmpfs for scale);
- random 4 KiB reads over a large object, buffered and ``O_DIRECT``, against sequential
  single direct-get round trips (nats-py, one chunk each);
- ``ls -l`` of many objects on a fresh mount (cold) and again (warm) against nats-py's list
  and tmpfs;
- the daemon's peak RSS (``VmHWM``) copying a large file in and out with ``--cache-size``
  256M, and with four readers streaming four files at once.

Mount ready time of a big bucket and change visibility are ``mounts.bench_scale`` and
``mounts.bench_change_latency``, run in the same suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import mmap
import os
import random
import shutil
import statistics
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from benchmarks.common import SETTLE, Bench, MiB, Result, make_payload
from benchmarks.mounts import Mount, fuse_ok
from benchmarks.raw import raw_batch_direct_get, raw_push_consumer
from benchmarks.report import Target, print_figures
from benchmarks.tls import TlsFiles, TlsServer, make_certs, openssl_missing
from objfs.store.nats_protocol import API, SEQUENCE
from objfs.store.nats_subjects import bucket_stream, chunk_subject

CACHE = "256M"
CACHE_BYTES = 256 * MiB
RSS_SLACK = 64 * MiB
"""Target 7: peak daemon RSS <= cache size + 64 MiB."""
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class MountSizes:
    """What the suite moves (``--quick`` shrinks all of it)."""

    seq: int = 256 * MiB
    big: int = 1024 * MiB
    streams: int = 256 * MiB
    small_files: int = 1000
    tar_files: int = 5000
    ls_objects: int = 10_000
    random_seconds: float = 3.0

    @classmethod
    def quick(cls) -> MountSizes:
        return cls(8 * MiB, 16 * MiB, 4 * MiB, 40, 100, 300, 0.3)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


def dd(src: Path | str, dst: Path | str, *extra: str) -> None:
    run("dd", f"if={src}", f"of={dst}", "bs=1M", *extra)


def add(ctx: Bench, key: str, label: str, moved: int, samples: list[float]) -> None:
    """A row whose ``seconds`` is the median of ``samples`` (``moved``: bytes, or operations
    for rows whose key is in ``OPS``)."""
    r = Result(key, label, moved, median(samples), samples, note="median")
    ctx.results[key] = r
    print(f"  {label:<58} {rate(r):>16}  median {r.seconds:8.4f} s of {len(samples)}", flush=True)


OPS = {"m_rand": "IOPS", "m_rand_direct": "IOPS", "direct_get": "IOPS"}
OPS |= {k: "objects/s" for k in ("m_ls_cold", "m_ls_warm", "natspy_list", "tmpfs_ls")}


def rate(r: Result) -> str:
    unit = OPS.get(r.key)
    if unit is None:
        return f"{r.mib_s:.1f} MiB/s"
    per = (r.bytes if unit != "IOPS" else 1) / r.seconds if r.seconds else 0.0
    return f"{per:.0f} {unit}"


@dataclass(frozen=True)
class Server:
    """Where one group of rows runs: the plain server or the TLS one."""

    url: str
    tls: TlsFiles | None
    tag: str

    def mount_args(self) -> tuple[str, ...]:
        return ("--tls-ca", str(self.tls.ca)) if self.tls else ()

    async def nats(self) -> NATS:
        tls = self.tls.client_context() if self.tls else None
        return await nats.connect(self.url, tls=tls, connect_timeout=10, max_reconnect_attempts=0)

    async def store(self) -> Any:
        from objfs.options import ConnectOptions
        from objfs.store.api import BucketConfig
        from objfs.store.nats_store import connect

        store = await connect(
            ConnectOptions(
                servers=[self.url], timeout=30.0, tls_ca=str(self.tls.ca) if self.tls else None
            )
        )
        for bucket in ("bench_put", "bench_big"):
            with contextlib.suppress(Exception):
                await store.create_bucket(BucketConfig(bucket))
        return store


def mount(ctx: Bench, srv: Server, bucket: str, name: str, *extra: str) -> Mount:
    return Mount(ctx, bucket, f"{name}{srv.tag}", url=srv.url, extra=(*srv.mount_args(), *extra))


# --------------------------------------------------------------------------------------------
# sequential read and write, plain and TLS


async def _info(srv: Server, bucket: str, name: str) -> Any:
    """The object's info, read through objfs's store on ``srv``."""
    store = await srv.store()
    try:
        return await store.info(bucket, name)
    finally:
        await store.close()


async def _warm_server(srv: Server, bucket: str, name: str) -> None:
    """Drain an object once, so that nats-server holds its message blocks in memory.

    A random direct get of a block the server has not loaded costs 3-10x a warm one
    (measured: mean 2.6 ms cold, 0.6 ms warm, on the same chunks), so whichever side ran
    second used to meet warm blocks; each measured read, the mount's and the reference's,
    now starts from the same server state.
    """
    info = await _info(srv, bucket, name)
    nc = await srv.nats()
    try:
        await raw_push_consumer(nc, bucket, info.nuid, info.chunks)
    finally:
        await nc.close()


async def _raw_ceiling(ctx: Bench, srv: Server, bucket: str, name: str) -> tuple[int, list[float]]:
    """Median-best raw drain of an object: the faster (by median) of batch direct gets and a
    push consumer, each ``repeat`` times, on nats-py (over TLS for the TLS server)."""
    info = await _info(srv, bucket, name)
    nc = await srv.nats()
    try:
        best: list[float] | None = None
        for fn in (raw_batch_direct_get, raw_push_consumer):
            times = []
            for _ in range(ctx.repeat):
                t0 = time.perf_counter()
                moved = await fn(nc, bucket, info.nuid, info.chunks)
                times.append(time.perf_counter() - t0)
                if moved != info.size:
                    raise RuntimeError(f"raw drain read {moved} of {info.size} bytes")
            if best is None or median(times) < median(best):
                best = times
        assert best is not None
        return info.size, best
    finally:
        await nc.close()


async def _store_puts(ctx: Bench, srv: Server, payload: Path) -> list[float]:
    store = await srv.store()
    try:
        times = []
        for _ in range(ctx.repeat):
            t0 = time.perf_counter()
            with open(payload, "rb") as f:
                await store.put("bench_put", "seq", f)
            times.append(time.perf_counter() - t0)
            await asyncio.sleep(SETTLE)
        return times
    finally:
        await store.close()


def bench_sequential(ctx: Bench, srv: Server) -> None:
    """dd write (conv=fsync) and cold/warm dd reads of ``ctx.payload``; store put; raw drain."""
    size = ctx.payload.stat().st_size
    t = srv.tag
    bucket = f"bench_seq{t.replace('_', '')}"
    m = mount(ctx, srv, bucket, "seq")
    try:
        writes = []
        for _ in range(ctx.repeat):
            t0 = time.perf_counter()
            dd(ctx.payload, m.path / "big", "conv=fsync")
            writes.append(time.perf_counter() - t0)
            time.sleep(SETTLE)
    finally:
        m.stop()
    add(ctx, f"m_write{t}", f"mount: dd write conv=fsync{t}", size, writes)
    puts = ctx.thread.run(_store_puts(ctx, srv, ctx.payload))
    add(ctx, f"m_put{t}", f"store put of the same file{t}", size, puts)
    time.sleep(SETTLE)
    cold, warm = [], []
    for i in range(ctx.repeat):
        m = mount(ctx, srv, bucket, "seq")
        try:
            ctx.thread.run(_warm_server(srv, bucket, "big"))  # as for the raw drain after
            t0 = time.perf_counter()
            dd(m.path / "big", "/dev/null")
            cold.append(time.perf_counter() - t0)
            if i == 0:
                warm = timed(functools.partial(dd, m.path / "big", "/dev/null"), ctx.repeat)
        finally:
            m.stop()
    add(ctx, f"m_cold{t}", f"mount: cold dd read, fresh mount{t}", size, cold)
    if not t:
        add(ctx, "m_warm", "mount: warm dd re-read", size, warm)
    moved, raw = ctx.thread.run(_raw_ceiling(ctx, srv, bucket, "big"))
    add(ctx, f"m_raw{t}", f"raw drain of the same object{t}", moved, raw)


def bench_tmpfs(ctx: Bench) -> None:
    """Warm dd read from tmpfs (the warm re-read's reference)."""
    copy = SHM / f"objfs-bench-{os.getpid()}.bin"
    try:
        shutil.copyfile(ctx.payload, copy)
        dd(copy, "/dev/null")  # in the page cache: it is tmpfs, but read once like the mount
        times = timed(lambda: dd(copy, "/dev/null"), ctx.repeat)
        add(ctx, "tmpfs_read", "tmpfs: warm dd read", copy.stat().st_size, times)
    finally:
        copy.unlink(missing_ok=True)


def bench_seq_plain(ctx: Bench) -> None:
    why = fuse_ok()
    if why:
        ctx.skipped["mount_seq"] = why
        return
    bench_sequential(ctx, Server(ctx.server.url, None, ""))
    bench_tmpfs(ctx)


def bench_seq_tls(ctx: Bench) -> None:
    why = fuse_ok() or openssl_missing()
    if why:
        ctx.skipped["mount_tls"] = why
        return
    files = make_certs(ctx.workdir / "tls")
    with TlsServer(ctx.workdir / "nats-tls", files) as server:
        bench_sequential(ctx, Server(server.url, files, "_tls"))


# --------------------------------------------------------------------------------------------
# small files


def _small_tree(root: Path, count: int, sizes: Callable[[random.Random], int]) -> int:
    rng = random.Random(12)
    total = 0
    root.mkdir(parents=True)
    for i in range(count):
        sub = root / f"d{i // 100:03}"
        sub.mkdir(exist_ok=True)
        n = sizes(rng)
        (sub / f"f{i:05}").write_bytes(rng.randbytes(n))
        total += n
    return total


async def _natspy_small_puts(ctx: Bench, src: Path) -> list[float]:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    nc = await ctx_nats(ctx)
    try:
        obs = await nc.jetstream(timeout=30).create_object_store("bench_small_natspy")
        times = []
        for r in range(ctx.repeat):
            t0 = time.perf_counter()
            for p in files:
                await obs.put(f"r{r}/{p.relative_to(src)}", p.read_bytes())
            times.append(time.perf_counter() - t0)
        return times
    finally:
        await nc.close()


async def ctx_nats(ctx: Bench) -> NATS:
    return await nats.connect(ctx.server.url, connect_timeout=10, max_reconnect_attempts=0)


def bench_small_files(ctx: Bench, sizes: MountSizes) -> None:
    """cp -r in and out of many 4 KiB files; tar x of many 0.1-3 KB files."""
    why = fuse_ok()
    if why:
        ctx.skipped["mount_small"] = why
        return
    scratch = SHM / f"objfs-bench-small-{os.getpid()}"
    try:
        src = scratch / "src"
        moved = _small_tree(src, sizes.small_files, lambda _: 4096)
        m = mount(ctx, Server(ctx.server.url, None, ""), "bench_small", "small")
        try:
            cp_in = []
            for r in range(ctx.repeat):
                t0 = time.perf_counter()
                run("cp", "-r", src, m.path / f"r{r}")
                cp_in.append(time.perf_counter() - t0)
        finally:
            m.stop()
        n = sizes.small_files
        add(ctx, "m_cp_in", f"mount: cp -r in, {n} x 4 KiB", moved, cp_in)
        puts = ctx.thread.run(_natspy_small_puts(ctx, src))
        add(
            ctx,
            "natspy_small_put",
            f"nats-py ObjectStore.put x {n}, one after another",
            moved,
            puts,
        )
        cp_out = []
        for r in range(ctx.repeat):
            m = mount(ctx, Server(ctx.server.url, None, ""), "bench_small", "small")
            try:
                t0 = time.perf_counter()
                run("cp", "-r", m.path / f"r{r}", scratch / f"out{r}")
                cp_out.append(time.perf_counter() - t0)
            finally:
                m.stop()
        add(ctx, "m_cp_out", f"mount: cp -r out, {n} x 4 KiB, fresh mount", moved, cp_out)
        tmp_out = timed(
            lambda: run("cp", "-r", src, scratch / f"t{time.monotonic_ns()}"), ctx.repeat
        )
        add(ctx, "tmpfs_cp", f"tmpfs: cp -r, {n} x 4 KiB", moved, tmp_out)

        tar_src = scratch / "tarsrc"
        tar_bytes = _small_tree(tar_src, sizes.tar_files, lambda rng: rng.randint(100, 3000))
        archive = scratch / "small.tar"
        with tarfile.open(archive, "w") as tf:
            tf.add(tar_src, arcname="t")
        m = mount(ctx, Server(ctx.server.url, None, ""), "bench_tar", "tar")
        try:
            tar = []
            for r in range(ctx.repeat):
                (m.path / f"x{r}").mkdir()
                t0 = time.perf_counter()
                run("tar", "xf", archive, "-C", m.path / f"x{r}")
                tar.append(time.perf_counter() - t0)
        finally:
            m.stop()
        add(ctx, "m_tar", f"mount: tar x, {sizes.tar_files} files of 0.1-3 KB", tar_bytes, tar)

        def tar_tmpfs() -> None:
            dst = scratch / f"tx{time.monotonic_ns()}"
            dst.mkdir()
            run("tar", "xf", archive, "-C", dst)

        add(ctx, "tmpfs_tar", "tmpfs: tar x, same archive", tar_bytes, timed(tar_tmpfs, ctx.repeat))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# a big object: RSS in and out, four streams, random reads


def _hwm(m: Mount) -> int:
    return m.rss("VmHWM")


def bench_big(ctx: Bench, sizes: MountSizes) -> None:
    why = fuse_ok()
    if why:
        ctx.skipped["mount_big"] = why
        return
    big = ctx.workdir / "big.bin"
    make_payload(big, sizes.big)
    srv = Server(ctx.server.url, None, "")
    m = mount(ctx, srv, "bench_big", "big", "--cache-size", CACHE)
    try:
        dd(big, m.path / "big", "conv=fsync")
        in_peak = _hwm(m)
        time.sleep(SETTLE)
        dd(m.path / "big", ctx.workdir / "big.out")
        out_peak = _hwm(m)
    finally:
        m.stop()
    (ctx.workdir / "big.out").unlink()
    ctx.figure(
        "m_rss_copy",
        f"daemon peak RSS, {sizes.big // MiB} MiB in and out, cache {CACHE} (MiB)",
        after_in=in_peak / MiB,
        after_out=out_peak / MiB,
        target=(CACHE_BYTES + RSS_SLACK) / MiB,
        verdict="PASS" if out_peak <= CACHE_BYTES + RSS_SLACK else "MISS",
    )

    async def put_streams() -> None:
        store = await srv.store()
        try:
            with open(big, "rb") as f:
                for i in range(4):
                    f.seek(i * sizes.streams)
                    await store.put("bench_big", f"s{i}", f.read(sizes.streams))
        finally:
            await store.close()

    ctx.thread.run(put_streams())
    big.unlink()
    time.sleep(SETTLE)
    m = mount(ctx, srv, "bench_big", "big", "--cache-size", CACHE)
    try:
        procs = [
            subprocess.Popen(
                ["dd", f"if={m.path / f's{i}'}", "of=/dev/null", "bs=1M"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(4)
        ]
        t0 = time.perf_counter()
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("a streaming reader failed")
        elapsed = time.perf_counter() - t0
        peak = _hwm(m)
    finally:
        m.stop()
    ctx.figure(
        "m_rss_streams",
        f"daemon peak RSS, 4 readers x {sizes.streams // MiB} MiB, cache {CACHE} (MiB)",
        peak=peak / MiB,
        mib_s=4 * sizes.streams / MiB / elapsed,
        target=(CACHE_BYTES + RSS_SLACK) / MiB,
        verdict="PASS" if peak <= CACHE_BYTES + RSS_SLACK else "MISS",
    )
    bench_random(ctx, sizes)


def _random_reads(path: Path, size: int, seconds: float, *, direct: bool) -> int:
    """4 KiB preads at random 4 KiB-aligned offsets for ``seconds``; returns reads done."""
    rng = random.Random(7)
    blocks = size // 4096
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    buf = mmap.mmap(-1, 4096)  # page-aligned: what O_DIRECT needs
    try:
        n = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if os.preadv(fd, [buf], rng.randrange(blocks) * 4096) != 4096:
                raise RuntimeError("short random read")
            n += 1
        return n
    finally:
        os.close(fd)
        buf.close()


async def _direct_get_rate(ctx: Bench, seconds: float) -> float:
    """Single direct gets of random chunks of the big object, one after another: per second."""
    store = await Server(ctx.server.url, None, "").store()
    try:
        info = await store.info("bench_big", "big")
    finally:
        await store.close()
    nc = await ctx_nats(ctx)
    try:
        api = f"{API}.DIRECT.GET.{bucket_stream('bench_big')}"
        subject = chunk_subject("bench_big", info.nuid)
        first = await nc.request(api, json.dumps({"seq": 0, "next_by_subj": subject}).encode())
        seq0 = int((first.headers or {})[SEQUENCE])
        rng = random.Random(3)
        n = 0
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < deadline:
            body = json.dumps({"seq": seq0 + rng.randrange(info.chunks)}).encode()
            msg = await nc.request(api, body, timeout=10)
            if not msg.data:
                raise RuntimeError(f"direct get: {msg.headers}")
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        await nc.close()


def bench_random(ctx: Bench, sizes: MountSizes) -> None:
    """Random 4 KiB reads through a fresh mount (buffered, O_DIRECT) vs direct-get round trips,
    each run after the same warm-up of the server (``_warm_server``)."""
    srv = Server(ctx.server.url, None, "")
    secs = sizes.random_seconds
    for key, direct in (("m_rand", False), ("m_rand_direct", True)):
        samples = []
        for _ in range(ctx.repeat):
            m = mount(ctx, srv, "bench_big", "big", "--cache-size", CACHE)
            try:
                ctx.thread.run(_warm_server(srv, "bench_big", "big"))  # just before the reads
                t0 = time.perf_counter()
                try:
                    n = _random_reads(m.path / "big", sizes.big, secs, direct=direct)
                except OSError as e:
                    ctx.skipped[key] = f"open/read failed: {e}"
                    break
                samples.append((time.perf_counter() - t0) / n)
            finally:
                m.stop()
        if samples:
            how = "O_DIRECT" if direct else "buffered"
            add(ctx, key, f"mount: random 4 KiB reads, {how}", 1, samples)
    rates = []
    for _ in range(ctx.repeat):
        ctx.thread.run(_warm_server(srv, "bench_big", "big"))
        rates.append(ctx.thread.run(_direct_get_rate(ctx, secs)))
    add(ctx, "direct_get", "store: single direct get round trips", 1, [1 / r for r in rates])


# --------------------------------------------------------------------------------------------
# ls -l of many objects


async def _natspy_list(ctx: Bench, bucket: str, count: int) -> list[float]:
    nc = await ctx_nats(ctx)
    try:
        obs = await nc.jetstream(timeout=60).object_store(bucket)
        times = []
        for _ in range(ctx.repeat):
            t0 = time.perf_counter()
            listed = await obs.list()
            times.append(time.perf_counter() - t0)
            if len(listed) != count:
                raise RuntimeError(f"nats-py listed {len(listed)} of {count}")
        return times
    finally:
        await nc.close()


def bench_ls(ctx: Bench, sizes: MountSizes) -> None:
    why = fuse_ok()
    if why:
        ctx.skipped["mount_ls"] = why
        return
    from benchmarks.mounts import populate_metas

    n = sizes.ls_objects
    ctx.thread.run(populate_metas(ctx.server.url, "bench_ls", n))
    time.sleep(SETTLE)
    srv = Server(ctx.server.url, None, "")
    cold, warm = [], []
    for i in range(ctx.repeat):
        m = mount(ctx, srv, "bench_ls", "ls")
        try:
            t0 = time.perf_counter()
            run("ls", "-l", m.path)
            cold.append(time.perf_counter() - t0)
            if i == 0:
                warm = timed(functools.partial(run, "ls", "-l", m.path), ctx.repeat)
        finally:
            m.stop()
    add(ctx, "m_ls_cold", f"mount: ls -l of {n} objects, fresh mount", n, cold)
    add(ctx, "m_ls_warm", f"mount: ls -l of {n} objects, again", n, warm)
    add(
        ctx,
        "natspy_list",
        f"nats-py ObjectStore.list of {n} objects",
        n,
        ctx.thread.run(_natspy_list(ctx, "bench_ls", n)),
    )
    d = SHM / f"objfs-bench-ls-{os.getpid()}"
    try:
        d.mkdir()
        for i in range(n):
            (d / f"f{i:06}").touch()
        run("ls", "-l", d)
        add(
            ctx,
            "tmpfs_ls",
            f"tmpfs: ls -l of {n} files",
            n,
            timed(lambda: run("ls", "-l", d), ctx.repeat),
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the suite's ratios


MOUNT_TARGETS = [
    Target("cold read / raw read ceiling", "m_cold", "m_raw", 0.8),
    Target("cold read TLS / raw TLS drain", "m_cold_tls", "m_raw_tls", 0.8),
    Target("warm re-read / tmpfs", "m_warm", "tmpfs_read", 0.9),
    Target("dd write / store put", "m_write", "m_put", 0.9),
    Target("dd write TLS / store put TLS", "m_write_tls", "m_put_tls", 0.9),
    Target("cp -r in / nats-py puts", "m_cp_in", "natspy_small_put", 1.5),
    Target("cp -r out / tmpfs cp -r (no target)", "m_cp_out", "tmpfs_cp", 0.0),
    Target("random 4K buffered / direct get", "m_rand", "direct_get", 0.8),
    Target("random 4K O_DIRECT / direct get", "m_rand_direct", "direct_get", 0.8),
    Target("ls -l cold / nats-py list (<= 1.5x)", "m_ls_cold", "natspy_list", 1 / 1.5),
    Target("ls -l warm / tmpfs (<= 2x)", "m_ls_warm", "tmpfs_ls", 0.5),
]
TAR_TARGET_S = 5.0


def mount_ratios(ctx: Bench) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in MOUNT_TARGETS:  # minimum: the least reference time / objfs time allowed
        a, b = ctx.results.get(t.numerator), ctx.results.get(t.denominator)
        if a is None or b is None:
            continue
        r = b.seconds / a.seconds if a.seconds else 0.0
        verdict = ("PASS" if r >= t.minimum else "MISS") if t.minimum else ""
        out.append({"target": t.label, "minimum": t.minimum, "ratio": r, "verdict": verdict})
    tar = ctx.results.get("m_tar")
    if tar is not None:
        out.append(
            {
                "target": f"tar x seconds (<= {TAR_TARGET_S:g} s at 5,000 files)",
                "minimum": 0.0,
                "ratio": tar.seconds,
                "verdict": "PASS" if tar.seconds <= TAR_TARGET_S else "MISS",
            }
        )
    return out


def suite(sizes: MountSizes) -> list[tuple[str, Callable[[Bench], Any]]]:
    return [
        ("mount_seq", bench_seq_plain),
        ("mount_tls", bench_seq_tls),
        ("mount_small", lambda ctx: bench_small_files(ctx, sizes)),
        ("mount_big", lambda ctx: bench_big(ctx, sizes)),
        ("mount_ls", lambda ctx: bench_ls(ctx, sizes)),
    ]


def report_mount(ctx: Bench, info: dict[str, str], sizes: MountSizes) -> dict[str, Any]:
    import dataclasses

    print("\nmachine:")
    for k, v in info.items():
        print(f"  {k:<13} {v}")
    print(f"\nmedians of {ctx.repeat}; sizes {dataclasses.asdict(sizes)}\n")
    for r in ctx.results.values():
        print(f"  {r.label:<58} {rate(r):>16}  {r.seconds:9.4f} s")
    for k, why in ctx.skipped.items():
        print(f"  {k:<58} not measured: {why}")
    print_figures(ctx, 58)
    print()
    rows = mount_ratios(ctx)
    for row in rows:
        want = f"(target >= {row['minimum']:.2f})" if row["minimum"] else ""
        print(f"  {row['target']:<46} {row['ratio']:7.2f}  {want:<17} {row['verdict']}")
    return {
        "machine": info,
        "sizes": dataclasses.asdict(sizes),
        "repeat": ctx.repeat,
        "results": {k: {**dataclasses.asdict(r), "rate": rate(r)} for k, r in ctx.results.items()},
        "skipped": ctx.skipped,
        "figures": ctx.figures,
        "ratios": rows,
    }
