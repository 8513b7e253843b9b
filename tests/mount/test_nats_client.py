"""A mount and an independent NATS client share a bucket: each sees what the other wrote.

The other client is nats-py's own ObjectStore (not objfs code), driven with ``asyncio.run``
here. Writes through the mount must be readable by it with the same bytes and ADR-20 digest;
its puts must show up in the mount (after a short, bounded wait for the watcher), and names
that cannot be paths must not break directory listings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import stat
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from helpers import CHUNK, data, wait_for
from mounting import Mount, mounted

T = TypeVar("T")


def adr20_digest(content: bytes) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(content).digest()).decode()


def with_store(url: str, bucket: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(object_store)`` on a fresh nats-py connection."""

    async def main() -> T:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return await fn(await nc.jetstream().object_store(bucket))
        finally:
            await nc.close()

    return asyncio.run(main())


def test_client_reads_what_the_mount_wrote(mount: Mount) -> None:
    contents = {"small.txt": b"hello\n", "dir/big.bin": data(3 * CHUNK + 11, 1), "empty": b""}
    (mount.mountpoint / "dir").mkdir()
    for name, content in contents.items():
        (mount.mountpoint / name).write_bytes(content)

    async def read(store: Any) -> dict[str, tuple[bytes, str, int]]:
        out = {}
        for name in contents:
            result = await store.get(name)
            out[name] = (result.data, result.info.digest, result.info.size)
        return out

    got = with_store(mount.server_url, str(mount.bucket), read)
    for name, content in contents.items():
        body, digest, size = got[name]
        assert body == content, name
        assert size == len(content), name
        assert digest == adr20_digest(content), name


def test_mount_sees_what_the_client_put(mount: Mount) -> None:
    big = data(2 * CHUNK + 5, 2)

    async def put(store: Any) -> None:
        await store.put("from-client.txt", b"client data")
        await store.put("nested/deep/big.bin", big)

    with_store(mount.server_url, str(mount.bucket), put)
    mnt = mount.mountpoint
    wait_for(lambda: (mnt / "nested/deep/big.bin").exists(), "nested/deep/big.bin")
    wait_for(lambda: (mnt / "from-client.txt").exists(), "from-client.txt")
    assert os.stat(mnt / "from-client.txt").st_size == len(b"client data")
    assert (mnt / "from-client.txt").read_bytes() == b"client data"
    assert os.stat(mnt / "nested/deep/big.bin").st_size == len(big)
    assert (mnt / "nested/deep/big.bin").read_bytes() == big
    # Objects without objfs attributes get the mount's defaults: a regular, readable file.
    st = os.stat(mnt / "from-client.txt")
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o400

    # An overwrite and a delete by the client reach the mount too.
    async def change(store: Any) -> None:
        await store.put("from-client.txt", b"second version, longer")
        await store.delete("nested/deep/big.bin")

    with_store(mount.server_url, str(mount.bucket), change)
    wait_for(lambda: not (mnt / "nested/deep/big.bin").exists(), "delete of big.bin")

    def updated() -> bool:
        return (mnt / "from-client.txt").read_bytes() == b"second version, longer"

    wait_for(updated, "overwrite of from-client.txt")


def test_unpathable_names_do_not_break_listing(mount: Mount) -> None:
    async def put(store: Any) -> None:
        for name in ["a//b", "../x", "/abs", "./dot", "d", "d/x", "ok.txt"]:
            await store.put(name, name.encode())

    with_store(mount.server_url, str(mount.bucket), put)
    mnt = mount.mountpoint
    wait_for(lambda: (mnt / "ok.txt").exists(), "ok.txt")
    wait_for(lambda: (mnt / "d/x").exists(), "d/x")
    entries = set(os.listdir(mnt))
    assert {"ok.txt", "d"} <= entries
    assert entries <= {"ok.txt", "d", "a", "abs"}, entries  # never "..", "." or an empty name
    assert stat.S_ISDIR(os.stat(mnt / "d").st_mode)  # the directory wins over the file "d"
    assert (mnt / "d/x").read_bytes() == b"d/x"
    assert (mnt / "ok.txt").read_bytes() == b"ok.txt"
    r = subprocess.run(["ls", "-laR", str(mnt)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # The mount still works for writes after seeing them.
    (mnt / "after").write_bytes(b"fine")
    assert (mnt / "after").read_bytes() == b"fine"


def test_sigterm_uploads_a_file_just_written(mount: Mount) -> None:
    content = data(CHUNK * 4 + 1, 6)
    (mount.mountpoint / "last.bin").write_bytes(content)
    assert mount.signal(signal.SIGTERM) == 0, mount.stderr()
    assert not mounted(mount.mountpoint)

    async def read(store: Any) -> tuple[bytes, str]:
        result = await store.get("last.bin")
        return result.data, result.info.digest

    body, digest = with_store(mount.server_url, str(mount.bucket), read)
    assert body == content
    assert digest == adr20_digest(content)


def test_sigterm_with_file_still_open(mount: Mount) -> None:
    """A writer that has not closed yet: its data is uploaded at shutdown, not lost."""
    content = data(CHUNK + 77, 7)
    f = open(mount.mountpoint / "open.bin", "wb")  # noqa: SIM115 - kept open on purpose
    try:
        f.write(content)
        f.flush()
        assert mount.signal(signal.SIGTERM) == 0, mount.stderr()
        assert not mounted(mount.mountpoint)
    finally:
        with contextlib.suppress(OSError):  # the mount is gone: the kernel answers ENOTCONN
            f.close()
    warning = f"/open.bin was still open for writing at unmount: storing the {len(content)} bytes"
    assert warning in mount.stderr()

    async def read(store: Any) -> bytes:
        return (await store.get("open.bin")).data

    assert with_store(mount.server_url, str(mount.bucket), read) == content
