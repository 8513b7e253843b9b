"""How a mount starts and ends: signals, --daemon, the embedded server, ``objfs server``.

Every way out must leave nothing behind: no mount, no objfs process, no nats-server child.
Processes are found by reading /proc (their command line names this test's private paths) and
are only ever killed by PID, as a last resort after a failed check.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
from pathlib import Path

import nats
import pytest
from helpers import WAIT, wait_for
from mounting import Mount, MountFactory, mounted, objfs_command

from objfs.server import EmbeddedServer, ServerError


def pids_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (a path private to this test)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry))
    return found


def wait_gone(text: str, timeout: float = WAIT) -> None:
    """Wait until no process mentions ``text``; kill stragglers by PID and fail."""
    try:
        wait_for(lambda: not pids_mentioning(text), f"no process mentioning {text}", timeout)
    except AssertionError:
        pids = pids_mentioning(text)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"processes still running after {timeout}s: {pids}")


def test_sigint_unmounts_cleanly(mount: Mount) -> None:
    (mount.mountpoint / "f").write_bytes(b"data")
    assert mount.signal(signal.SIGINT) == 0, mount.stderr()
    assert not mounted(mount.mountpoint)
    assert "Traceback" not in mount.stderr()


def test_remount_after_sigterm_shows_the_data(mounts: MountFactory) -> None:
    m = mounts()
    (m.mountpoint / "kept").write_bytes(b"kept across restarts")
    assert m.signal(signal.SIGTERM) == 0, m.stderr()
    again = mounts(name="again")
    assert (again.mountpoint / "kept").read_bytes() == b"kept across restarts"


@pytest.mark.usefixtures("fuse")
def test_embedded_server_is_started_and_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    m = Mount(tmp_path / "mnt", "", "emb", log_dir=tmp_path, args=("--data-dir", str(data_dir)))
    m.command = lambda: objfs_command(  # type: ignore[method-assign]
        "mount", "--bucket", "emb", "--create", "--data-dir", str(data_dir), "-v", str(m.mountpoint)
    )
    try:
        m.start()
        assert pids_mentioning(str(data_dir / "nats-server.conf")), "no embedded nats-server"
        (m.mountpoint / "f").write_bytes(b"embedded")
        # df of a mount on its own server: that server's disk, not "unlimited".
        df, disk = os.statvfs(m.mountpoint), os.statvfs(data_dir)
        assert 0 < df.f_blocks * df.f_frsize <= disk.f_blocks * disk.f_frsize
        m.remount()
        assert (m.mountpoint / "f").read_bytes() == b"embedded"
    finally:
        m.stop()
    wait_gone(str(data_dir))
    assert "embedded nats-server" in m.stderr()


def test_a_data_directory_in_use_is_refused(tmp_path: Path) -> None:
    """A second server on a store that a live objfs uses would corrupt it: refused, naming
    the process, and the first server is left alone."""
    with EmbeddedServer(tmp_path) as first:
        assert first.proc is not None
        with pytest.raises(ServerError, match=rf"in use by another objfs \(pid {os.getpid()}\)"):
            EmbeddedServer(tmp_path).start()
        assert first.proc.poll() is None


@pytest.mark.usefixtures("fuse")
def test_the_next_mount_stops_the_server_a_killed_mount_left(tmp_path: Path) -> None:
    """SIGKILL leaves the embedded nats-server running (nothing of objfs runs after it), on
    the store: the next mount on that data directory stops it and starts its own."""
    data_dir = tmp_path / "data"
    conf = str(data_dir / "nats-server.conf")
    m = Mount(tmp_path / "mnt", "", "emb", log_dir=tmp_path, args=("--data-dir", str(data_dir)))
    m.command = lambda: objfs_command(  # type: ignore[method-assign]
        "mount", "--bucket", "emb", "--create", "--data-dir", str(data_dir), str(m.mountpoint)
    )
    try:
        m.start()
        (m.mountpoint / "f").write_bytes(b"before the kill")
        [orphan] = pids_mentioning(conf)
        assert m.proc is not None
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait()
        m.proc = None
        m.stop(check=False)  # lazy unmount of what the dead process left
        assert pids_mentioning(conf) == [orphan], "the server did not outlive its mount"
        m.start()
        assert (m.mountpoint / "f").read_bytes() == b"before the kill"
        wait_for(lambda: orphan not in pids_mentioning(conf), "the orphaned server stopped")
        assert len(pids_mentioning(conf)) == 1  # the new mount's own server
        assert f"stopping the nats-server (pid {orphan})" in m.stderr()
    finally:
        m.stop(check=False)
    wait_gone(str(data_dir))


@pytest.mark.usefixtures("fuse")
def test_daemon_returns_once_mounted_and_exits_on_unmount(
    tmp_path: Path, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    mp = tmp_path / "dmnt"
    mp.mkdir()
    args = ["--server", nats_server.url, "--bucket", bucket_name, "--create"]
    args += ["--data-dir", str(tmp_path / "data"), "--daemon", str(mp)]
    try:
        r = subprocess.run(
            objfs_command("mount", *args), capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        # Mounted and answering by the time the command returned: no waiting here.
        assert mounted(mp)
        (mp / "f").write_bytes(b"from a daemon mount")
        assert (mp / "f").read_bytes() == b"from a daemon mount"
        assert pids_mentioning(str(mp)), "the daemon is not running"
    finally:
        if mounted(mp):
            subprocess.run(["fusermount3", "-u", str(mp)], check=False)
        wait_gone(str(mp))
        if mounted(mp):
            subprocess.run(["fusermount3", "-uz", str(mp)], check=False)
    assert not mounted(mp)
    assert (tmp_path / "data/objfs.log").exists()


def test_daemon_reports_errors_to_the_caller(
    tmp_path: Path, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    mp = tmp_path / "dmnt"
    mp.mkdir()
    args = ["--server", nats_server.url, "--bucket", bucket_name]
    args += ["--data-dir", str(tmp_path / "data"), "--daemon", str(mp)]
    r = subprocess.run(objfs_command("mount", *args), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"objfs: bucket {bucket_name!r} does not exist (add --create to create it)"
    ]
    wait_gone(str(mp))
    assert not mounted(mp)


def test_objfs_server_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv"
    proc = subprocess.Popen(
        objfs_command("server", "--data-dir", str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("nats://127.0.0.1:"), url

        async def check() -> bool:
            nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
            try:
                return bool((await nc.jetstream().account_info()).limits is not None)
            finally:
                await nc.close()

        assert asyncio.run(check())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_gone(str(data_dir))


def test_failed_upload_is_kept_in_the_default_spool_and_stored_next_time(
    private_server: EmbeddedServer, tmp_path: Path, bucket_name: str, fuse: None
) -> None:
    data_dir = tmp_path / "data"
    m = Mount(
        tmp_path / "mnt",
        private_server.url,
        bucket_name,
        args=("--data-dir", str(data_dir), "--timeout", "2"),
        log_dir=tmp_path,
    )
    m.start()
    try:
        private_server.stop()
        content = os.urandom(300_000)
        with pytest.raises(OSError) as e, open(m.mountpoint / "lost?", "wb") as f:
            f.write(content)
        assert e.value.errno == errno.EIO
    finally:
        m.stop(check=False)
    assert m.returncode == 1
    report = [line for line in m.stderr().splitlines() if line.startswith("objfs: upload of")]
    assert len(report) == 1, m.stderr()
    kept = Path(report[0].rsplit("data kept in ", 1)[1])
    assert kept.is_relative_to(data_dir / "spool")
    assert kept.read_bytes() == content
    # The next mount stores it (as nats-py reads it) and removes the directory.
    private_server.start()
    again = Mount(
        tmp_path / "mnt2",
        private_server.url,
        bucket_name,
        args=("--data-dir", str(data_dir)),
        log_dir=tmp_path,
    )
    again.start()
    try:

        async def read() -> bytes:
            nc = await nats.connect(private_server.url, connect_timeout=5)
            try:
                obs = await nc.jetstream().object_store(bucket_name)
                return bytes((await obs.get("lost?")).data or b"")
            finally:
                await nc.close()

        wait_for(lambda: not kept.parent.exists(), "the kept spool directory recovered")
        assert asyncio.run(read()) == content
        assert "recovered" in again.stderr() and "lost?" in again.stderr()
    finally:
        again.stop()


def test_unusable_spool_dir_is_a_one_line_error(
    tmp_path: Path, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = subprocess.run(
        objfs_command(
            "mount", "--server", nats_server.url, "--bucket", bucket_name, "--create",
            "--spool-dir", str(not_a_dir), str(mp),
        ),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "spool directory" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not mounted(mp)
