"""The report: the machine, the ratios the project targets (PASS or MISS), JSON figures."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import CHUNK, Bench, MiB
from objfs.server import find_binary

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


def print_figures(ctx: Bench, width: int) -> None:
    """The figures that are not throughputs (latencies, times, memory), one line each."""
    for fig in ctx.figures.values():
        shown = ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in fig.items()
            if k != "label"
        )
        print(f"  {fig['label']:<{width}} {shown}")


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
    print_figures(ctx, 56)
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
