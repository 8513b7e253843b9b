"""Going to the background for ``objfs mount --daemon``, with a readiness report to the parent.

The fork must happen before any thread (the asyncio thread, trio's thread pool) or child
process (the embedded nats-server) exists: a forked child keeps only the forking thread, and a
server started by the parent would belong to the wrong process. So the parent only parses and
checks options, forks, and waits on a pipe: the child mounts and then writes one line, ``ok``
once the mount answers, or the one-line error. The parent exits 0 or prints that error and
exits 1, which is what fstab (``mount -a``) and ``systemd Type=forking`` need.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_OK = "ok"


class Reporter:
    """The child's end of the readiness pipe; reports once, later calls do nothing."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, (line.replace("\n", " ") + "\n").encode())
        except OSError:
            pass  # the parent is gone (killed): nobody to tell
        finally:
            os.close(fd)

    def ready(self) -> None:
        self._send(_OK)

    def failed(self, message: str) -> None:
        self._send(message)


def daemonize(log_file: Path) -> Reporter | int:
    """Fork. In the child: return a Reporter. In the parent: return the exit code to use.

    The child starts a new session (no controlling terminal, so a closed terminal does not
    send it SIGHUP), moves to ``/`` (so it does not keep a directory busy) and sends stdio to
    ``log_file``, where libfuse's and nats-server's own messages land too.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return _parent(read_fd, log_file)
    os.close(read_fd)
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return Reporter(write_fd)


def _parent(read_fd: int, log_file: Path) -> int:
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while data := pipe.read(4096):
            chunks.append(data)
    line = b"".join(chunks).decode(errors="replace").strip()
    if line == _OK:
        return 0
    if not line:
        line = f"the mount process exited before mounting (see {log_file})"
    print(f"objfs: {line}", file=sys.stderr)
    return 1
