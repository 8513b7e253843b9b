"""Mount options: everything ``objfs mount`` can be told, as one plain value.

The CLI builds it from arguments and the environment; the mount runner and the filesystem core
read it. Keeping it a dataclass with defaults lets tests build a mount without argparse.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from objfs.server import DEFAULT_DATA_DIR
from objfs.store.api import DEFAULT_CHUNK_SIZE
from objfs.store.names import MAX_NAME_BYTES
from objfs.store.nats_protocol import API as DEFAULT_API_PREFIX
from objfs.store.nats_protocol import EVENTS as DEFAULT_EVENT_PREFIX

DEFAULT_INBOX_PREFIX = "_INBOX"
"""Where replies come back when no inbox prefix is named."""

SECRETS = ("password", "token")
"""Fields never shown (repr, logs, messages); seeds stay in their files and are never read
into this object."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``5s``, ``500ms``, ``2m``, ``1h`` or plain seconds (``1.5``) -> seconds.

    ValueError names the text and the forms accepted."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (examples: 10, 5s, 500ms, 2m)")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]


def redact(url: str) -> str:
    """``url`` without the user, password or token it may carry (for logs and messages)."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


@dataclass(slots=True)
class ConnectOptions:
    """How to reach NATS: one value for nats-py's connection and for the lean reader's
    (``objfs.store.nats_auth`` turns it into what each of them needs).

    ``servers`` empty: start the embedded server (never when a ``context`` was chosen: the
    CLI then fills the context's URL or the NATS default). Paths are absolute (a daemonized
    mount moves to /). The repr shows which secrets are set, never their values.
    """

    servers: list[str] = field(default_factory=list)
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    """A credentials file (user JWT and nkey seed, as made by nsc)."""
    nkey: str | None = None
    """A file holding an nkey user seed (``SU...``)."""
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_first: bool = False
    """TLS handshake before the server's INFO (server: ``handshake_first``)."""
    js_domain: str | None = None
    js_api_prefix: str | None = None
    js_event_prefix: str | None = None
    inbox_prefix: str | None = None
    context: str | None = None
    """The nats CLI context these came from (for messages), if any."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where options came from, for messages (``--creds``, ``NATS_CREDS``, ``context X``)."""
    timeout: float = 10.0
    """Seconds a store request may take before the filesystem answers EIO/ETIMEDOUT; also
    the bound of the first connect."""
    data_dir: Path = DEFAULT_DATA_DIR
    """Where the embedded server keeps its store and log."""

    @property
    def api_prefix(self) -> str:
        """The JetStream API subject prefix: ``--js-api-prefix``, else the domain's
        (``$JS.<domain>.API``), else ``$JS.API``."""
        if self.js_api_prefix:
            return self.js_api_prefix.rstrip(".")
        if self.js_domain:
            return f"$JS.{self.js_domain}.API"
        return DEFAULT_API_PREFIX

    @property
    def event_prefix(self) -> str:
        """Where JetStream advisories arrive: ``--js-event-prefix``, else ``$JS.EVENT``."""
        return (self.js_event_prefix or DEFAULT_EVENT_PREFIX).rstrip(".")

    @property
    def inbox(self) -> str:
        """The reply subject prefix (without the trailing dot)."""
        return (self.inbox_prefix or DEFAULT_INBOX_PREFIX).rstrip(".")

    @property
    def tls_wanted(self) -> bool:
        """Whether the options ask for TLS whatever the server says."""
        return bool(self.tls_ca or self.tls_cert or self.tls_first)

    def __repr__(self) -> str:
        shown = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in SECRETS and value is not None:
                value = "<set>"
            elif name == "servers":
                value = [redact(url) for url in value]
            shown.append(f"{name}={value!r}")
        return f"ConnectOptions({', '.join(shown)})"


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
    server_store: Path | None = None
    """The embedded server's JetStream store directory, set by the mount when it started one:
    df reports that disk's free space when the account has no limit."""
    max_name_bytes: int = MAX_NAME_BYTES
    """Longest object name (a path inside the bucket); the mount sets it from the server
    it reached (``store.names.safe_name_limit``)."""
    fuse_options: list[str] = field(default_factory=list)
    daemon: bool = False
    debug: bool = False
    log_level: int | None = None
    """A logging level chosen by --log-level or -q (None: from -v and --debug)."""
    log_file: Path | None = None
    """Log here instead of stderr (a daemon: instead of DATA_DIR/objfs.log)."""
    metrics_addr: str | None = None
    """Serve Prometheus metrics at HOST:PORT (checked by objfs.metrics.parse_address)."""
