"""objfs mount under a service manager: READY=1 only once the mount answers, STOPPING=1 at
the end, the start line, watchdog pings, and journald priorities when stderr is the journal
(JOURNAL_STREAM); systemd's side played by a socket and a file the test makes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from mounting import REPO, START_TIMEOUT, STOP_TIMEOUT, mounted, objfs_command
from secure_nats import closed_port

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


def test_watchdog_pings_and_journal_lines_of_a_real_mount(
    fuse: None, nats_server: EmbeddedServer, tmp_path: Path, bucket_name: str
) -> None:
    """With WATCHDOG_USEC (WatchdogSec=2 in a unit) the mount pings WATCHDOG=1 at half the
    interval for as long as it runs; with stderr the journal, its log lines carry their
    syslog priority."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    sock_path = str(tmp_path / "notify")
    err = tmp_path / "stderr"
    err.touch()
    st = os.stat(err)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(START_TIMEOUT)
        env = {
            **os.environ, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000",
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        }  # fmt: skip
        cmd = objfs_command(
            "mount", "-v", "--server", nats_server.url, "--bucket", bucket_name, "--create",
            "--spool-dir", str(tmp_path / "spool"), str(mp),
        )  # fmt: skip
        with open(err, "ab") as f:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=f, cwd=REPO)  # fmt: skip
        try:
            # Pings may come before READY=1 (both start with the mount): count those after.
            while not sock.recv(4096).startswith(b"READY=1\n"):
                pass
            pings = 0
            while pings < 2:
                message = sock.recv(4096)
                assert message == b"WATCHDOG=1" or message.startswith(b"STATUS="), message
                pings += message == b"WATCHDOG=1"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(STOP_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if mounted(mp):
                subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True)
    text = err.read_text()
    line = f"mounted bucket {bucket_name} at {mp} via {nats_server.url}"
    assert f"\n<6>objfs: {line}\n" in f"\n{text}", text  # the start line: info
    assert f"\n<6>INFO objfs.mount: {line}\n" in f"\n{text}", text  # a log record at INFO
    assert all(re.match(r"<[0-7]>", x) for x in text.splitlines()), text  # and every line


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


def test_fatal_line_carries_the_journal_priority_only_on_the_journal(tmp_path: Path) -> None:
    """Under systemd stderr is the journal (JOURNAL_STREAM names its device and inode): the
    fatal line starts with ``<3>`` (err), so ``journalctl -p err`` shows it; a process that
    inherited the variable with another stderr prints it plainly."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    url = f"nats://127.0.0.1:{closed_port()}"
    cmd = objfs_command("mount", "--server", url, "--timeout", "10", str(mp))
    err = tmp_path / "stderr"
    err.touch()
    st = os.stat(err)
    journal, other = f"{st.st_dev}:{st.st_ino}", f"{st.st_dev}:{st.st_ino + 1}"
    for stream, prefix in ((journal, "<3>"), (other, "")):
        with open(err, "wb") as f:  # truncated, the same inode
            env = {**os.environ, "JOURNAL_STREAM": stream}
            r = subprocess.run(cmd, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=f,
                               stderr=f, timeout=120)  # fmt: skip
        assert os.stat(err).st_ino == st.st_ino
        text = err.read_text()
        assert r.returncode == 1, text
        assert text == f"{prefix}objfs: cannot connect to {url}: connection refused\n", text
