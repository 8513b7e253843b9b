"""Test content and a command runner shared by the mount tests.

Content is deterministic (a seed names it) and never repeats, so a block written at the wrong
offset or a chunk served twice changes the bytes a test compares.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

CHUNK = 128 * 1024


def sh(*cmd: str | Path, cwd: Path | None = None) -> str:
    """Run a command; fail with its stderr if it fails."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr}"
    return r.stdout


def data(size: int, seed: int = 0) -> bytes:
    """``size`` pseudo-random bytes named by ``seed`` (the same on every run)."""
    return random.Random(seed).randbytes(size)
