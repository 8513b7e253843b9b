"""Crash recovery on real servers and mounts: what a killed mount could not store, the next
mount stores (or keeps beside a newer version, or keeps in the spool when it was not closed).

Each test stops its own server so that a close fails (EIO after the mount's ``--timeout``),
kills the mount with SIGKILL (nothing of objfs runs after that), starts the server again
(same port, same store) and mounts again with the same spool base. What lands in the bucket
is read back with nats-py, not objfs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import data, wait_for
from mounting import Mount
from test_nats_client import with_store

from objfs.server import EmbeddedServer

TIMEOUT = "2"
"""The mounts' --timeout: a close with the server down fails after it."""


def objects(url: str, bucket: str) -> dict[str, bytes]:
    """Every live object of ``bucket`` and its bytes, read by nats-py ({} if that does not
    finish in 30 s: nats-py's get waits for ever for chunks a concurrent overwrite purged)."""

    async def read(obs: Any) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        with contextlib.suppress(Exception):  # nats-py raises when the bucket is empty
            for info in await obs.list():
                if not info.deleted:
                    out[info.name] = (await obs.get(info.name)).data
        return out

    async def bounded(obs: Any) -> dict[str, bytes]:
        try:
            return await asyncio.wait_for(read(obs), 30)
        except TimeoutError:
            return {}

    return with_store(url, bucket, bounded)


def kill(m: Mount) -> None:
    """SIGKILL the mount process; clear its dead FUSE mount."""
    assert m.proc is not None
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait()
    m.proc = None
    m.stop(check=False)  # lazy unmount of what the dead process left


def failing_close(path: Path, content: bytes) -> None:
    with pytest.raises(OSError) as e, open(path, "wb") as f:
        f.write(content)
    assert e.value.errno == errno.EIO


def spool_dirs(base: Path) -> list[Path]:
    return sorted(p for p in base.iterdir() if p.name.startswith("mount-")) if base.exists() else []


def mount_at(tmp_path: Path, name: str, server: EmbeddedServer, bucket: str) -> Mount:
    return Mount(tmp_path / name, server.url, bucket, args=("--timeout", TIMEOUT), log_dir=tmp_path)


def test_killed_mount_file_is_stored_by_the_next_mount(
    private_server: EmbeddedServer, tmp_path: Path, bucket_name: str, fuse: None
) -> None:
    spool = tmp_path / "spool"  # Mount's default --spool-dir: the same for both mounts
    content = data(5 << 20, seed=10)
    m = mount_at(tmp_path, "mnt", private_server, bucket_name).start()
    try:
        (m.mountpoint / "kept.bin").write_bytes(b"old")  # an existing version to replace
        private_server.stop()
        failing_close(m.mountpoint / "kept.bin", content)
        failing_close(m.mountpoint / "new.bin", b"brand new")
        # A file still open for writing when the mount dies: never stored, kept in the spool.
        unfinished = open(m.mountpoint / "unfinished.bin", "wb")  # noqa: SIM115
        unfinished.write(b"half")
        unfinished.flush()
        kill(m)
    finally:
        m.stop(check=False)
    with contextlib.suppress(OSError):
        unfinished.close()
    [left] = spool_dirs(spool)
    private_server.start()
    again = mount_at(tmp_path, "mnt2", private_server, bucket_name).start()
    try:

        def stored() -> bool:
            now = objects(private_server.url, bucket_name)
            return now.get("kept.bin") == content and now.get("new.bin") == b"brand new"

        wait_for(stored, "the killed mount's files stored by the next mount")
        assert "unfinished.bin" not in objects(private_server.url, bucket_name)
        assert (again.mountpoint / "kept.bin").read_bytes() == content
        log = again.stderr()
        assert f"recovered {bucket_name}/kept.bin ({len(content)} bytes)" in log, log
        wait_for(lambda: "kept, not stored" in again.stderr(), "the unfinished file reported")
    finally:
        again.stop()
    # The unfinished file's data stays in the spool (never deleted), and so does its directory.
    assert left.exists()
    kept = [p for p in left.glob("objfs-*.spool") if p.read_bytes() == b"half"]
    assert len(kept) == 1, list(left.iterdir())
    assert len(list(left.glob("objfs-*.spool"))) == 1  # the stored ones are gone


def test_recovery_keeps_a_version_changed_meanwhile_beside_it(
    private_server: EmbeddedServer, tmp_path: Path, bucket_name: str, fuse: None
) -> None:
    m = mount_at(tmp_path, "mnt", private_server, bucket_name).start()
    try:
        (m.mountpoint / "shared.txt").write_bytes(b"v1")
        private_server.stop()
        failing_close(m.mountpoint / "shared.txt", b"ours, never stored")
        kill(m)
    finally:
        m.stop(check=False)
    [left] = spool_dirs(tmp_path / "spool")
    private_server.start()

    async def theirs(obs: Any) -> None:
        await obs.put("shared.txt", b"theirs, stored meanwhile")

    with_store(private_server.url, bucket_name, theirs)
    again = mount_at(tmp_path, "mnt2", private_server, bucket_name).start()
    try:

        def conflict_copy() -> str | None:
            now = objects(private_server.url, bucket_name)
            names = [n for n in now if n.startswith("shared.txt.objfs-conflict-")]
            return names[0] if names and now[names[0]] == b"ours, never stored" else None

        wait_for(conflict_copy, "our version stored beside theirs")
        name = conflict_copy()
        assert name is not None
        now = objects(private_server.url, bucket_name)
        assert now["shared.txt"] == b"theirs, stored meanwhile"
        assert sorted(now) == sorted(["shared.txt", name])
        wait_for(lambda: name in again.stderr(), "the conflict reported in the log")
        wait_for(lambda: not left.exists(), "the old spool directory removed")
    finally:
        again.stop()
    assert spool_dirs(tmp_path / "spool") == []


def test_fsync_returning_means_stored_even_if_the_mount_is_killed_right_after(
    private_server: EmbeddedServer, tmp_path: Path, bucket_name: str, fuse: None
) -> None:
    """fsync() returning 0 means every chunk and the meta are acknowledged by JetStream: a
    SIGKILL right after it loses nothing, and no recovery is needed for it."""
    content = data(3 << 20, seed=11)
    m = mount_at(tmp_path, "mnt", private_server, bucket_name).start()
    try:
        with open(m.mountpoint / "synced.bin", "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
            kill(m)
    except OSError as e:  # the close after the kill: the mount is gone
        assert e.errno == errno.ENOTCONN, e
    finally:
        m.stop(check=False)
    assert objects(private_server.url, bucket_name) == {"synced.bin": content}


def test_failed_close_is_stored_in_the_background_when_the_server_returns(
    private_server: EmbeddedServer, tmp_path: Path, bucket_name: str, fuse: None
) -> None:
    """Nobody touches the file again: the mount's background retry stores it."""
    content = data(1 << 20, seed=12)
    m = mount_at(tmp_path, "mnt", private_server, bucket_name).start()
    try:
        private_server.stop()
        failing_close(m.mountpoint / "later.bin", content)
        private_server.start()
        wait_for(
            lambda: objects(private_server.url, bucket_name).get("later.bin") == content,
            "the failed close stored by the background retry",
        )
        wait_for(lambda: "upload of /later.bin stored after" in m.stderr(), "the retry logged")
    finally:
        m.stop()
    assert m.stderr().count("upload of /later.bin failed") == 1, m.stderr()
    assert spool_dirs(tmp_path / "spool") == []
