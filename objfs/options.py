"""Mount options: everything ``objfs mount`` can be told, as one plain value.

The CLI builds it from arguments and the environment; the mount runner and the filesystem core
read it. Keeping it a dataclass with defaults lets tests build a mount without argparse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from objfs.server import DEFAULT_DATA_DIR
from objfs.store.api import DEFAULT_CHUNK_SIZE
from objfs.store.names import MAX_NAME_BYTES


class ClientKwargs(TypedDict):
    """Keyword arguments of ``objfs.store.nats_store.connect``, all but the servers and the
    client name: typed so that a call spelling ``**kwargs`` is still checked against it."""

    timeout: float
    user: str | None
    password: str | None
    token: str | None
    creds: str | None
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None


@dataclass(slots=True)
class ConnectOptions:
    """How to reach NATS. ``servers`` empty: start the embedded server."""

    servers: list[str] = field(default_factory=list)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    timeout: float = 10.0
    """Seconds a store request may take before the filesystem answers EIO/ETIMEDOUT."""
    data_dir: Path = DEFAULT_DATA_DIR
    """Where the embedded server keeps its store and log."""

    def client_kwargs(self) -> ClientKwargs:
        """How to call ``objfs.store.nats_store.connect`` (all but the servers)."""
        return {
            "timeout": self.timeout,
            "user": self.user,
            "password": self.password,
            "token": self.token,
            "creds": self.creds,
            "tls_ca": self.tls_ca,
            "tls_cert": self.tls_cert,
            "tls_key": self.tls_key,
        }


@dataclass(slots=True)
class MountOptions:
    mountpoint: Path
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    bucket: str | None = None
    """Mount this bucket at the root; None shows every bucket as a root directory."""
    create: bool = False
    read_only: bool = False
    allow_other: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    """Defaults for objects that carry no stored attributes (written by other clients)."""
    cache_size: int = 256 * 1024 * 1024
    """Chunk cache, bytes."""
    attr_timeout: float = 1.0
    """Seconds the kernel may trust names and attributes (the watcher invalidates changes)."""
    spool_dir: Path | None = None
    """Where write spool files live; None: a private directory under the system temp dir."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_name_bytes: int = MAX_NAME_BYTES
    """Longest object name (a path inside the bucket); the mount sets it from the server
    it reached (``store.names.safe_name_limit``)."""
    fuse_options: list[str] = field(default_factory=list)
    daemon: bool = False
    debug: bool = False
