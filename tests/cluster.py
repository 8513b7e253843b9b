"""A three-node nats-server cluster on loopback for replication tests.

Each node is an ``EmbeddedServer`` with its own store directory, a client port and a route
port picked up front (so a node restarts on the same ports), and routes to the other two.
``start`` returns once JetStream's meta leader is elected (``$JS.API.INFO`` answers on every
node); ``stop`` stops every node, whatever state the test left them in.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from objfs.server import EmbeddedServer, free_port

READY_TIMEOUT = 120.0
"""Until the cluster has a meta leader (a loaded 2-core machine elects slowly)."""


class Cluster:
    def __init__(self, base: Path, size: int = 3, name: str = "objfs-test") -> None:
        routes = [free_port() for _ in range(size)]
        self.nodes: list[EmbeddedServer] = []
        for i in range(size):
            others = ", ".join(
                f"nats-route://127.0.0.1:{p}" for j, p in enumerate(routes) if j != i
            )
            block = (
                f'cluster {{ name: "{name}", listen: "127.0.0.1:{routes[i]}", routes: [{others}] }}'
            )
            self.nodes.append(
                EmbeddedServer(
                    base / f"n{i}",
                    port=free_port(),
                    server_name=f"n{i}",
                    extra_config=block,
                )
            )

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> Cluster:
        try:
            for n in self.nodes:
                n.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, nodes: list[EmbeddedServer] | None = None) -> None:
        """Until every node (of ``nodes``) answers ``$JS.API.INFO`` (a meta leader exists)."""
        deadline = time.monotonic() + READY_TIMEOUT
        for n in nodes or self.nodes:
            while not _js_info_ok(n):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no JetStream meta leader:\n{n.log_tail()}")
                time.sleep(0.1)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def _js_info_ok(node: EmbeddedServer) -> bool:
    """One ``$JS.API.INFO`` request over a raw socket: True if it answers without an error."""
    try:
        with socket.create_connection((node.host, node.port), timeout=2) as s:
            f = s.makefile("rb")
            f.readline()  # INFO
            s.sendall(
                b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n'
                b"SUB _INBOX.ready 1\r\nPUB $JS.API.INFO _INBOX.ready 0\r\n\r\nPING\r\n"
            )
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                line = f.readline()
                if not line:
                    return False
                if line.startswith((b"MSG", b"HMSG")):
                    size = int(line.split()[-1])
                    body = f.read(size + 2)[:size]
                    if line.startswith(b"HMSG"):
                        return False  # a status (503 no responders): not ready
                    return "error" not in json.loads(body or b"{}")
        return False
    except (OSError, ValueError):
        return False
