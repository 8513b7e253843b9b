"""Shared fixtures: the asyncio thread, real nats-servers, and both store implementations.

Tests that need the NATS server or FUSE skip with a reason on a machine that lacks them, unless
OBJFS_REQUIRE_REAL=1 (set by .ci/run), where they fail instead (``realenv.need``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

# Before objfs is imported: its default data dir (the embedded server's store, the spool)
# follows XDG_DATA_HOME, and tests, their mounts included, must not touch the user's.
_XDG = os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="objfs-tests-xdg-")
atexit.register(shutil.rmtree, _XDG, ignore_errors=True)  # also after --collect-only

import pytest  # noqa: E402 (after XDG_DATA_HOME is set)
from cluster import Cluster  # noqa: E402 (after XDG_DATA_HOME is set)
from realenv import need  # noqa: E402 (after XDG_DATA_HOME is set)

from objfs.bridge import AsyncioThread, Bridge, TrioStore  # noqa: E402 (after XDG_DATA_HOME is set)
from objfs.server import EmbeddedServer, ServerError, find_binary  # noqa: E402 (after XDG_DATA_HOME is set)
from objfs.store.api import ObjectStore  # noqa: E402 (after XDG_DATA_HOME is set)


def _server_binary_ok() -> bool:
    try:
        find_binary()
        return True
    except ServerError:
        return False


_servers: list[EmbeddedServer] = []


@pytest.fixture(scope="session")
def asyncio_thread() -> Iterator[AsyncioThread]:
    with AsyncioThread() as t:
        yield t


def _start_server(tmp: Path) -> EmbeddedServer:
    need(_server_binary_ok(), "nats-server binary not installed")
    srv = EmbeddedServer(tmp).start()
    _servers.append(srv)
    return srv


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One real nats-server for the session; tests isolate themselves by bucket name."""
    srv = _start_server(tmp_path_factory.mktemp("nats"))
    yield srv
    srv.stop()
    _servers.remove(srv)


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A nats-server of this test alone (for tests that stop or restart it)."""
    srv = _start_server(tmp_path / "nats")
    yield srv
    srv.stop()
    if srv in _servers:
        _servers.remove(srv)


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[Callable[..., EmbeddedServer]]:
    """Start private servers with extra config (``secure_nats.ConfiguredServer``: auth, TLS,
    no JetStream...); all stopped at the end."""
    from secure_nats import ConfiguredServer

    started: list[EmbeddedServer] = []

    def start(extra: str, *, jetstream: bool = True, tls_first: bool = False) -> EmbeddedServer:
        need(_server_binary_ok(), "nats-server binary not installed")
        srv = ConfiguredServer(
            tmp_path / f"nats{len(started)}", extra, jetstream=jetstream, tls_first=tls_first
        )
        _servers.append(srv)
        started.append(srv.start())
        return srv

    yield start
    for srv in started:
        srv.stop()
        _servers.remove(srv)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nats-servers routed together on loopback (tests/cluster.py), stopped after."""
    need(_server_binary_ok(), "nats-server binary not installed")
    c = Cluster(tmp_path / "cluster")
    _servers.extend(c.nodes)  # their logs go into a failure's report
    try:
        yield c.start()
    finally:
        c.stop()
        for n in c.nodes:
            _servers.remove(n)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for srv in _servers:
            report.sections.append((f"nats-server log {srv.data_dir}", srv.log_tail(40)))
    return report


@pytest.fixture
def bucket_name(request: pytest.FixtureRequest) -> str:
    """A bucket name unique to this test (valid per ADR-20)."""
    import re
    import uuid

    base = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:40]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["memory", "nats"])
async def store(
    request: pytest.FixtureRequest, asyncio_thread: AsyncioThread
) -> AsyncIterator[TrioStore]:
    """The store API seen from trio, over each implementation (NATS on a real server)."""
    if request.param == "memory":
        from objfs.store.memory import MemoryObjectStore

        async def make() -> ObjectStore:
            return MemoryObjectStore()
    else:
        from objfs.store.nats_store import connect

        srv: EmbeddedServer = request.getfixturevalue("nats_server")

        async def make() -> ObjectStore:
            return await connect([srv.url], timeout=5.0)

    bridge = Bridge(asyncio_thread)
    backend = await bridge.call(make)
    ts = TrioStore(backend, bridge)
    try:
        yield ts
    finally:
        await bridge.call(backend.close)
