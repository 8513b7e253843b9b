"""Fixtures for real-mount tests: a mount of a fresh bucket, more mounts, and failure logs.

Every test here needs /dev/fuse and fusermount3 (skip on a laptop without them, fail in CI) and
the session's real nats-server. ``mount`` is a fresh bucket mounted at ``tmp_path/mnt``;
``mounts`` makes more (the same bucket again, read-only, ...). All of them are unmounted after
the test, which also checks that each ``objfs mount`` exited 0; a failing test's report carries
the mounts' stderr.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from mounting import Mount, MountFactory
from realenv import fuse_available, need

from objfs.server import EmbeddedServer

_ACTIVE_KEY = pytest.StashKey[list[Mount]]()


@pytest.fixture
def fuse() -> None:
    """Skip (laptop) or fail (CI) unless real FUSE mounts can be made here."""
    need(fuse_available(), "FUSE is not available (/dev/fuse and fusermount3)")


@pytest.fixture
def mounts(
    request: pytest.FixtureRequest,
    fuse: None,
    nats_server: EmbeddedServer,
    tmp_path: Path,
    bucket_name: str,
) -> Iterator[MountFactory]:
    """Mount a bucket (default: this test's) at a new mount point; unmounted at teardown."""
    made: list[Mount] = []
    request.node.stash[_ACTIVE_KEY] = made

    def make(
        *args: str, bucket: str | None = bucket_name, name: str | None = None, create: bool = True
    ) -> Mount:
        mp = tmp_path / (name or f"mnt{len(made)}")
        m = Mount(mp, nats_server.url, bucket, args=args, log_dir=tmp_path, create=create)
        made.append(m)
        return m.start()

    yield make
    errors = []
    for m in reversed(made):
        try:
            m.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def mount(mounts: MountFactory) -> Mount:
    """This test's bucket, created and mounted at ``tmp_path/mnt0``."""
    return mounts()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for m in item.stash.get(_ACTIVE_KEY, []):
            report.sections.append((f"objfs mount {m.mountpoint} stderr", m.stderr()))
    return report
