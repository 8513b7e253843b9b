"""One process of the concurrency stress test (``test_stress.py``): writes, renames and reads
files under a mount point and records what it was acknowledged.

``python stress_worker.py MOUNTPOINT WORKER ROUNDS SHARED OUT``: for each round, write a file of
its own, write a temporary file and rename it to a name of its own, write its shared name (one
of ``SHARED``, which one worker of each mount writes), read back its own files and a shared
one. Every close (or rename) that returned without error is an acknowledged version, recorded
with its sha256 in ``OUT`` (JSON); reads are checked here for its own names (must equal the
last acknowledged version) and recorded for shared names (checked by the test against every
process's acknowledged versions). A shared version is one unit (``worker W round I ``)
repeated: a read that is not an acknowledged version must be a clean prefix of one unit's
repetition (a write in progress on the reader's own mount, which shows local writes at once),
never a mix of two versions.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import sys
import time
from pathlib import Path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(path: Path) -> bytes | None:
    """The file's bytes; None if it does not exist. ESTALE (the version opened was replaced
    by another mount and its chunks purged) is retried with a new open, as documented."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.ESTALE or time.monotonic() > deadline:
                raise


def main() -> None:
    mountpoint, worker, rounds, shared, out = (
        Path(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
        Path(sys.argv[5]),
    )
    rng = random.Random(worker)
    acked: list[tuple[str, str]] = []  # (name, sha256) in the order acknowledged
    shared_reads: list[tuple[str, str | None, str | None, int]] = []  # name, sha, unit, len
    shared_acked: list[tuple[str, str, int]] = []  # name, unit, repetitions
    mine: dict[str, str] = {}  # own name -> last acknowledged sha256

    def write(name: str, data: bytes) -> None:
        with open(mountpoint / name, "wb") as f:
            f.write(data)
        acked.append((name, sha(data)))

    for i in range(rounds):
        size = rng.choice([0, 1, 4096, 128 * 1024, 128 * 1024 + 7, 300_000])
        own = f"own-{worker}-{i % 3}"  # later rounds overwrite earlier ones
        data = rng.randbytes(size)
        write(own, data)
        mine[own] = sha(data)

        tmp, final = f"tmp-{worker}", f"renamed-{worker}-{i}"
        data = rng.randbytes(rng.randrange(200_000))
        with open(mountpoint / tmp, "wb") as f:
            f.write(data)
        os.rename(mountpoint / tmp, mountpoint / final)
        acked.append((final, sha(data)))
        mine[final] = sha(data)

        # One writer of each shared name per mount (workers alternate mounts): two writers
        # of one file on one mount interleave their bytes, as on a local disk.
        name = f"shared-{worker // 2 % shared}"
        unit, times = f"worker {worker} round {i} ", rng.randrange(1, 20_000)
        write(name, unit.encode() * times)
        shared_acked.append((name, unit, times))

        for own_name, digest in mine.items():
            got = read(mountpoint / own_name)
            if got is None or sha(got) != digest:
                raise SystemExit(f"worker {worker}: {own_name} does not read back as written")
        name = f"shared-{rng.randrange(shared)}"
        got = read(mountpoint / name)
        if got is None:
            shared_reads.append((name, None, None, 0))
            continue
        head = re.match(rb"worker \d+ round \d+ ", got)
        if got and (head is None or got != (head[0] * (len(got) // len(head[0]) + 1))[: len(got)]):
            raise SystemExit(f"worker {worker}: {name} reads as a mix of versions")
        shared_reads.append((name, sha(got), head[0].decode() if head else None, len(got)))
    if (mountpoint / tmp).exists():
        raise SystemExit(f"worker {worker}: {tmp} still exists after its rename")
    out.write_text(
        json.dumps({"acked": acked, "shared_reads": shared_reads, "shared_acked": shared_acked})
    )


if __name__ == "__main__":
    main()
