"""Faults of a real nats-server for durability tests: a kill without a clean shutdown."""

from __future__ import annotations

import os
import signal
import time

from objfs.server import EmbeddedServer


def kill(srv: EmbeddedServer) -> None:
    """SIGKILL the server's process (no clean shutdown) and release its store's lock."""
    proc = srv.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    srv.stop()  # the process is gone already: this only releases the lock


def kill_and_restart(srv: EmbeddedServer, outage: float) -> None:
    """``kill``, wait ``outage`` seconds (the outage the test plays), start it again on the
    same port and store. Blocking: from asyncio, run it in an executor."""
    kill(srv)
    time.sleep(outage)
    srv.start()
