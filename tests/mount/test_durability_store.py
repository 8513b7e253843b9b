"""Store-level durability seen through real mounts: exclusive create across mounts, and
copies that outlive a server restart shorter than ``--timeout``.

Each claim is checked from outside objfs where it matters: errnos from the kernel, bytes read
back through another mount and with nats-py directly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mounting import Mount, MountFactory
from server_faults import kill_and_restart

from objfs.server import EmbeddedServer

TRIALS = 6


def _race_excl(paths: list[Path]) -> list[int]:
    """``open(O_CREAT|O_EXCL)`` each path from its own thread at once; 0 or the errno each."""
    barrier = threading.Barrier(len(paths))
    results = [-1] * len(paths)

    def one(i: int) -> None:
        barrier.wait(60)
        try:
            fd = os.open(paths[i], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            results[i] = e.errno or -2
            return
        try:
            os.write(fd, f"owner {i}\n".encode())
        finally:
            os.close(fd)
        results[i] = 0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_exclusive_create_races_across_two_mounts(mounts: MountFactory) -> None:
    a = mounts()
    b = mounts(create=False)
    for trial in range(TRIALS):
        name = f"lock-{trial}"
        results = _race_excl([a.mountpoint / name, b.mountpoint / name])
        assert sorted(results) == [0, errno.EEXIST], results
        winner = results.index(0)
        # The winner's content is what both mounts end up with (the loser wrote nothing).
        want = f"owner {winner}\n".encode()
        for m in (a, b):
            path = m.mountpoint / name
            assert _eventually(lambda p=path, w=want: p.read_bytes() == w), path.read_bytes()


def test_exclusive_create_of_a_name_another_mount_made(mounts: MountFactory) -> None:
    """The name exists on the server but this mount has not seen it yet (or ever)."""
    a = mounts()
    b = mounts(create=False)
    (a.mountpoint / "taken").write_bytes(b"first")
    # b may or may not know the name by now: either way O_EXCL must refuse it.
    with pytest.raises(FileExistsError):
        os.open(b.mountpoint / "taken", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert (a.mountpoint / "taken").read_bytes() == b"first"


def _eventually(cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def test_cp_survives_a_server_restart_shorter_than_the_timeout(
    private_server: EmbeddedServer, tmp_path: Path, bucket_name: str, fuse: None
) -> None:
    """Issue 10's row: nats-server killed during a 200 MiB cp, back 3 s later, --timeout 10."""
    src = tmp_path / "big"
    with open(src, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    m = Mount(
        tmp_path / "mnt",
        private_server.url,
        bucket_name,
        args=("--timeout", "10"),
        log_dir=tmp_path,
    )
    m.start()
    try:
        cp = subprocess.Popen(["cp", str(src), str(m.mountpoint / "big")])
        # Kill the server once the upload is under way (the close uploads the spool).
        assert _eventually(lambda: _stored_bytes(private_server) > 20 << 20, 120), "no upload"
        # The outage the issue measured: back 3 s later, under --timeout 10.
        kill_and_restart(private_server, 3.0)
        assert cp.wait(300) == 0
        assert _sha(m.mountpoint / "big") == _sha(src)
    finally:
        m.stop(check=False)
    assert m.returncode == 0, m.stderr()


def _stored_bytes(srv: EmbeddedServer) -> int:
    """Bytes under the server's JetStream store dir (the upload's progress, seen from disk)."""
    total = 0
    for root, _dirs, files in os.walk(srv.data_dir / "jetstream"):
        for f in files:
            with contextlib.suppress(OSError):  # a file removed meanwhile
                total += os.path.getsize(os.path.join(root, f))
    return total
