"""Wire compatibility with the official clients, on a real nats-server.

What objfs's NATS store writes, nats-py's ObjectStore and the JavaScript ``nats`` client read
byte for byte (same size, same digest, listed), and the other way round, links included. The
JavaScript client runs as ``node tests/interop_js/objstore.mjs`` fed JSON commands (its npm
install is done by scripts/setup); without node or that install the JS tests skip on a laptop
and fail in CI (``need``).

objfs's store runs on the session's asyncio thread; these tests are synchronous and drive it,
and nats-py, with ``asyncio_thread.run``. Tests may import nats-py; objfs itself only does so in
``objfs.store.nats_store``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from nats.js.api import ObjectMeta as NatsObjectMeta
from realenv import need

from objfs.bridge import AsyncioThread
from objfs.server import EmbeddedServer
from objfs.store.api import BucketConfig, Link, ObjectInfo, ObjectMeta, ObjectStore

T = TypeVar("T")
CHUNK = 128 * 1024
SIZES = [0, 1, 3 * CHUNK + 17]
"""Empty, one byte, and a multi-chunk object whose last chunk is short."""
JS_DIR = Path(__file__).parent / "interop_js"
NAME = "dir/ünï côde+€.bin"
"""An object name with a path, spaces and non-ASCII: it exercises the base64url meta subject."""
JS_NAME = "dir/sub dir/file+x=1.bin"
"""The JavaScript client (nats 2.x) base64-encodes names with ``btoa``, which takes Latin-1, not
UTF-8: a non-ASCII name fails ("Invalid character") or lands under a subject no other client
derives. So its tests use an ASCII name (path, space, ``+`` and ``=`` still exercised)."""


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ from chunk to chunk (a misplaced chunk changes them)."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest()
        block += 1
    return bytes(out[:size])


def adr20_digest(data: bytes) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


class Runner:
    """Runs coroutines on the asyncio thread from a sync test."""

    def __init__(self, thread: AsyncioThread) -> None:
        self.thread = thread

    def __call__(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async def call() -> T:
            return await fn(*args, **kwargs)

        return self.thread.run(call(), timeout=120)  # only catches a hang


@pytest.fixture
def run(asyncio_thread: AsyncioThread) -> Runner:
    return Runner(asyncio_thread)


@pytest.fixture
def objfs(run: Runner, nats_server: EmbeddedServer) -> Iterator[ObjectStore]:
    """objfs's NATS store, connected to the session's server."""
    from objfs.store.nats_store import connect

    store = run(connect, [nats_server.url], timeout=5.0)
    yield store
    run(store.close)


@pytest.fixture
def nc(run: Runner, nats_server: EmbeddedServer) -> Iterator[nats.NATS]:
    """A nats-py connection (for its ObjectStore)."""
    conn = run(nats.connect, nats_server.url, connect_timeout=5, max_reconnect_attempts=0)
    yield conn
    run(conn.close)


async def read_all(store: ObjectStore, info: ObjectInfo) -> bytes:
    parts: list[bytes] = []
    async for batch in store.read_stream(info):
        parts.extend(batch)
    return b"".join(parts)


def js_client(server: EmbeddedServer, commands: list[dict[str, Any]]) -> list[Any]:
    """Run commands through the JavaScript client; one result per command, errors raised."""
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    need(
        (JS_DIR / "node_modules" / "nats" / "package.json").is_file(),
        "tests/interop_js/node_modules missing (scripts/setup runs npm ci there)",
    )
    assert node is not None
    proc = subprocess.run(
        [node, str(JS_DIR / "objstore.mjs"), server.url],
        input=json.dumps(commands).encode(),
        capture_output=True,
        timeout=120,  # node's start-up and the client's work, on a possibly loaded machine
        check=False,
    )
    assert proc.returncode == 0, f"node failed ({proc.returncode}):\n{proc.stderr.decode()}"
    results = json.loads(proc.stdout)
    for cmd, res in zip(commands, results, strict=True):
        if isinstance(res, dict) and "error" in res:
            raise AssertionError(f"JS client: {cmd['op']} {cmd.get('name')}: {res['error']}")
    return results


# --------------------------------------------------------------------------------------------
# nats-py


@pytest.mark.parametrize("size", SIZES)
def test_objfs_writes_natspy_reads(
    run: Runner, objfs: ObjectStore, nc: nats.NATS, bucket_name: str, size: int
) -> None:
    data = payload(size, seed=size)
    run(objfs.create_bucket, BucketConfig(bucket_name))
    meta = ObjectMeta(description="from objfs", headers={"X-Origin": ["objfs"]})
    written = run(objfs.put, bucket_name, NAME, data, meta=meta)
    assert written.size == size
    assert written.digest == adr20_digest(data)
    assert written.chunks == -(-size // CHUNK)

    async def natspy_side() -> tuple[Any, bytes, list[Any]]:
        obs = await nc.jetstream(timeout=10).object_store(bucket_name)
        info = await obs.get_info(NAME)
        sink = io.BytesIO()
        await obs.get(NAME, writeinto=sink)  # nats-py verifies the digest itself
        return info, sink.getvalue(), await obs.list()

    info, got, listed = run(natspy_side)
    assert got == data
    assert info.size == size
    assert info.digest == adr20_digest(data)
    assert info.nuid == written.nuid
    assert info.chunks == written.chunks
    assert info.description == "from objfs"
    assert info.bucket == bucket_name
    assert [o.name for o in listed] == [NAME]


@pytest.mark.parametrize("size", SIZES)
def test_natspy_writes_objfs_reads(
    run: Runner, objfs: ObjectStore, nc: nats.NATS, bucket_name: str, size: int
) -> None:
    data = payload(size, seed=size + 1)

    async def natspy_put() -> Any:
        obs = await nc.jetstream(timeout=10).create_object_store(bucket_name)
        meta = NatsObjectMeta(name=NAME, description="from nats-py")
        return await obs.put(NAME, data, meta=meta)

    written = run(natspy_put)
    info = run(objfs.info, bucket_name, NAME)
    assert info.size == size
    assert info.digest == written.digest == adr20_digest(data)
    assert info.nuid == written.nuid
    assert info.chunks == written.chunks
    assert info.description == "from nats-py"
    assert info.link is None
    assert run(read_all, objfs, info) == data
    sink = io.BytesIO()
    run(objfs.get, bucket_name, NAME, sink)
    assert sink.getvalue() == data
    assert [o.name for o in run(objfs.list, bucket_name)] == [NAME]


# --------------------------------------------------------------------------------------------
# JavaScript client


def test_objfs_writes_js_reads(
    run: Runner, objfs: ObjectStore, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    other = bucket_name + "-t"
    objects = {f"{JS_NAME}.{size}": payload(size, seed=10 + size) for size in SIZES}
    run(objfs.create_bucket, BucketConfig(bucket_name))
    run(objfs.create_bucket, BucketConfig(other))
    meta = ObjectMeta(description="from objfs", headers={"X-Origin": ["objfs", "2"]})
    written = {n: run(objfs.put, bucket_name, n, d, meta=meta) for n, d in objects.items()}
    target = f"{JS_NAME}.{SIZES[-1]}"
    # A link within the bucket, one across buckets, and a link to a whole bucket.
    run(objfs.put, other, "far", objects[target])
    run(objfs.add_link, bucket_name, "link", bucket_name, target)
    run(objfs.add_link, bucket_name, "far-link", other, "far")
    run(objfs.add_bucket_link, bucket_name, "bucket-link", other)

    cmds: list[dict[str, Any]] = []
    for n in objects:
        cmds += [
            {"op": "get", "bucket": bucket_name, "name": n},
            {"op": "info", "bucket": bucket_name, "name": n},
        ]
    cmds += [
        {"op": "get", "bucket": bucket_name, "name": "link"},
        {"op": "info", "bucket": bucket_name, "name": "link"},
        {"op": "get", "bucket": bucket_name, "name": "far-link"},
        {"op": "info", "bucket": bucket_name, "name": "bucket-link"},
        {"op": "list", "bucket": bucket_name},
    ]
    res = iter(js_client(nats_server, cmds))
    for n, data in objects.items():
        got, info = next(res), next(res)
        assert got["size"] == len(data)
        assert got["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["digest"] == written[n].digest == adr20_digest(data)
        assert info["size"] == len(data)
        assert info["nuid"] == written[n].nuid
        assert info["description"] == "from objfs"
        assert info["headers"] == {"X-Origin": ["objfs", "2"]}
    via_link, link_info, via_far, bucket_link, listed = res
    assert via_link["sha256"] == hashlib.sha256(objects[target]).hexdigest()
    assert via_link["info"]["name"] == target
    assert link_info["options"]["link"] == {"bucket": bucket_name, "name": target}
    assert via_far["sha256"] == hashlib.sha256(objects[target]).hexdigest()
    assert via_far["info"]["bucket"] == other
    assert bucket_link["options"]["link"] == {"bucket": other}
    assert sorted(o["name"] for o in listed) == sorted(
        [*objects, "link", "far-link", "bucket-link"]
    )


def test_js_writes_objfs_reads(
    run: Runner,
    objfs: ObjectStore,
    nats_server: EmbeddedServer,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    other = bucket_name + "-t"
    objects = {f"{JS_NAME}.{size}": payload(size, seed=20 + size) for size in SIZES}
    cmds: list[dict[str, Any]] = []
    for i, (n, data) in enumerate(objects.items()):
        path = tmp_path / f"in{i}"
        path.write_bytes(data)
        cmds.append(
            {
                "op": "put",
                "bucket": bucket_name,
                "name": n,
                "file": str(path),
                "description": "from js",
                "headers": {"X-Origin": ["js", "2"]},
            }
        )
    target = f"{JS_NAME}.{SIZES[-1]}"
    far = tmp_path / "far"
    far.write_bytes(objects[target][::-1])
    cmds += [
        {"op": "put", "bucket": other, "name": "far", "file": str(far)},
        {
            "op": "link",
            "bucket": bucket_name,
            "name": "link",
            "target_bucket": bucket_name,
            "target_name": target,
        },
        {
            "op": "link",
            "bucket": bucket_name,
            "name": "far-link",
            "target_bucket": other,
            "target_name": "far",
        },
        {"op": "link", "bucket": bucket_name, "name": "bucket-link", "target_bucket": other},
    ]
    res = js_client(nats_server, cmds)

    for (n, data), put in zip(objects.items(), res, strict=False):
        info = run(objfs.info, bucket_name, n)
        assert info.size == len(data)
        assert info.digest == put["digest"] == adr20_digest(data)
        assert info.nuid == put["nuid"]
        assert info.description == "from js"
        assert info.headers == {"X-Origin": ["js", "2"]}
        assert run(read_all, objfs, info) == data

    link = run(objfs.info, bucket_name, "link")
    assert link.link == Link(bucket_name, target)
    resolved = run(objfs.resolve, bucket_name, "link")
    assert resolved.name == target
    assert run(read_all, objfs, resolved) == objects[target]

    far_link = run(objfs.info, bucket_name, "far-link")
    assert far_link.link == Link(other, "far")
    resolved = run(objfs.resolve, bucket_name, "far-link")
    assert resolved.bucket == other
    assert run(read_all, objfs, resolved) == objects[target][::-1]

    bucket_link = run(objfs.info, bucket_name, "bucket-link")
    assert bucket_link.link == Link(other)
    assert bucket_link.link.is_bucket_link

    names = sorted(o.name for o in run(objfs.list, bucket_name))
    assert names == sorted([*objects, "link", "far-link", "bucket-link"])


def test_js_client_reports_missing_object(nats_server: EmbeddedServer, bucket_name: str) -> None:
    """The harness itself: a missing object is null, not an error or a crash."""
    (res,) = js_client(nats_server, [{"op": "info", "bucket": bucket_name, "name": "nope"}])
    assert res is None
