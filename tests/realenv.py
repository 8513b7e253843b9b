"""Whether the real components (nats-server, FUSE) are here, and what to do when they are not.

On a laptop without them, tests that need them skip with the reason; with
OBJFS_REQUIRE_REAL=1 (set by .ci/run) they fail instead: in CI they must run. A plain module
(not a conftest) so that every test directory imports it by one name.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_REAL = os.environ.get("OBJFS_REQUIRE_REAL") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip (laptop) or fail (CI) when a real component is missing."""
    if condition:
        return
    if REQUIRE_REAL:
        pytest.fail(f"required in CI (OBJFS_REQUIRE_REAL=1): {reason}")
    pytest.skip(reason)


def fuse_available() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None
