"""``objfs mount`` (and ``objfs seal``) against secured servers, as an operator runs them.

Real mounts as child processes: through a nats CLI context chosen by ``NATS_CONTEXT``, with
``NATS_USER``/``NATS_PASSWORD``, over mutual TLS with the reads served by the lean reader
(seen from the server's own connection list, not from objfs), with ``--server`` repeated and
comma-separated, through a JetStream imported from another account (API, event and inbox
prefixes); and the failures a user must understand at once: wrong credentials, a refused
port, a missing credentials file from ``NATS_CREDS``; a credentials file, nkey seed or token
file other users can read is named in a warning. Every stderr of these runs is searched for
the secrets they used; the mounts with a context, a password file, a credentials file, an
nkey seed and a token file log everything (``--debug``) to a file, and that file, their
command line and ``objfs status`` (text and JSON) are searched too.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest
from helpers import data, wait_for
from mounting import Mount, objfs_command
from secure_nats import (
    ImportedJetStream,
    ServerWith,
    closed_port,
    make_operator,
    make_pki,
    new_nkey,
)

from objfs.server import free_port

PASSWORD = "pa55-w0rd-xyz"
TOKEN = "t0k3n-abc-123"


def assert_no_secrets(text: str, *secrets: str) -> None:
    for secret in (PASSWORD, TOKEN, *secrets):
        assert secret not in text, f"secret {secret[:4]}... in:\n{text}"


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A status socket directory of this test's own (its mounts inherit it): ``objfs status``
    without a mount point asks this test's mounts only."""
    d = tmp_path / "run"
    monkeypatch.setenv("OBJFS_RUNTIME_DIR", str(d))
    return d


LOGGED = ("--debug", "--log-file")
"""How the auth mounts log: everything objfs and nats-py log, to a file (``log_file``)."""


def log_file(m: Mount) -> Path:
    return m.log_dir / f"{m.mountpoint.name}.log"


def logged(m: Mount) -> tuple[str, ...]:
    return (*LOGGED, str(log_file(m)))


def assert_shows_no_secrets(m: Mount, *secrets: str) -> None:
    """Nothing the running mount ``m`` shows holds a secret: its stderr, its log file, its
    command line (/proc/PID/cmdline: what ps shows every user), and ``objfs status`` of all
    mounts and of this one, text and ``--json``. ``assert_logged_no_secrets`` checks what is
    logged until the end."""
    assert m.proc is not None
    shown = [m.stderr(), log_file(m).read_text()]
    shown.append(Path(f"/proc/{m.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    for args in ((), ("--json",)):
        for where in ((), (str(m.mountpoint),)):
            r = objfs("status", *args, *where)
            assert r.returncode == 0 and str(m.mountpoint) in r.stdout, (args, where, r)
            shown += [r.stdout, r.stderr]
    assert "mounted bucket" in shown[1], shown[1]  # the log file is the mount's, not empty
    assert_no_secrets("\n".join(shown), *secrets)


def assert_logged_no_secrets(m: Mount, *secrets: str) -> None:
    """After the mount ended: its stderr and whole log file."""
    assert "unmounted" in log_file(m).read_text()
    assert_no_secrets(m.stderr() + log_file(m).read_text(), *secrets)


def objfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        objfs_command(*args), capture_output=True, text=True, timeout=180, env=env
    )


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("objfs")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def nats_py(url: str, fn: Any, **connect: Any) -> Any:
    """Run ``fn(nc)`` on a fresh nats-py connection (a client that is not objfs)."""

    async def main() -> Any:
        nc = await nats.connect(url, connect_timeout=10, max_reconnect_attempts=0, **connect)
        try:
            return await fn(nc)
        finally:
            await nc.close()

    return asyncio.run(main())


def test_context_mount_and_seal(
    fuse: None, server_with: ServerWith, tmp_path: Path, bucket_name: str, runtime_dir: Path
) -> None:
    """NATS_CONTEXT names a context file: its URL and credentials are used (no --server, and
    no embedded server); ``objfs seal`` takes the same context."""
    srv = server_with(f'authorization {{ user: "ops", password: "{PASSWORD}" }}')
    config = tmp_path / "config"
    ctx = config / "nats" / "context" / "prod.json"
    ctx.parent.mkdir(parents=True)
    ctx.write_text(json.dumps({"url": srv.url, "user": "ops", "password": PASSWORD}))
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "NATS_CONTEXT": "prod"}
    m = Mount(tmp_path / "mnt", "", bucket_name, log_dir=tmp_path, env=env)
    m.args = logged(m)
    m.start()
    try:
        content = data(300 * 1024, 7)
        (m.mountpoint / "f.bin").write_bytes(content)
        assert (m.mountpoint / "f.bin").read_bytes() == content
        assert_shows_no_secrets(m)
    finally:
        m.stop()
    assert f"via {srv.url}" in m.stderr(), m.stderr()
    assert_logged_no_secrets(m)

    async def get(nc: Any) -> bytes:
        store = await nc.jetstream().object_store(bucket_name)
        return bytes((await store.get("f.bin")).data)

    assert nats_py(srv.url, get, user="ops", password=PASSWORD) == content
    r = objfs("seal", bucket_name, "--yes", env=env)
    assert r.returncode == 0, r.stderr

    async def sealed(nc: Any) -> bool:
        msg = await nc.request(f"$JS.API.STREAM.INFO.OBJ_{bucket_name}", b"", timeout=10)
        return bool(json.loads(msg.data)["config"].get("sealed"))

    assert nats_py(srv.url, sealed, user="ops", password=PASSWORD)


