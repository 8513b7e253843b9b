"""Test content, a command runner and a poll shared by the mount tests.

Content is deterministic (a seed names it) and never repeats, so a block written at the wrong
offset or a chunk served twice changes the bytes a test compares.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 128 * 1024
WAIT = 60.0
"""How long a test waits for what must happen (another mount or client seeing a change, a
process going away): far more than it takes even on a loaded machine, so a pass never
depends on speed. A test whose meaning needs a tighter bound passes its own, derived from
the options it mounted with."""


def sh(*cmd: str | Path, cwd: Path | None = None) -> str:
    """Run a command; fail with its stderr if it fails."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr}"
    return r.stdout


def data(size: int, seed: int = 0) -> bytes:
    """``size`` pseudo-random bytes named by ``seed`` (the same on every run)."""
    return random.Random(seed).randbytes(size)


def wait_for(check: Callable[[], object], what: str, timeout: float = WAIT) -> float:
    """Poll ``check`` until it returns true; fail naming ``what`` after ``timeout`` seconds.

    An AssertionError from ``check`` counts as "not yet" (the last one is chained to the
    failure), and so does ESTALE: a read that opened a version another mount has since
    replaced fails with it once that version's chunks are purged (docs/semantics.md); a new
    open reads the new version. Returns the seconds it took.
    """
    t0 = time.monotonic()
    while True:
        last: BaseException | None = None
        try:
            if check():
                return time.monotonic() - t0
        except AssertionError as e:
            last = e
        except OSError as e:
            if e.errno != errno.ESTALE:
                raise
            last = e
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not seen within {timeout}s: {what}") from last
        time.sleep(0.02)


def eventually(check: Callable[[], None], what: str, timeout: float = WAIT) -> float:
    """``wait_for`` for a check made of assertions: it passes once it raises nothing."""

    def passes() -> bool:
        check()
        return True

    return wait_for(passes, what, timeout)


@contextlib.contextmanager
def walkable_by_others(path: Path) -> Iterator[None]:
    """Let other users reach ``path``: pytest's temporary directories are 0700, so each
    ancestor below /tmp gets search permission for group and others until the end."""
    restore = []
    for d in path.parents:
        if d in (Path("/tmp"), Path("/")):
            break
        mode = stat.S_IMODE(os.stat(d).st_mode)
        restore.append((d, mode))
        os.chmod(d, mode | 0o011)
    try:
        yield
    finally:
        for d, mode in restore:
            os.chmod(d, mode)

