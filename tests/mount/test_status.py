"""Seeing what a real mount does: ``objfs status`` over its socket (and who may ask; recent
errors, retries and reconnects across a server restart; what a dead mount left in the
spool), Prometheus metrics over HTTP (loopback unless told), ``objfs info`` against the
xattrs and of links, systemd's STATUS= line, log options (-q: errors only), df from the
JetStream account's limit, and a mount point left dead by a killed daemon cleared at the
next start.

An upload in progress is seen moving through a real mount (``test_status_shows_an_upload_moving``):
the mount reaches the server through a relay that passes client bytes only as the test grants
them, so the put advances step by step, whatever the machine's speed; tests/fs/test_stats.py
holds the store's put at exact chunk positions on the memory store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest
from helpers import wait_for
from mounting import REPO, START_TIMEOUT, Mount, MountFactory, mounted, objfs_command
from test_recovery import failing_close, kill, spool_dirs

from objfs import status
from objfs.server import EmbeddedServer


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime directory of this test's own: the mounts of other tests are not listed."""
    d = tmp_path / "run"
    monkeypatch.setenv("OBJFS_RUNTIME_DIR", str(d))
    return d


def objfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(objfs_command(*args), capture_output=True, text=True, timeout=120)


def status_json(mp: Path) -> dict[str, Any]:
    r = objfs("status", "--json", str(mp))
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def nats_put(url: str, bucket: str, name: str, data: bytes) -> None:
    async def main() -> None:
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            obs = await nc.jetstream().object_store(bucket)
            await obs.put(name, data)
        finally:
            await nc.close()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        text = r.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_status_of_a_real_mount(
    runtime_dir: Path, mounts: MountFactory, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    m = mounts()
    data = os.urandom(300_000)
    (m.mountpoint / "f.bin").write_bytes(data)
    doc = status_json(m.mountpoint)
    assert doc["mountpoint"] == str(m.mountpoint)
    assert doc["buckets"] == [bucket_name]
    assert doc["server"] == {
        "url": nats_server.url,
        "connected": True,
        "reconnects": 0,
        "last_error": None,
    }
    up = doc["uploads"]
    assert up["in_flight"] == [] and up["pending"] == [] == up["retrying"] and up["failed"] == 0
    assert up["done"] >= 1 and up["bytes"] >= len(data)
    assert doc["io"]["bytes_written"] == len(data)
    assert doc["cache"]["capacity"] == 256 << 20
    assert doc["errors"] == []
    # Human form: one header line and short aligned lines; no MOUNTPOINT lists every mount.
    r = objfs("status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{m.mountpoint}  (pid {doc['pid']}")
    server = rf"  server +{re.escape(nats_server.url)} connected, 0 reconnect\(s\)"
    assert any(re.fullmatch(server, x) for x in lines), lines
    uploads = r"  uploads +0 in flight, 0 pending, 0 to retry, \d+ done .*"
    assert any(re.fullmatch(uploads, x) for x in lines), lines
    # Private: the directory 0700, the socket 0600.
    sock = status.socket_path(m.mountpoint)
    assert sock.parent == runtime_dir
    assert stat.S_IMODE(os.stat(runtime_dir).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(sock).st_mode) and stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    # A mount point that is not an objfs mount: one line, exit 1.
    r = objfs("status", str(runtime_dir))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no status socket" in r.stderr
    m.stop()
    assert not sock.exists()  # removed at unmount
    assert objfs("status").stdout == "no objfs mounts of this user are running\n"


def _query_as(uid: int, path: Path) -> str:
    """``status.query`` in a child process running as ``uid``: what it raised, or "ok"."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            try:
                status.query(path)
                answer = "ok"
            except status.StatusError as e:
                answer = str(e)
            os.write(write_fd, answer.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        answer = f.read().decode()
    os.waitpid(pid, 0)
    return answer


def test_status_refused_to_another_user(
    mounts: MountFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")  # CI runs as root
    # Under /tmp itself: pytest's own directories would keep the other user out anyway.
    run = Path(tempfile.mkdtemp(prefix="objfs-run-"))
    try:
        monkeypatch.setenv("OBJFS_RUNTIME_DIR", str(run))
        m = mounts()
        sock = status.socket_path(m.mountpoint)
        assert status.query(sock)["mountpoint"] == str(m.mountpoint)  # the owner (root) may
        # The directory (0700) keeps others out...
        assert "permission denied" in _query_as(65534, sock)
        # ...and with the file modes opened up, the mount itself refuses (SO_PEERCRED).
        os.chmod(run, 0o755)
        os.chmod(sock, 0o666)
        assert _query_as(65534, sock) == "permission denied: not the mount's user"
        assert "status request from uid 65534 refused" in m.stderr()
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_metrics_scraped_over_http(
    runtime_dir: Path, mounts: MountFactory, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    port = free_port()
    m = mounts("--metrics-addr", str(port))
    before = scrape(port)
    data = os.urandom(200_000)
    (m.mountpoint / "w.bin").write_bytes(data)
    after_write = scrape(port)
    assert after_write["objfs_written_bytes_total"] - before["objfs_written_bytes_total"] == len(
        data
    )
    writes = 'objfs_requests_total{op="write"}'
    assert after_write[writes] > before.get(writes, 0)
    assert after_write["objfs_uploads_total"] >= before["objfs_uploads_total"] + 1
    assert after_write["objfs_connected"] == 1.0
    assert after_write["objfs_reconnects_total"] == 0.0
    # An object written by another client (nats-py): its chunks are not cached here yet.
    other = os.urandom(100_000)
    nats_put(nats_server.url, bucket_name, "other.bin", other)
    wait_for(lambda: (m.mountpoint / "other.bin").exists(), "other.bin in the mount")
    assert (m.mountpoint / "other.bin").read_bytes() == other
    after_read = scrape(port)
    assert after_read["objfs_cache_misses_total"] > after_write["objfs_cache_misses_total"]
    assert after_read["objfs_read_bytes_total"] >= after_write["objfs_read_bytes_total"] + len(
        other
    )
    assert after_read["objfs_watch_events_total"] > after_write["objfs_watch_events_total"]
    assert after_read['objfs_request_duration_seconds_count{op="read"}'] > 0
    assert after_read["objfs_uploads_pending"] == 0.0


def test_metrics_address_checked(tmp_path: Path) -> None:
    for bad in ("nohost:9", "127.0.0.1:0", "127.0.0.1:http", "example.com:9100"):
        r = objfs("mount", "--metrics-addr", bad, str(tmp_path))
        assert r.returncode == 2 and "--metrics-addr" in r.stderr, (bad, r.stderr)


def test_info_matches_the_xattrs(runtime_dir: Path, mount: Mount, tmp_path: Path) -> None:
    f = mount.mountpoint / "doc.txt"
    f.write_bytes(b"hello objfs\n" * 1000)
    os.setxattr(f, "user.header.Content-Type", b"text/plain")
    os.setxattr(f, "user.colour", b"blue")
    os.setxattr(f, "user.description", b"a test file")
    r = objfs("info", "--json", str(f))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)

    def fact(name: str) -> str:
        return os.getxattr(f, f"user.objfs.{name}").decode()

    for name in ("bucket", "name", "nuid", "digest"):
        assert info[name] == fact(name), name
    for name in ("size", "chunks", "revision"):
        assert info[name] == int(fact(name)), name
    assert info["mtime_ns"] == int(fact("mtime"))
    assert info["size"] == 12_000 and info["name"] == "doc.txt"
    assert info["headers"] == {"Content-Type": ["text/plain"]}
    assert info["metadata"] == {"colour": "blue"}
    assert info["description"] == "a test file"
    text = objfs("info", str(f)).stdout
    assert re.search(rf"^nuid +{info['nuid']}$", text, re.M), text
    assert re.search(r"^header +Content-Type: text/plain$", text, re.M), text
    # Not on objfs: one line, exit 1.
    plain = tmp_path / "plain"
    plain.write_text("x")
    r = objfs("info", str(plain))
    assert r.returncode == 1 and r.stderr == f"objfs: {plain} is not on an objfs mount\n"


def test_info_of_links_shows_their_target(
    runtime_dir: Path, mount: Mount, nats_server: EmbeddedServer, bucket_name: str
) -> None:
    """``ln -s`` to an object makes a NATS object link, to nothing a plain symlink object;
    ``objfs info`` names each one's target (Linux withholds a symlink's xattrs, so that is
    all it can show) and does not call it a file not uploaded yet."""
    (mount.mountpoint / "target.txt").write_bytes(b"pointed at\n")
    os.symlink("target.txt", mount.mountpoint / "link")
    os.symlink("nowhere", mount.mountpoint / "dangling")

    async def link_of(nc: Any) -> Any:
        obs = await nc.jetstream().object_store(bucket_name)
        return (await obs.get_info("link")).options.link

    async def connected(fn: Any) -> Any:
        nc = await nats.connect(nats_server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return await fn(nc)
        finally:
            await nc.close()

    link = asyncio.run(connected(link_of))  # really a NATS link, not a plain symlink
    assert link is not None and link.bucket == bucket_name and link.name == "target.txt"
    for name, target in (("link", "target.txt"), ("dangling", "nowhere")):
        f = mount.mountpoint / name
        r = objfs("info", "--json", str(f))
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["path"] == str(f) and info["mount"] == str(mount.mountpoint), info
        assert info["symlink"] == target, info
        text = objfs("info", str(f)).stdout
        assert re.search(rf"^symlink +{target}$", text, re.M), text
        assert "not uploaded yet" not in text, text


def test_upload_status_line_to_systemd(
    fuse: None, runtime_dir: Path, nats_server: EmbeddedServer, tmp_path: Path, bucket_name: str
) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    sock_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(START_TIMEOUT)
        env = {**os.environ, "NOTIFY_SOCKET": sock_path}
        cmd = objfs_command(
            "mount", "--server", nats_server.url, "--bucket", bucket_name, "--create",
            "--spool-dir", str(tmp_path / "spool"), str(mp),
        )  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            assert sock.recv(4096).decode().startswith("READY=1")
            (mp / "f.bin").write_bytes(os.urandom(3 << 20))
            seen = []
            while not seen or seen[-1] != "STATUS=idle, nothing to upload":
                seen.append(sock.recv(4096).decode())
            assert any(re.fullmatch(r"STATUS=1 upload pending, 3\.0 MiB", s) for s in seen), seen
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if mounted(mp):
                subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True)


def test_log_file_and_levels(runtime_dir: Path, mounts: MountFactory, tmp_path: Path) -> None:
    log = tmp_path / "objfs.log"
    m = mounts("--log-file", str(log))  # the harness passes -v: INFO
    (m.mountpoint / "up.bin").write_bytes(b"u" * 50_000)
    wait_for(lambda: "uploaded /up.bin" in log.read_text(), "the upload's end in the log")
    text = log.read_text()
    assert re.search(r"uploading /up\.bin \(48\.8 KiB\)$", text, re.M), text
    assert re.search(r"uploaded /up\.bin: 48\.8 KiB in [\d.]+s \([\d.]+ \w+/s\)$", text, re.M)
    m.stop()
    quiet = mounts("--log-level", "error", "--log-file", str(tmp_path / "quiet.log"))
    (quiet.mountpoint / "q.bin").write_bytes(b"q")
    quiet.stop()
    assert (tmp_path / "quiet.log").read_text() == ""


def test_quiet_logs_errors_only(
    fuse: None, runtime_dir: Path, private_server: EmbeddedServer, tmp_path: Path,
    bucket_name: str,
) -> None:  # fmt: skip
    """-q (after the harness's -v: it wins) keeps the errors and drops the rest: the server
    stopped and back, the mount logs the failed close (error), and neither the disconnect
    and reconnect nor the retry's success (warnings) nor the uploads (info)."""
    log = tmp_path / "quiet.log"
    m = Mount(tmp_path / "mnt", private_server.url, bucket_name, log_dir=tmp_path,
              args=("--timeout", "2", "-q", "--log-file", str(log))).start()  # fmt: skip
    try:
        (m.mountpoint / "first.bin").write_bytes(b"stored")
        private_server.stop()
        failing_close(m.mountpoint / "q.bin", b"q" * 1000)
        private_server.start()
        wait_for(lambda: status_json(m.mountpoint)["uploads"]["retrying"] == [], "the retry")
        assert status_json(m.mountpoint)["server"]["reconnects"] >= 1
    finally:
        m.stop()
    text = log.read_text()
    assert re.search(r"^\S+ \S+ \d+ ERROR objfs\.\S+: upload of /q\.bin failed", text, re.M), text
    assert [x for x in text.splitlines() if " ERROR " not in x] == [], text


def test_metrics_port_alone_listens_on_loopback_only(
    runtime_dir: Path, mounts: MountFactory
) -> None:
    """``--metrics-addr PORT``: the one listening socket on PORT (IPv4 and IPv6 tables of
    this network namespace) is bound to 127.0.0.1."""
    port = free_port()
    mounts("--metrics-addr", str(port))
    assert scrape(port)["objfs_connected"] == 1.0
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for row in f.read().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                address, _, hex_port = local.rpartition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    listening.append((table, address))
    assert listening == [("/proc/net/tcp", "0100007F")], listening  # 127.0.0.1, little-endian


SECRET = "s3cret-Pa55word-7f3a"


def test_df_reports_the_account_limit(fuse: None, runtime_dir: Path, tmp_path: Path) -> None:
    class Limited(EmbeddedServer):
        def _config(self, port: int) -> str:
            return super()._config(port) + (
                "accounts { A: { jetstream: { max_file: 64M, max_mem: 64M },"
                f" users: [{{user: a, password: {SECRET}}}] }} }}\n"
            )

    srv = Limited(tmp_path / "nats")
    srv.start()
    try:
        m = Mount(
            tmp_path / "mnt",
            srv.url,
            "limited",
            args=("--user", "a", "--password", SECRET),
            log_dir=tmp_path,
        ).start()
        try:
            (m.mountpoint / "f").write_bytes(os.urandom(1 << 20))
            st = os.statvfs(m.mountpoint)
            assert st.f_blocks * st.f_frsize == 64_000_000 - 64_000_000 % st.f_frsize
            used = 64_000_000 - st.f_bavail * st.f_frsize
            assert 1 << 20 <= used < 2 << 20  # the file, chunk overheads, the meta
            # The password is in no status output.
            for args in (("status",), ("status", "--json", str(m.mountpoint))):
                r = objfs(*args)
                assert r.returncode == 0 and SECRET not in r.stdout + r.stderr, r.stdout
            assert SECRET not in m.stderr()  # nor in the mount's log
        finally:
            m.stop()
    finally:
        srv.stop()


def test_a_killed_mount_is_cleared_at_the_next_start(
    runtime_dir: Path, mounts: MountFactory
) -> None:
    m = mounts()
    (m.mountpoint / "kept").write_bytes(b"survives")
    assert m.proc is not None
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait()
    m.proc = None
    with pytest.raises(OSError) as e:
        os.stat(m.mountpoint)
    assert e.value.errno == errno.ENOTCONN  # what Restart=on-failure used to run into
    # The harness sees the dead mount in the mount table at once: wait for the new one.
    m.start()
    wait_for(lambda: "was a dead objfs mount (its process was killed)" in m.stderr(), "clearing")

    def kept() -> bool:
        try:
            return (m.mountpoint / "kept").read_bytes() == b"survives"
        except OSError:
            return False

    wait_for(kept, "the file through the new mount")
    assert status.query(status.socket_path(m.mountpoint))["pid"] == m.proc.pid


class GatedRelay:
    """A TCP relay to a server whose client-to-server direction passes only the bytes the
    test grants (all of them until ``hold``): an upload through it advances exactly as far as
    the test lets it, whatever the machine's speed."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"nats://127.0.0.1:{self.listener.getsockname()[1]}"
        self.budget = math.inf
        self.cond = threading.Condition()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, server]
            for src, dst, gated in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, gated), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, gated: bool) -> None:
        try:
            while True:
                n = 1 << 16
                if gated:
                    with self.cond:
                        self.cond.wait_for(lambda: self.budget > 0 or self.closed)
                        if self.closed:
                            return
                        n = int(min(n, self.budget))
                data = src.recv(n)
                if not data:
                    return
                if gated:
                    with self.cond:
                        self.budget -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def hold(self) -> None:
        with self.cond:
            self.budget = 0

    def grant(self, n: float) -> None:
        with self.cond:
            self.budget += n
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


def _write_backwards(path: Path, data: bytes) -> None:
    """``data`` written last byte first, so that the upload is the close's (a file written in
    order from its start is uploaded while written: fs/streaming_upload.py)."""
    with open(path, "wb") as f:
        f.seek(len(data) - 1)
        f.write(data[-1:])
        f.seek(0)
        f.write(data[:-1])


def test_status_shows_an_upload_moving(
    fuse: None, runtime_dir: Path, nats_server: EmbeddedServer, tmp_path: Path, bucket_name: str
) -> None:
    relay = GatedRelay(nats_server.host, nats_server.port)
    # A long --timeout: the put's requests wait for the test's grants (and its objfs status).
    m = Mount(tmp_path / "mnt", relay.url, bucket_name, args=("--timeout", "120"),
              log_dir=tmp_path)  # fmt: skip
    try:
        m.start()
        sock = status.socket_path(m.mountpoint)
        data = os.urandom(8 << 20)
        relay.hold()  # from here the server gets only what the test grants
        writer = threading.Thread(target=_write_backwards, args=(m.mountpoint / "big.bin", data))
        writer.start()  # the write goes to the spool; the close uploads, through the relay

        def upload() -> dict[str, Any] | None:
            doc = status.query(sock)
            flying = doc["uploads"]["in_flight"]
            return flying[0] if flying else None

        first = wait_for(lambda: upload(), "the upload in flight")
        assert first is not None
        seen = [upload()]
        assert seen[0] is not None and seen[0]["path"] == "/big.bin"
        assert seen[0]["size"] == len(data) and seen[0]["done"] < len(data)
        text = objfs("status", str(m.mountpoint)).stdout
        assert re.search(r"^ {12}/big\.bin: [\d.]+ \w+ of 8\.0 MiB \(\d+%\), [\d.]+ \w+/s$", text,
                         re.M), text  # fmt: skip
        # Each grant lets more chunks reach the server, their acks let the put read on: the
        # status follows. Once the put has read the whole file, the rest is let through.
        while seen[-1] is not None and seen[-1]["done"] < len(data):
            relay.grant(1 << 20)
            last = seen[-1]["done"]

            def moved(last: int = last) -> bool:
                u = upload()
                if u is None or u["done"] > last:
                    seen.append(u)
                    return True
                return False

            wait_for(moved, f"progress beyond {last} bytes")
        partial = [u["done"] for u in seen if u is not None]
        assert len(set(partial)) >= 3 and partial == sorted(partial), partial
        relay.grant(math.inf)
        writer.join(120)
        assert not writer.is_alive()
        doc = status.query(sock)
        assert doc["uploads"]["done"] >= 1 and doc["uploads"]["bytes"] >= len(data)
        assert (m.mountpoint / "big.bin").read_bytes() == data
    finally:
        relay.grant(math.inf)
        m.stop(check=False)
        relay.close()


def test_status_shows_errors_retries_and_reconnects_across_a_server_restart(
    fuse: None, runtime_dir: Path, private_server: EmbeddedServer, tmp_path: Path,
    bucket_name: str,
) -> None:  # fmt: skip
    """The server stops: a close fails and its upload waits for a retry, both in the status
    (recent errors, uploads.retrying, DISCONNECTED); back on the same port, the mount counts
    the reconnect and the retry stores the file."""
    m = Mount(tmp_path / "mnt", private_server.url, bucket_name, args=("--timeout", "2"),
              log_dir=tmp_path).start()  # fmt: skip
    try:
        (m.mountpoint / "before.bin").write_bytes(b"stored")
        doc = status_json(m.mountpoint)
        assert doc["errors"] == [] and doc["server"]["reconnects"] == 0, doc
        private_server.stop()
        failing_close(m.mountpoint / "lost.bin", b"x" * 5000)
        doc = status_json(m.mountpoint)
        failed = [e for e in doc["errors"] if "upload of /lost.bin failed" in e]
        assert failed and re.match(r"\d\d:\d\d:\d\d error: ", failed[0]), doc["errors"]
        [retry] = doc["uploads"]["retrying"]
        assert retry["path"] == "/lost.bin" and retry["size"] == 5000, retry
        assert retry["attempts"] >= 1 and retry["last_error"], retry
        assert doc["uploads"]["failed"] >= 1
        wait_for(lambda: not status_json(m.mountpoint)["server"]["connected"], "DISCONNECTED")
        lines = objfs("status", str(m.mountpoint)).stdout.splitlines()
        assert any(re.fullmatch(r"  server +\S+ DISCONNECTED, 0 reconnect\(s\)", x)
                   for x in lines), lines  # fmt: skip
        assert any(re.fullmatch(r"  errors +\S+ (error|warning): .+", x) for x in lines), lines
        retry_line = r" +/lost\.bin: 4\.9 KiB to retry after \d+ failed attempt\(s\): .+"
        assert any(re.fullmatch(retry_line, x) for x in lines), lines
        private_server.start()  # the same port and store

        def back() -> bool:
            server = status_json(m.mountpoint)["server"]
            return bool(server["connected"]) and server["reconnects"] >= 1

        wait_for(back, "the reconnect counted")
        wait_for(lambda: status_json(m.mountpoint)["uploads"]["retrying"] == [], "the retry")
        assert (m.mountpoint / "lost.bin").read_bytes() == b"x" * 5000
        text = objfs("status", str(m.mountpoint)).stdout
        assert re.search(r"^  server +\S+ connected, [1-9]\d* reconnect\(s\)$", text, re.M), text
    finally:
        m.stop()


def test_status_lists_what_a_dead_mount_left_in_the_spool(
    fuse: None, runtime_dir: Path, nats_server: EmbeddedServer, tmp_path: Path,
    bucket_name: str,
) -> None:  # fmt: skip
    """A mount killed with a file open for writing leaves it in its spool directory; the
    next mount of the same spool base keeps it there (not stored: never closed) and its
    status lists the directory, and not the spool directory of another mount still running
    beside it."""
    def mount_at(name: str) -> Mount:
        return Mount(tmp_path / name, nats_server.url, bucket_name, log_dir=tmp_path)

    spool = tmp_path / "spool"  # Mount's default --spool-dir: shared by all three
    dead = mount_at("dead").start()
    try:
        unfinished = open(dead.mountpoint / "unfinished.bin", "wb")  # noqa: SIM115
        unfinished.write(b"half")
        unfinished.flush()
        kill(dead)
    finally:
        dead.stop(check=False)
    with contextlib.suppress(OSError):
        unfinished.close()
    [left] = spool_dirs(spool)
    m = mount_at("mnt").start()
    beside = mount_at("beside")
    try:
        wait_for(lambda: "kept, not stored" in m.stderr(), "the unfinished file kept")
        beside.start()
        wait_for(lambda: "kept, not stored" in beside.stderr(), "the unfinished file kept again")
        assert len(spool_dirs(spool)) == 3  # the dead mount's, and one of each live mount
        expected = [{"dir": str(left), "files": 1}]
        for live in (m, beside):
            spool_doc = status_json(live.mountpoint)["spool"]
            assert Path(spool_doc["dir"]).parent == spool, spool_doc
            assert spool_doc["leftovers"] == expected, spool_doc
        text = objfs("status", str(m.mountpoint)).stdout
        assert f"            left by a dead mount: {left} (1 file(s))\n" in text, text
    finally:
        beside.stop()
        m.stop()