def test_missing_context_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "NATS_CONTEXT": "nope"}
    line = one_error_line(objfs("mount", str(tmp_path / "mnt"), env=env))
    assert f"{tmp_path}/nats/context/nope.json" in line, line


def test_tls_mount_reads_through_the_lean_reader(
    fuse: None, server_with: ServerWith, tmp_path: Path, bucket_name: str
) -> None:
    pki = make_pki(tmp_path / "pki")
    monitor = free_port()
    srv = server_with(pki.server_tls(verify=True) + f"\nhttp: 127.0.0.1:{monitor}")
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    content = data(5 << 20, 3)

    async def put(nc: Any) -> None:
        js = nc.jetstream()
        store = await js.create_object_store(bucket_name)
        await store.put("big.bin", content)

    nats_py(srv.url, put, tls=ctx)
    tls = ("--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert))
    m = Mount(
        tmp_path / "mnt", srv.url, bucket_name, log_dir=tmp_path, create=False,
        args=(*tls, "--tls-key", str(pki.client_key)),
    ).start()  # fmt: skip
    try:
        assert (m.mountpoint / "big.bin").read_bytes() == content
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/connz", timeout=30) as r:
            conns = json.loads(r.read())["connections"]
        lean = [c for c in conns if c.get("name") == "objfs-bulk"]
        assert lean and all(c.get("tls_version") for c in lean), conns
    finally:
        m.stop()


def test_auth_failures_fail_at_once_in_words(server_with: ServerWith, tmp_path: Path) -> None:
    tok = server_with(f'authorization {{ token: "{TOKEN}" }}')
    pw = server_with(f'authorization {{ user: "ops", password: "{PASSWORD}" }}')
    mp = tmp_path / "mnt"
    mp.mkdir()
    timeout = 60  # a connect that retried would take all of it
    for args, env in (
        (["--server", tok.url, "--token", "wr0ng-t0ken"], {}),
        (["--server", tok.url], {}),
        (["--server", pw.url, "--user", "ops", "--password", "wr0ng-pa55"], {}),
        (["--server", pw.url], {"NATS_USER": "ops", "NATS_PASSWORD": "wr0ng-pa55"}),
    ):
        start = time.monotonic()
        r = objfs("mount", *args, "--timeout", str(timeout), str(mp), env={**os.environ, **env})
        took = time.monotonic() - start
        line = one_error_line(r)
        assert "authorization violation" in line, line
        assert took < timeout, f"took {took:.0f}s"
        assert_no_secrets(r.stderr, "wr0ng-t0ken", "wr0ng-pa55")


def test_refused_port_fails_within_the_timeout(tmp_path: Path) -> None:
    mp = tmp_path / "mnt"
    mp.mkdir()
    url = f"nats://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    line = one_error_line(objfs("mount", "--server", url, "--timeout", "10", str(mp)))
    assert "connection refused" in line and url in line, line
    # Python start-up on a loaded machine is not the connect's: a generous margin over 10 s,
    # far below the 21.6 s (2 x timeout + 1) it took before.
    assert time.monotonic() - start < 10 + 10


def test_nats_environment(
    fuse: None, server_with: ServerWith, tmp_path: Path, bucket_name: str
) -> None:
    """NATS_USER/NATS_PASSWORD are used; a missing NATS_CREDS file is named."""
    srv = server_with(f'authorization {{ user: "ops", password: "{PASSWORD}" }}')
    env = {**os.environ, "NATS_USER": "ops", "NATS_PASSWORD": PASSWORD}
    m = Mount(tmp_path / "mnt", srv.url, bucket_name, log_dir=tmp_path, env=env).start()
    try:
        (m.mountpoint / "x").write_bytes(b"env auth\n")
        assert (m.mountpoint / "x").read_bytes() == b"env auth\n"
    finally:
        m.stop()
    assert_no_secrets(m.stderr())
    missing = tmp_path / "gone.creds"
    r = objfs(
        "mount", "--server", srv.url, str(tmp_path / "mnt"),
        env={**os.environ, "NATS_CREDS": str(missing)},
    )  # fmt: skip
    line = one_error_line(r)
    assert f"NATS_CREDS {missing}" in line and "No such file" in line, line


def test_servers_repeated_and_comma_lists(
    fuse: None, server_with: ServerWith, tmp_path: Path, bucket_name: str
) -> None:
    srv = server_with("")
    dead1, dead2 = (f"nats://127.0.0.1:{closed_port()}" for _ in range(2))
    # The good server comes first: a mount that kept only the last --server would fail.
    m = Mount(
        tmp_path / "mnt", srv.url, bucket_name, log_dir=tmp_path,
        args=("--server", f"{dead1},{dead2}"),
    ).start()  # fmt: skip
    try:
        (m.mountpoint / "y").write_bytes(b"y")
    finally:
        m.stop()
    assert f"via {srv.url}" in m.stderr(), m.stderr()


def test_password_file_instead_of_argv(
    fuse: None, server_with: ServerWith, tmp_path: Path, bucket_name: str, runtime_dir: Path
) -> None:
    """The password can stay out of the process list: --password-file."""
    srv = server_with(f'authorization {{ user: "ops", password: "{PASSWORD}" }}')
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    m = Mount(tmp_path / "mnt", srv.url, bucket_name, log_dir=tmp_path)
    m.args = ("--user", "ops", "--password-file", str(pw), *logged(m))
    m.start()
    try:
        (m.mountpoint / "z").write_bytes(b"z")
        assert_shows_no_secrets(m)
    finally:
        m.stop()
    assert "warning" not in m.stderr(), m.stderr()  # 0600: nothing to warn about
    assert_logged_no_secrets(m)


@pytest.mark.parametrize("kind", ["creds", "nkey", "token-file"])
def test_secret_file_readable_by_others_warns_and_mounts(
    fuse: None, server_with: ServerWith, tmp_path: Path, bucket_name: str, runtime_dir: Path,
    kind: str,
) -> None:  # fmt: skip
    """A credentials file, an nkey seed or a token file that other users can read (0644):
    the mount says so, naming the file and the fix, and mounts all the same; the secret in
    it is shown nowhere."""
    if kind == "creds":
        op = make_operator(tmp_path / "op")
        srv, secret, path = server_with(op.config), op.user.seed.decode(), op.creds
    elif kind == "nkey":
        user = new_nkey()
        srv = server_with(f'authorization {{ users: [ {{ nkey: "{user.public}" }} ] }}')
        secret, path = user.seed.decode(), user.write(tmp_path / "user.nk")
    else:
        srv, secret = server_with(f'authorization {{ token: "{TOKEN}" }}'), TOKEN
        path = tmp_path / "token"
        path.write_text(TOKEN + "\n")
    path.chmod(0o644)
    m = Mount(tmp_path / "mnt", srv.url, bucket_name, log_dir=tmp_path)
    m.args = (f"--{kind}", str(path), *logged(m))
    m.start()
    try:
        (m.mountpoint / "k").write_bytes(b"authenticated")
        assert (m.mountpoint / "k").read_bytes() == b"authenticated"
        assert_shows_no_secrets(m, secret)
    finally:
        m.stop()
    warning = (
        f"objfs: warning: --{kind} {path} holds a secret and is readable by other users "
        f"(mode 644): chmod 600 {path}\n"
    )
    assert warning in m.stderr(), m.stderr()
    assert_logged_no_secrets(m, secret)


def read_in_small_steps(path: Path) -> bytes:
    """The file read from its start, 128 KiB at a time, without the kernel's readahead (so
    the mount sees a reader going on from the start, which it streams: a push consumer)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        out = bytearray()
        while piece := os.read(fd, 128 << 10):
            out += piece
        return bytes(out)
    finally:
        os.close(fd)


def test_mount_through_a_jetstream_imported_from_another_account(
    fuse: None, server_with: ServerWith, tmp_path: Path, bucket_name: str
) -> None:
    """A user of account APP, which has no JetStream and imports account JS's under
    prefixes (``ImportedJetStream``), mounts with ``--js-api-prefix``, ``--js-event-prefix``
    and ``--inbox-prefix``: the mount creates its bucket, sees files a client of account JS
    puts there (its watch: the kernel's cached "no such file" would last 60 s), reads them
    back (5 MiB by batch direct gets, 17 MiB streamed by a push consumer, both on one lean
    connection: one whose read failed would have been replaced), and what it writes is
    account JS's, byte for byte. (The bucket-list watch's event prefix is the store test's:
    a mount re-lists its buckets every 30 s, which no bound here could tell apart.)"""
    xa = ImportedJetStream()
    monitor = free_port()
    srv = server_with(xa.config + f"\nhttp: 127.0.0.1:{monitor}")
    stream = f"OBJ_{bucket_name}"
    mid, big, mine = data(5 << 20, 21), data(17 << 20, 22), data(300 * 1024, 23)
    app = {"user": xa.app_user, "password": xa.app_password, "inbox_prefix": xa.inbox_prefix}
    owner = {"user": xa.js_user, "password": xa.js_password}
    m = Mount(
        tmp_path / "mnt", srv.url, bucket_name, log_dir=tmp_path,
        args=(*xa.mount_args(), "--attr-timeout", "60"),
    ).start()  # fmt: skip
    try:

        async def no_plain_jetstream(nc: Any) -> None:
            # Not vacuous: the bucket the mount created is in account JS, reached by APP's
            # user under the imported prefix only.
            info = await nc.request(f"{xa.api_prefix}.STREAM.INFO.{stream}", b"", timeout=10)
            assert json.loads(info.data)["config"]["name"] == stream, info.data
            try:
                await nc.request(f"$JS.API.DIRECT.GET.{stream}", b'{"seq": 1}', timeout=10)
            except nats.errors.NoRespondersError:
                return
            raise AssertionError("plain $JS.API answered APP's user")

        nats_py(srv.url, no_plain_jetstream, **app)
        assert not (m.mountpoint / "mid.bin").exists()  # the kernel now caches the miss

        async def put(nc: Any) -> None:
            store = await nc.jetstream().object_store(bucket_name)
            await store.put("mid.bin", mid)
            await store.put("big.bin", big)

        nats_py(srv.url, put, **owner)
        # Within half the kernel's 60 s hold of the miss: only the watch can show it.
        wait_for(lambda: (m.mountpoint / "mid.bin").exists(), "the watch to show mid.bin", 30)
        wait_for(lambda: (m.mountpoint / "big.bin").exists(), "the watch to show big.bin", 30)
        assert (m.mountpoint / "mid.bin").read_bytes() == mid
        assert read_in_small_steps(m.mountpoint / "big.bin") == big
        (m.mountpoint / "mine.bin").write_bytes(mine)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{monitor}/connz?state=all&auth=true", timeout=30
        ) as r:
            conns = json.loads(r.read())["connections"]
        lean = [c for c in conns if c.get("name") == "objfs-bulk"]
        # One lean connection, still open (one that failed would have been replaced), in
        # account APP, and the chunks came through it.
        assert len(lean) == 1 and not lean[0].get("stop"), lean
        assert lean[0].get("account") == "APP", lean
        assert lean[0]["out_bytes"] > len(mid) + len(big), lean
    finally:
        m.stop()
    assert_no_secrets(m.stderr(), xa.app_password)

    async def get(nc: Any) -> bytes:
        store = await nc.jetstream().object_store(bucket_name)
        return bytes((await store.get("mine.bin")).data)

    assert nats_py(srv.url, get, **owner) == mine
