"""objfs mount under a service manager: READY=1 only once the mount answers, STOPPING=1 at
the end, and the start line; systemd's side played by a socket the test binds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from mounting import REPO, START_TIMEOUT, STOP_TIMEOUT, mounted, objfs_command

from objfs.server import EmbeddedServer


def test_ready_after_the_mount_answers_and_stopping(
    fuse: None, nats_server: EmbeddedServer, tmp_path: Path, bucket_name: str
) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    before = os.stat(mp).st_dev
    sock_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(START_TIMEOUT)
        env = {**os.environ, "NOTIFY_SOCKET": sock_path}
        cmd = objfs_command(
            "mount", "--server", nats_server.url, "--bucket", bucket_name, "--create",
            "--spool-dir", str(tmp_path / "spool"), str(mp),
        )
        err = tmp_path / "stderr"
        with open(err, "wb") as f:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=f, cwd=REPO)
        try:
            ready = sock.recv(4096).decode()
            # Told ready: the mount is there and answers, at this moment already.
            assert mounted(mp) and os.stat(mp).st_dev != before
            assert os.listdir(mp) == []
            line = f"mounted bucket {bucket_name} at {mp} via {nats_server.url}"
            assert ready == f"READY=1\nSTATUS={line}"
            proc.send_signal(signal.SIGTERM)
            stopping = sock.recv(4096).decode()
            assert stopping.startswith("STOPPING=1\nSTATUS=unmounting")
            assert proc.wait(STOP_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if mounted(mp):
                subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True)
    # The one start line a person sees (no log level needed), naming the server.
    assert f"objfs: {line}\n" in err.read_text()


@pytest.mark.parametrize("daemon", [False, True])
def test_start_line_names_what_where_and_via(
    fuse: None, nats_server: EmbeddedServer, tmp_path: Path, bucket_name: str, daemon: bool
) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    cmd = objfs_command(
        "mount", "--server", nats_server.url, "--bucket", bucket_name, "--create",
        "--spool-dir", str(tmp_path / "spool"), "--data-dir", str(tmp_path / "data"),
        *(["--daemon"] if daemon else []), str(mp),
    )
    line = f"objfs: mounted bucket {bucket_name} at {mp} via {nats_server.url}"
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the daemon's parent prints it, then exits 0
        assert first == line + "\n"
        if daemon:
            assert proc.wait(START_TIMEOUT) == 0
    finally:
        r = subprocess.run(["fusermount3", "-u", str(mp)], capture_output=True, timeout=120)
        if not daemon:
            assert proc.wait(STOP_TIMEOUT) == 0, r.stderr
        if mounted(mp):
            subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True)
