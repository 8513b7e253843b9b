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

``--mount`` runs the other suite, speed through real mounts (``benchmarks.mount_io``: ``dd``,
``cp -r``, ``tar x``, random reads, ``ls -l``, the daemon's RSS, plain and TLS, each against a
reference measured in the same run, medians of ``--repeat``), then change visibility and the
big bucket. ``--quick`` shrinks every size for a smoke run.

The benchmarks live outside the ``objfs`` package, which never imports them: they import nats
(and nats-py's ObjectStore) on purpose, to measure raw NATS and the official Python client,
where within objfs only the NATS backend may. This module is the command line (sizes parsed as
``objfs``'s own CLI parses them); ``common`` holds the context and result rows, ``raw`` the raw
read ceiling, ``throughput`` the nats-py and objfs store figures, ``mounts`` the benchmarks on
real mounts, ``report`` the ratios and the JSON.

Each benchmark is an async or sync function taking the ``Bench`` context and adding ``Result``
rows; ``BENCHMARKS`` lists them in order, so a later benchmark is one more function.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import Bench, MiB, make_payload
from benchmarks.mount_io import MountSizes, report_mount, suite
from benchmarks.mounts import bench_change_latency, bench_scale
from benchmarks.report import machine, report
from benchmarks.throughput import (
    bench_natspy_get,
    bench_natspy_put,
    bench_objfs_asyncio,
    bench_objfs_trio,
    bench_raw,
)
from objfs.bridge import AsyncioThread
from objfs.cli import parse_size
from objfs.server import EmbeddedServer

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
        choices=[n for n, _ in BENCHMARKS] + [n for n, _ in suite(MountSizes())],
        help="run only these benchmarks (repeatable; natspy_put always runs)",
    )
    parser.add_argument(
        "--changes", type=int, default=200, help="changes timed for change visibility (200)"
    )
    parser.add_argument(
        "--objects", type=int, default=100_000, help="objects in the scale bucket (100000)"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument(
        "--mount",
        action="store_true",
        help="speed through real mounts (dd, cp -r, tar x, ls -l, RSS, TLS) against references "
        "in the same run, plus change visibility and a big bucket (medians of --repeat)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes for a smoke run (seconds instead of minutes)",
    )
    args = parser.parse_args(argv)

    sizes = MountSizes.quick() if args.quick else MountSizes()
    if args.mount:
        if args.size != 256 * MiB:
            sizes = dataclasses.replace(sizes, seq=args.size)
        size = sizes.seq
        steps = [*suite(sizes), ("change_latency", bench_change_latency), ("scale", bench_scale)]
    else:
        size = sizes.seq if args.quick and args.size == 256 * MiB else args.size
        steps = BENCHMARKS
    info = machine()
    with tempfile.TemporaryDirectory(prefix="objfs-bench-") as tmp:
        work = Path(tmp)
        payload = work / "payload.bin"
        print(f"writing a {size / MiB:.0f} MiB payload ...", flush=True)
        digest = make_payload(payload, size)
        with EmbeddedServer(work / "nats") as server, AsyncioThread("bench-asyncio") as thread:
            ctx = Bench(
                server=server,
                thread=thread,
                workdir=work,
                payload=payload,
                size=size,
                digest=digest,
                repeat=max(1, args.repeat),
                natspy_get_cap=args.natspy_get_cap,
                natspy_small=args.natspy_small,
                changes=max(1, 10 if args.quick else args.changes),
                scale_objects=max(1, 500 if args.quick else args.objects),
            )
            where = " through mounts" if args.mount else ""
            print(f"nats-server at {server.url}; measuring{where}:", flush=True)
            for name, fn in steps:
                if args.only and name not in args.only and (args.mount or name != "natspy_put"):
                    continue
                if asyncio.iscoroutinefunction(fn):
                    thread.run(fn(ctx))
                else:
                    fn(ctx)
            info["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data = report_mount(ctx, info, sizes) if args.mount else report(ctx, info)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
