"""Going to the background for ``objfs mount --daemon``, with a readiness report to the parent.

The fork must happen before any thread (the asyncio thread, trio's thread pool) or child
process (the embedded nats-server) exists: a forked child keeps only the forking thread, and a
server started by the parent would belong to the wrong process. So the parent only parses and
checks options, forks, and waits on a pipe: the child mounts and then writes ``ok`` and the
start line (what is mounted where, via which server) once the mount answers, or the one-line
error. The parent prints that line and exits 0, or prints the error and exits 1, which is what
fstab (``mount -a``) and mount(8) helpers need.

``Reporter`` is also where readiness reaches systemd (``sd_notify``): the same moment, the same
line, whether or not the mount went to the background.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from objfs.log import console
from objfs.sd_notify import Notifier

_OK = "ok"


class Reporter:
    """Readiness, told once: to the parent through the pipe of a daemonized mount (else on
    stderr), and to systemd when it started objfs. Later calls do nothing."""

    def __init__(self, fd: int | None, notifier: Notifier | None = None) -> None:
        self._fd = fd
        self._told = False
        self.notifier = notifier or Notifier({})

    def _send(self, *lines: str) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.write(fd, "".join(line.replace("\n", " ") + "\n" for line in lines).encode())
        except OSError:
            pass  # the parent is gone (killed): nobody to tell
        finally:
            os.close(fd)

    def ready(self, line: str) -> None:
        """The mount answers; ``line`` says what is mounted where, via which server."""
        if self._told:
            return
        self._told = True
        if self._fd is None:
            console(line)
        self._send(_OK, line)
        self.notifier.ready(line)

    def failed(self, message: str) -> None:
        if self._told:
            return
        self._told = True
        self._send(message)
        self.notifier.status(f"failed: {message}")

    def stopping(self, status: str) -> None:
        self.notifier.stopping(status)


def daemonize(log_file: Path, notifier: Notifier | None = None) -> Reporter | int:
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
    return Reporter(write_fd, notifier)


def _parent(read_fd: int, log_file: Path) -> int:
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while data := pipe.read(4096):
            chunks.append(data)
    lines = b"".join(chunks).decode(errors="replace").strip().splitlines() or [""]
    if lines[0] == _OK:
        for line in lines[1:]:
            console(line)
        return 0
    line = lines[0] or f"the mount process exited before mounting (see {log_file})"
    console(line, logging.ERROR)
    return 1
