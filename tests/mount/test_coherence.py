"""Live coherence between real mounts: what one mount (or nats-py) changes, another sees at once.

Two mounts of one bucket, or a mount and nats-py's own ObjectStore, on the real server. Each
change must be visible in the other mount within ``BOUND`` seconds, half the entry and
attribute timeouts these mounts use, so it is the watcher's invalidations that make it
visible, not a TTL running out (each test looks first, so the kernel holds the old answer,
negative dentries included). How fast it shows is not asserted here: scripts/bench measures
it (BENCHMARKS.md). The restart test stops the server under a mount while another
client changes the bucket, and checks that everything shows once the mount's watch is back.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import nats
from helpers import CHUNK, data, wait_for
from mounting import Mount, MountFactory

from objfs.server import EmbeddedServer

ATTR_TIMEOUT = 60.0
"""The mounts here let the kernel cache names and attributes for 60 s (--attr-timeout) ..."""
BOUND = ATTR_TIMEOUT / 2
"""... so a change that shows within 30 s was pushed by the watcher: the kernel's cached
answer (looked up just before the change) cannot have expired yet. Half the TTL, not a guess
at speed: a loaded machine has 30 s of slack, and the TTL still cannot explain a pass."""
WATCHED = ("--attr-timeout", str(ATTR_TIMEOUT))


def within(check: Callable[[], bool], what: str) -> float:
    """Poll ``check`` until true; fail after ``BOUND`` seconds; return the time it took."""
    return wait_for(check, what, BOUND)


def exists(p: Path) -> bool:
    return os.path.lexists(p)


def listing(p: Path) -> list[str]:
    return sorted(os.listdir(p))


def test_two_mounts_see_each_others_changes(mounts: MountFactory) -> None:
    a, b = mounts(*WATCHED), mounts(*WATCHED)
    pa, pb = a.mountpoint, b.mountpoint
    # b looks first: it caches the negative dentry and the listing.
    assert not exists(pb / "new.txt") and listing(pb) == []
    content = data(2 * CHUNK + 5, 11)
    (pa / "new.txt").write_bytes(content)
    within(lambda: exists(pb / "new.txt"), "stat of a new file")
    assert "new.txt" in listing(pb)
    assert os.stat(pb / "new.txt").st_size == len(content)
    assert (pb / "new.txt").read_bytes() == content
    # rename
    os.rename(pa / "new.txt", pa / "moved.txt")
    within(lambda: listing(pb) == ["moved.txt"], "a rename in ls")
    # The listing comes from the tree; the old name's dentry goes when the invalidation
    # worker has run, a moment later (a separate bound, not the same instant).
    within(lambda: not exists(pb / "new.txt"), "the old name of a rename")
    assert (pb / "moved.txt").read_bytes() == content
    # metadata (an xattr) changed in a, read in b
    os.setxattr(pa / "moved.txt", "user.description", b"seen elsewhere")

    def xattr_seen() -> bool:
        try:
            return os.getxattr(pb / "moved.txt", "user.description") == b"seen elsewhere"
        except OSError:
            return False

    within(xattr_seen, "an xattr change")
    # delete
    os.unlink(pa / "moved.txt")
    within(lambda: not exists(pb / "moved.txt"), "a delete")
    assert listing(pb) == []


def test_overwrite_of_a_cached_file_reads_new_bytes(mounts: MountFactory) -> None:
    a, b = mounts(*WATCHED), mounts(*WATCHED)
    old, new = data(3 * CHUNK, 21), data(3 * CHUNK, 22)  # same size: only content differs
    (a.mountpoint / "f").write_bytes(old)
    within(lambda: exists(b.mountpoint / "f"), "the first version")
    for _ in range(2):  # the second open keeps the page cache (keep_cache)
        assert (b.mountpoint / "f").read_bytes() == old
    (a.mountpoint / "f").write_bytes(new)
    seen: list[bytes] = []

    def changed() -> bool:
        seen.append((b.mountpoint / "f").read_bytes())
        return seen[-1] == new

    within(changed, "an overwrite of a cached file")
    assert all(s in (old, new) for s in seen), "a read mixed two versions"
    assert (b.mountpoint / "f").read_bytes() == new  # and never old again


def _nats_py(url: str, bucket: str, fn: Callable[..., object]) -> None:
    async def main() -> None:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            await fn(await nc.jetstream().object_store(bucket))
        finally:
            await nc.close()

    asyncio.run(main())


def test_nats_py_put_and_delete_show(mounts: MountFactory, nats_server: EmbeddedServer) -> None:
    mount = mounts(*WATCHED)
    p = mount.mountpoint
    assert not exists(p / "from-natspy")
    content = data(CHUNK + 3, 31)

    async def put(obs: object) -> None:
        await obs.put("from-natspy", io.BytesIO(content))  # type: ignore[attr-defined]

    async def delete(obs: object) -> None:
        await obs.delete("from-natspy")  # type: ignore[attr-defined]

    _nats_py(nats_server.url, mount.bucket or "", put)
    within(lambda: exists(p / "from-natspy"), "a nats-py put")
    assert (p / "from-natspy").read_bytes() == content
    _nats_py(nats_server.url, mount.bucket or "", delete)
    within(lambda: not exists(p / "from-natspy"), "a nats-py delete")


def test_server_restart_under_a_mount(
    private_server: EmbeddedServer, tmp_path: Path, bucket_name: str, fuse: None
) -> None:
    m = Mount(tmp_path / "mnt", private_server.url, bucket_name, args=WATCHED, log_dir=tmp_path)
    m.start()
    try:
        p = m.mountpoint
        (p / "keep").write_bytes(b"kept")
        (p / "change").write_bytes(b"before")
        (p / "gone").write_bytes(b"to be deleted")
        assert listing(p) == ["change", "gone", "keep"]
        assert (p / "change").read_bytes() == b"before"
        private_server.stop()
        private_server.start()  # same port, same store

        async def changes(obs: object) -> None:
            await obs.put("change", io.BytesIO(b"after the restart"))  # type: ignore[attr-defined]
            await obs.delete("gone")  # type: ignore[attr-defined]
            await obs.put("added", io.BytesIO(b"new"))  # type: ignore[attr-defined]

        _nats_py(private_server.url, bucket_name, changes)
        # The watch notices the lost consumer (three heartbeats of silence) and reconciles.
        # (nats_js: 3 x the 2 s heartbeat, then a reconnect; well inside BOUND.)
        within(lambda: listing(p) == ["added", "change", "keep"], "changes after restart")
        # Its cached pages go when the invalidation worker has run (a moment after the tree).
        within(lambda: (p / "change").read_bytes() == b"after the restart", "new content")
        assert (p / "added").read_bytes() == b"new"
        assert (p / "keep").read_bytes() == b"kept"
        # Live again: a change now shows at once.
        (p / "later").write_bytes(b"x")

        async def later_put(obs: object) -> None:
            await obs.put("remote-later", io.BytesIO(b"y"))  # type: ignore[attr-defined]

        _nats_py(private_server.url, bucket_name, later_put)
        within(lambda: exists(p / "remote-later"), "a change after reconnect")
        # The outage is told once and its end once, not once per reconnect attempt.
        log = m.stderr()
        assert log.count("disconnected from the server") == 1, log
        assert log.count("reconnected after") == 1, log
        assert log.count(" W objfs.store.nats_store: nats:") <= 3, log
    finally:
        m.stop()


def test_all_buckets_root_follows_bucket_changes(
    mounts: MountFactory, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    m = mounts(*WATCHED, bucket=None)
    p = m.mountpoint
    assert not exists(p / bucket_name)

    async def admin(op: str) -> None:
        nc = await nats.connect(nats_server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            if op == "create":
                await js.create_object_store(bucket_name)
            else:
                await js.delete_object_store(bucket_name)
        finally:
            await nc.close()

    asyncio.run(admin("create"))
    within(lambda: exists(p / bucket_name), "a bucket created by nats-py")
    assert bucket_name in os.listdir(p)
    asyncio.run(admin("delete"))
    within(lambda: not exists(p / bucket_name), "a bucket deleted by nats-py")


def test_rm_rf_of_a_bucket_watched_by_two_mounts(mounts: MountFactory, bucket_name: str) -> None:
    a, b = mounts(*WATCHED, bucket=None), mounts(*WATCHED, bucket=None)
    (a.mountpoint / bucket_name).mkdir()
    (a.mountpoint / bucket_name / "sub").mkdir()
    for i in range(20):
        (a.mountpoint / bucket_name / "sub" / f"f{i}").write_bytes(b"x" * i)
    (a.mountpoint / bucket_name / "top").write_bytes(b"top")
    # Both mounts have the bucket loaded (its watch running) when it goes.
    within(lambda: exists(b.mountpoint / bucket_name / "top"), "the new bucket in b")
    assert len(os.listdir(b.mountpoint / bucket_name / "sub")) == 20
    r = subprocess.run(
        ["rm", "-rf", str(a.mountpoint / bucket_name)], capture_output=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert not exists(a.mountpoint / bucket_name)
    within(lambda: not exists(b.mountpoint / bucket_name), "a removed bucket in b")
    # Both mounts carry on, and neither hit an unexpected error on the way.
    for i, m in enumerate((a, b)):
        (m.mountpoint / f"{bucket_name}-after{i}").mkdir()
        assert "unexpected error" not in m.stderr() and "Traceback" not in m.stderr()
