"""``mount -t fuse.objfs`` and fstab lines, through mount(8) and the real helper.

mount(8) finds ``/sbin/mount.fuse.objfs`` (the link ``scripts/install-service`` makes); the
fixture makes the same link to this checkout's helper for the test, and removes it after.
What is written through the mount is read back with nats-py, a client that is not objfs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import trio
from mounting import STOP_TIMEOUT, mounted
from realenv import fuse_available, need

from objfs.bridge import AsyncioThread, Bridge
from objfs.server import EmbeddedServer

HELPER = Path("/sbin/mount.fuse.objfs")


@pytest.fixture
def helper() -> Iterator[Path]:
    need(fuse_available(), "FUSE is not available (/dev/fuse and fusermount3)")
    need(os.geteuid() == 0, "mount(8) runs filesystem helpers for root only")
    ours = Path(sys.executable).parent / "mount.fuse.objfs"
    assert ours.exists(), f"{ours} missing: run scripts/setup"
    created = False
    if HELPER.is_symlink() or HELPER.exists():
        assert HELPER.resolve() == ours.resolve(), f"{HELPER} belongs to another objfs"
    else:
        HELPER.symlink_to(ours)
        created = True
    yield HELPER
    if created:
        HELPER.unlink()


def _daemons(mountpoint: Path) -> list[int]:
    """PIDs of objfs mount processes serving ``mountpoint``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"objfs" in b" ".join(argv) and os.fsencode(mountpoint) in argv:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    """An empty directory; at the end unmounted, and its daemon gone (killed if it hangs)."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    yield mp
    if mounted(mp):
        subprocess.run(["umount", str(mp)], capture_output=True, timeout=60)
    deadline = time.monotonic() + STOP_TIMEOUT
    while (pids := _daemons(mp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:  # ours, by PID: a daemon that did not stop after its unmount
        os.kill(pid, 9)
    if mounted(mp):
        subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True, timeout=60)
    assert not pids, f"objfs daemon {pids} did not exit after umount"


async def _read_object(asyncio_thread: AsyncioThread, url: str, bucket: str, name: str) -> bytes:
    async def get() -> bytes:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            obs = await nc.jetstream().object_store(bucket)
            result = await obs.get(name)
            assert result.data is not None
            return bytes(result.data)
        finally:
            await nc.close()

    return await Bridge(asyncio_thread).call(get)


def _umount(mp: Path) -> None:
    r = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + STOP_TIMEOUT
    while _daemons(mp):
        assert time.monotonic() < deadline, "the daemon did not exit after umount"
        time.sleep(0.05)


async def test_fstab_line_with_mount_a(
    helper: Path,
    mountpoint: Path,
    nats_server: EmbeddedServer,
    asyncio_thread: AsyncioThread,
    tmp_path: Path,
    bucket_name: str,
) -> None:
    fstab = tmp_path / "fstab"
    options = (
        f"server={nats_server.url},create,allow_other,_netdev,nofail,nosuid,nodev,"
        "x-systemd.automount,x-systemd.mount-timeout=30,comment=objfs"
    )
    fstab.write_text(f"# objfs test\n{bucket_name} {mountpoint} fuse.objfs {options} 0 0\n")
    r = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            ["mount", "-T", str(fstab), "-a"], capture_output=True, text=True, timeout=120
        )
    )
    assert r.returncode == 0, r.stderr
    assert mounted(mountpoint)  # mount(8) returned once the mount answers
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        line = next(ln for ln in f if f" {mountpoint} " in ln)
    assert "nosuid" in line and "nodev" in line and "fuse.objfs" in line
    (mountpoint / "hello.txt").write_bytes(b"through fstab")
    assert await _read_object(
        asyncio_thread, nats_server.url, bucket_name, "hello.txt"
    ) == b"through fstab"
    await trio.to_thread.run_sync(_umount, mountpoint)


async def test_mount_t_fuse_objfs(
    helper: Path,
    mountpoint: Path,
    nats_server: EmbeddedServer,
    asyncio_thread: AsyncioThread,
    bucket_name: str,
) -> None:
    cmd = ["mount", "-t", "fuse.objfs", bucket_name, str(mountpoint), "-o",
           f"server={nats_server.url},create,cache_size=64M,attr_timeout=2"]
    r = await trio.to_thread.run_sync(
        lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    )
    assert r.returncode == 0, r.stderr
    (mountpoint / "a.bin").write_bytes(b"x" * 300_000)
    assert await _read_object(
        asyncio_thread, nats_server.url, bucket_name, "a.bin"
    ) == b"x" * 300_000
    await trio.to_thread.run_sync(_umount, mountpoint)


async def test_fstab_password_stays_out_of_the_process_list(
    helper: Path,
    mountpoint: Path,
    server_with: Any,
    asyncio_thread: AsyncioThread,
    bucket_name: str,
) -> None:
    """``password=`` in the options reaches the mount by pipe: it works, and no process shows
    it in its arguments."""
    secret = "fstab-s3cret-pw"
    srv = server_with(f'authorization {{ user: "ops", password: "{secret}" }}')
    cmd = ["mount", "-t", "fuse.objfs", bucket_name, str(mountpoint), "-o",
           f"server={srv.url},create,nats_user=ops,password={secret}"]
    r = await trio.to_thread.run_sync(
        lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    )
    assert r.returncode == 0, r.stderr
    (pid,) = _daemons(mountpoint)
    assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    (mountpoint / "p.txt").write_bytes(b"authenticated")

    async def get() -> bytes:
        nc = await nats.connect(srv.url, user="ops", password=secret, max_reconnect_attempts=0)
        try:
            obs = await nc.jetstream().object_store(bucket_name)
            result = await obs.get("p.txt")
            assert result.data is not None
            return bytes(result.data)
        finally:
            await nc.close()

    assert await Bridge(asyncio_thread).call(get) == b"authenticated"
    await trio.to_thread.run_sync(_umount, mountpoint)


def test_mount_t_fuse_objfs_bad_option(helper: Path, mountpoint: Path) -> None:
    r = subprocess.run(
        ["mount", "-t", "fuse.objfs", "b", str(mountpoint), "-o", "server=nats://x:1,frobnicate"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0
    assert "unknown option 'frobnicate'" in r.stderr
    assert not mounted(mountpoint)
