"""Concurrency stress: several processes on two mounts of one bucket write, rename and read
distinct and shared files; at the end every byte is checked against what each process was
acknowledged, in the bucket (read with nats-py) and through both mounts.

Bounded for the suite (``WORKERS`` processes, ``OBJFS_STRESS_ROUNDS`` rounds each, default 6:
well under a minute on a busy 2-core machine); set ``OBJFS_STRESS_ROUNDS`` higher for a long
run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
from helpers import eventually
from mounting import MountFactory

WORKERS = 4
ROUNDS = int(os.environ.get("OBJFS_STRESS_ROUNDS", "6"))
SHARED = WORKERS // 2
"""Shared names: each written by one worker of each mount (see stress_worker.py)."""
WORKER = Path(__file__).with_name("stress_worker.py")


def bucket_contents(url: str, bucket: str) -> dict[str, str]:
    """Every live object's sha256, read with nats-py."""

    async def main() -> dict[str, str]:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            obs = await nc.jetstream().object_store(bucket)
            out: dict[str, str] = {}
            for info in await obs.list():
                if not info.deleted:
                    data = (await obs.get(info.name)).data or b""
                    out[info.name] = hashlib.sha256(data).hexdigest()
            return out
        finally:
            await nc.close()

    return asyncio.run(main())


def test_concurrent_writers_on_two_mounts(mounts: MountFactory, tmp_path: Path) -> None:
    a, b = mounts(), mounts()
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    for w in range(WORKERS):
        m = (a, b)[w % 2]
        out = tmp_path / f"worker-{w}.json"
        cmd = [sys.executable, str(WORKER), str(m.mountpoint), str(w), str(ROUNDS), str(SHARED)]
        procs.append((subprocess.Popen([*cmd, str(out)], stderr=subprocess.PIPE), out))
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    for proc, out in procs:
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            errors.append(err.decode(errors="replace"))
        else:
            results.append(json.loads(out.read_text()))
    assert not errors, "\n".join(errors)

    versions: dict[str, set[str]] = {}  # name -> every acknowledged sha256
    last: dict[str, str] = {}  # a name of one writer -> its last acknowledged sha256
    for r in results:
        for name, digest in r["acked"]:
            versions.setdefault(name, set()).add(digest)
            last[name] = digest
    stored = bucket_contents(a.server_url, a.bucket or "")
    assert sorted(stored) == sorted(versions), "names in the bucket differ from those acked"
    for name, digest in stored.items():
        if name.startswith("shared-"):
            # Last close wins: one of the acknowledged versions, whole, never a mix.
            assert digest in versions[name], f"{name} holds bytes no process was acked"
        else:
            assert digest == last[name], f"{name} is not its last acknowledged version"
    # A read of a shared name saw an acknowledged version, or (on its own mount only: other
    # mounts see whole versions) a prefix of one being written there.
    for w, r in enumerate(results):
        for name, digest, unit, length in r["shared_reads"]:
            if digest is None or digest in versions[name]:
                continue
            writers = [
                v
                for v, other in enumerate(results)
                if v % 2 == w % 2
                for n, u, times in other["shared_acked"]
                if n == name and (unit is None or (u == unit and len(u) * times >= length))
            ]
            assert writers, f"worker {w} read {length} bytes of {name} no process wrote there"

    def both_mounts_agree() -> None:
        for m in (a, b):
            assert sorted(os.listdir(m.mountpoint)) == sorted(stored)
            for name, digest in stored.items():
                got = hashlib.sha256((m.mountpoint / name).read_bytes()).hexdigest()
                assert got == digest, f"{m.mountpoint.name}/{name} differs from the bucket"

    eventually(both_mounts_agree, "both mounts showing the bucket's final content")
    for m in (a, b):
        assert "Traceback" not in m.stderr(), m.stderr()  # no request failed unexpectedly
