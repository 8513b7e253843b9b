"""systemd notifications (objfs.sd_notify) received on a socket the test binds."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from objfs.sd_notify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        s.settimeout(30)
        yield s, path


def test_ready_status_stopping(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "OTHER": "kept"}
    n = Notifier(env)
    assert n.enabled and env == {"OTHER": "kept"}  # children cannot notify for us
    n.ready("mounted bucket b at /mnt/x")
    assert sock.recv(4096) == b"READY=1\nSTATUS=mounted bucket b at /mnt/x"
    n.status("2 uploads pending,\n3 MiB")
    assert sock.recv(4096) == b"STATUS=2 uploads pending, 3 MiB"
    n.stopping("finishing 1 upload")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=finishing 1 upload"


def test_abstract_socket() -> None:
    name = f"objfs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(30)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready("ok")
        assert s.recv(4096) == b"READY=1\nSTATUS=ok"


def test_without_a_service_manager_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    n.ready("ok")  # no socket: nothing to do, no error


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready("ok")


def test_watchdog_interval_and_pid() -> None:
    me = str(os.getpid())
    n = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": me})
    assert n.watchdog_interval == 2.0
    # Meant for another process (systemd names the main PID): not ours to ping.
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "junk"}).watchdog_interval is None


async def test_watchdog_pings(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})  # a ping every 10 ms
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.watchdog)
        for _ in range(3):
            assert await trio.to_thread.run_sync(sock.recv, 4096) == b"WATCHDOG=1"
        nursery.cancel_scope.cancel()
