"""Real mounts for tests: ``python -m objfs mount`` as a child process, always cleaned up.

The mount runs in the foreground as a child of the test (as a user would run it), so the test
sees exactly what the command does: its exit code, its stderr, its behaviour on signals. A
mount is ready when it appears in /proc/mounts and answers a stat; if the child dies first,
starting fails with its stderr. Stopping unmounts with ``fusermount3 -u`` (retrying while the
mount is busy), expects the child to exit 0, and falls back to killing the child by PID and a
lazy unmount so that no test leaves a mount behind.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
UNMOUNT_BUSY = 30.0
"""Start, exit and busy-unmount bounds: each only catches a mount that never gets there (a
loaded 2-core machine starts Python, connects and answers a stat many times slower)."""


def mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point now (per /proc/mounts, octal escapes undone)."""
    want = os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 1 and _unescape(fields[1]) == want:
                return True
    return False


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return text.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def objfs_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "objfs", *args]


class Mount:
    """One ``objfs mount`` child process and its mount point."""

    def __init__(
        self,
        mountpoint: Path,
        server_url: str,
        bucket: str | None,
        *,
        args: tuple[str, ...] = (),
        log_dir: Path,
        create: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        """``server_url`` empty: no ``--server`` (a context or the environment names it);
        ``env``: the child's environment (default: the test's)."""
        self.mountpoint = mountpoint
        self.env = env
        self.server_url = server_url
        self.bucket = bucket
        self.args = args
        self.create = create
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.stderr_path = log_dir / f"objfs-{mountpoint.name}-0.stderr"
        self.runs: list[Path] = []
        """stderr files of every start of this mount (a remount adds one)."""

    # -- lifecycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        # -v: the mount's INFO log lands in the failure report of a test.
        cmd = objfs_command("mount", "-v", "--timeout", "10")
        if self.server_url:
            cmd += ["--server", self.server_url]
        if not any(a in ("--spool-dir", "--data-dir") for a in self.args):
            cmd += ["--spool-dir", str(self.log_dir / "spool")]  # not the user's DATA_DIR
        if self.bucket is not None:
            cmd += ["--bucket", self.bucket]
            if self.create:
                cmd.append("--create")
        return [*cmd, *self.args, str(self.mountpoint)]

    def start(self) -> Mount:
        try:
            self.mountpoint.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if e.errno != errno.ENOTCONN:  # a dead mount point: there, objfs clears it
                raise
        self.stderr_path = self.log_dir / f"objfs-{self.mountpoint.name}-{len(self.runs)}.stderr"
        self.runs.append(self.stderr_path)
        self.returncode = None
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=REPO,
                env=self.env,
            )
        try:
            self._wait_ready()
        except BaseException:
            # Interrupted (Ctrl-C, or the TERM that scripts/test --loaded turns into one) or
            # failed: the caller gets no Mount to stop, so no child and no mount may outlive
            # this. A child still starting is told to stop (objfs abandons its start-up on
            # SIGTERM): stop() alone would wait for it to exit by itself.
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            self.stop(check=False)
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not mounted(self.mountpoint):
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise RuntimeError(
                    f"objfs mount exited with {self.returncode} before mounting:\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                self.stop(check=False)
                raise RuntimeError(
                    f"objfs mount did not mount in {START_TIMEOUT}s:\n{self.stderr()}"
                )
            time.sleep(0.02)
        # A stat answered by the mount: start-up is complete. In a child, so that a mount that
        # never answers fails this start instead of hanging the test run.
        try:
            subprocess.run(["stat", str(self.mountpoint)], capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            self.stop(check=False)
            raise RuntimeError(f"the mount does not answer a stat:\n{self.stderr()}") from None

    def stderr(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.runs if p.exists()
        )

    def unmount(self) -> None:
        """``fusermount3 -u``, retried while something still uses the mount."""
        deadline = time.monotonic() + UNMOUNT_BUSY
        while mounted(self.mountpoint):
            r = subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the child to exit; kill it by PID if it does not (and fail later)."""
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.returncode = -9
        return self.returncode

    def stop(self, *, check: bool = True) -> None:
        """Unmount and wait for a clean exit (0). Always leaves no mount and no process."""
        if self.proc is None:
            if mounted(self.mountpoint):  # the process is gone but left its mount behind
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], check=False)
            return
        try:
            if self.proc.poll() is None:
                self.unmount()
            code = self.wait()
        finally:
            self.proc = None
            if mounted(self.mountpoint):
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], check=False)
        if check and code != 0:
            raise AssertionError(f"objfs mount exited with {code}:\n{self.stderr()}")

    def remount(self) -> Mount:
        """Unmount (checking a clean exit) and mount the same bucket again."""
        self.stop()
        return self.start()

    def signal(self, sig: int) -> int:
        """Send ``sig`` to the mount process and return its exit code once it has ended."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.wait()
        finally:
            self.proc = None


class MountFactory(Protocol):
    """The ``mounts`` fixture: ``mounts(*objfs_args, bucket=..., name=..., create=...)``."""

    def __call__(
        self, *args: str, bucket: str | None = ..., name: str | None = None, create: bool = True
    ) -> Mount: ...
