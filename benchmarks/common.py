"""What every benchmark shares: the ``Bench`` context, ``Result`` rows, the payload and timing."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from objfs.bridge import AsyncioThread
from objfs.server import EmbeddedServer

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
