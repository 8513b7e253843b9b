"""Bad input through a real mount: each gets a clear errno, a log line, and breaks nothing else.

Damaged objects are made with nats-py directly (raw JetStream publishes and purges, not objfs
code): a meta message that is not JSON, JSON that is not an ADR-20 ObjectInfo, an object
whose chunks are gone, an object whose digest does not match its chunks.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import nats
import pytest
from helpers import wait_for
from mounting import Mount
from test_nats_client import with_store

from objfs.server import EmbeddedServer


def meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def raw(url: str, fn: Any) -> Any:
    """Run ``fn(nc, js)`` on a fresh nats-py connection."""

    async def main() -> Any:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return await fn(nc, nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def test_damaged_objects_fail_alone_with_eio(mount: Mount) -> None:
    bucket, url = str(mount.bucket), mount.server_url
    rollup = {"Nats-Rollup": "sub"}

    async def damage(nc: Any, js: Any) -> None:
        store = await js.object_store(bucket)
        for name in ("good", "nochunks", "baddigest"):
            await store.put(name, name.encode() * 100)
        await js.publish(meta_subject(bucket, "notjson"), b"{not json", headers=rollup)
        foreign = json.dumps({"hello": "world"}).encode()
        await js.publish(meta_subject(bucket, "foreign"), foreign, headers=rollup)
        info = await store.get_info("nochunks")
        await js.purge_stream(f"OBJ_{bucket}", subject=f"$O.{bucket}.C.{info.nuid}")
        msg = await js.get_last_msg(f"OBJ_{bucket}", meta_subject(bucket, "baddigest"))
        doc = json.loads(msg.data)
        doc["digest"] = "SHA-256=" + base64.urlsafe_b64encode(b"\0" * 32).decode()
        bad = json.dumps(doc).encode()
        await js.publish(meta_subject(bucket, "baddigest"), bad, headers=rollup)

    raw(url, damage)
    mnt = mount.mountpoint
    wait_for(lambda: (mnt / "baddigest").exists() and (mnt / "good").exists(), "the objects")
    listing = sorted(os.listdir(mnt))
    assert {"good", "nochunks", "baddigest"} <= set(listing)
    assert "notjson" not in listing and "foreign" not in listing
    for name in ("nochunks", "baddigest"):
        with pytest.raises(OSError) as e:
            (mnt / name).read_bytes()
        assert e.value.errno == errno.EIO, name
    assert (mnt / "good").read_bytes() == b"good" * 100
    log = mount.stderr()
    for name in ("nochunks", "baddigest", "notjson", "foreign"):
        assert name in log, f"no log line names {name}:\n{log}"
    r = subprocess.run(["ls", "-laR", str(mnt)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (mnt / "after").write_bytes(b"fine")
    assert (mnt / "after").read_bytes() == b"fine"
    # A fresh mount loads the same bucket from scratch: the same answers.
    mount.remount()
    assert {"good", "nochunks", "baddigest"} <= set(os.listdir(mnt))
    assert (mnt / "good").read_bytes() == b"good" * 100
    with pytest.raises(OSError) as e:
        (mnt / "nochunks").read_bytes()
    assert e.value.errno == errno.EIO


def test_invalid_bucket_names_at_the_root(mounts) -> None:  # type: ignore[no-untyped-def]
    m = mounts(bucket=None)
    for bad in ("has.dot", "has space", "star*", "é"):
        with pytest.raises(OSError) as e:
            os.mkdir(m.mountpoint / bad)
        assert e.value.errno == errno.EINVAL, bad
    with pytest.raises(OSError) as e:
        (m.mountpoint / "file-at-root").write_bytes(b"")
    assert e.value.errno == errno.EPERM


def test_names_that_are_not_utf8(mount: Mount) -> None:
    bad = os.fsencode(mount.mountpoint) + b"/bad\xff"
    with pytest.raises(OSError) as e:
        os.open(bad, os.O_CREAT | os.O_WRONLY, 0o644)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.mkdir(bad)
    assert e.value.errno == errno.EINVAL
    # A symlink target must be UTF-8 too (it is stored as JSON text): EINVAL, not EIO.
    with pytest.raises(OSError) as e:
        os.symlink(b"target\xff", os.fsencode(mount.mountpoint) + b"/ln")
    assert e.value.errno == errno.EINVAL
    assert os.listdir(mount.mountpoint) == []
    assert "Traceback" not in mount.stderr(), mount.stderr()


def test_very_deep_paths_end_in_enametoolong(mount: Mount) -> None:
    """Below PATH_MAX through relative paths (each mkdir is short): objfs's name limit ends it,
    with ENAMETOOLONG, and the tree stays usable."""
    fd = os.open(mount.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while True:
            try:
                os.mkdir("d" * 200, dir_fd=fd)
            except OSError as e:
                assert e.errno == errno.ENAMETOOLONG
                break
            new = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
            depth += 1
            assert depth < 100, "no name limit reached"
    finally:
        os.close(fd)
    assert depth * 201 <= 4096 < (depth + 1) * 201 + 1
    assert os.listdir(mount.mountpoint) == ["d" * 200]


def test_a_1mb_xattr_value_is_refused(mount: Mount) -> None:
    f = mount.mountpoint / "f"
    f.write_bytes(b"x")
    with pytest.raises(OSError) as e:
        os.setxattr(f, "user.big", b"v" * (1 << 20))
    assert e.value.errno == errno.E2BIG  # the kernel's limit (64 KiB) is below the store's
    os.setxattr(f, "user.ok", b"v" * 1000)
    assert os.getxattr(f, "user.ok") == b"v" * 1000


def test_a_stopped_server_gives_errors_not_hangs(
    fuse: None, private_server: EmbeddedServer, tmp_path: Path
) -> None:
    """SIGSTOP the server for longer than ``--timeout``: an operation that needs it fails
    (EIO/ETIMEDOUT) instead of hanging; after SIGCONT the mount works again."""
    timeout = 2
    m = Mount(
        tmp_path / "slow",
        private_server.url,
        "slow",
        args=("--timeout", str(timeout)),
        log_dir=tmp_path,
        create=True,
    )
    m.start()
    try:
        (m.mountpoint / "before").write_bytes(b"1")
        assert private_server.proc is not None
        private_server.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(OSError) as e:
                (m.mountpoint / "during").write_bytes(b"2")  # the upload at close
            assert e.value.errno in (errno.EIO, errno.ETIMEDOUT)
            assert (m.mountpoint / "before").exists()  # answered from the tree, no round trip
        finally:
            private_server.proc.send_signal(signal.SIGCONT)

        def recovered() -> bool:
            try:
                (m.mountpoint / "after").write_bytes(b"3")
                return True
            except OSError:
                return False

        wait_for(recovered, "a write after the server resumed")
        assert (m.mountpoint / "after").read_bytes() == b"3"

        async def read(store: Any) -> bytes:
            return (await store.get("after")).data

        assert with_store(private_server.url, "slow", read) == b"3"
    finally:
        m.stop()
