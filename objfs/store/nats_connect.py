"""Connecting to NATS: ``connect`` opens the connection a ``NatsObjectStore`` lives on.

It turns objfs's ``ConnectOptions`` into nats-py's (``nats_auth`` writes down the credentials
and TLS for both connections) and hands the same options to the lean bulk reader of
``nats_bulk``, which opens its own second connection with them. nats-py's socket reads are
raised to ``READ_BUFFER`` (its 32 KiB default measured slow for large reads).

The first connect is one pass over the server list, as the nats CLI and nats.go do: a server
that refuses the credentials ends it at once ("authorization violation"), otherwise it ends
when every server has failed once or ``timeout`` has passed, with the last cause in words
(connection refused, TLS handshake failed, ...). nats-py itself would retry a failed first
connect for ever with reconnects allowed, so ``connect`` watches its attempts through the
error callback and stops it. Once connected, the connection reconnects for ever (a mount
outlives server restarts).

nats-py reports the connection's life through callbacks; ``ConnectionEvents`` logs them at a
level that matches what they mean, so an outage is told once, not once per reconnect attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import nats.aio.client as nats_client
import nats.errors

from objfs.options import ConnectOptions, redact
from objfs.store import errors
from objfs.store.nats_auth import CredentialsError, nats_py_options

if TYPE_CHECKING:
    from objfs.store.nats_store import NatsObjectStore

# The store's logger, as before the split: the log lines keep their name.
log = logging.getLogger("objfs.store.nats_store")

READ_BUFFER = 1 << 20
"""Socket read size and reader buffer limit of the connection (see connect)."""

SCHEMES = ("nats", "tls", "ws", "wss")
"""URL schemes nats-py speaks (a URL without one is ``nats://``)."""


async def connect(
    servers: Sequence[str] | ConnectOptions,
    *,
    timeout: float | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    name: str = "objfs",
) -> NatsObjectStore:
    """Connect to NATS; the store reconnects by itself for as long as it lives.

    ``servers``: the connection options, or just the server URLs (then ``timeout``, ``user``,
    ``password`` and ``token`` are the rest; a shorthand for tests and tools). Unavailable
    (with the cause in words) if no server accepts us within the timeout.
    """
    if isinstance(servers, ConnectOptions):
        options = servers
    else:
        options = ConnectOptions(
            servers=[servers] if isinstance(servers, str) else list(servers),
            user=user,
            password=password,
            token=token,
            timeout=5.0 if timeout is None else timeout,
        )
    where = ",".join(redact(s) for s in options.servers)
    for url in options.servers:
        scheme = urlsplit(url).scheme if "://" in url else "nats"
        if scheme not in SCHEMES:
            raise errors.Unavailable(
                f"cannot connect to {redact(url)}: unknown URL scheme {scheme!r} "
                "(use nats://, tls://, ws:// or wss://)"
            )
    try:
        auth = nats_py_options(options)
    except (CredentialsError, OSError) as e:  # a TLS file: ssl reads them here
        raise errors.Unavailable(f"cannot connect to {where}: {describe(e)}") from None
    events = ConnectionEvents(first_pass=len(options.servers))
    opts: dict[str, Any] = {
        "servers": options.servers,
        "name": name,
        "connect_timeout": options.timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,  # a mount outlives server restarts
        "reconnect_time_wait": 0.5,
        "error_cb": events.error,
        "disconnected_cb": events.disconnected,
        "reconnected_cb": events.reconnected,
        **auth,
    }
    # nats-py reads the socket 32 KiB at a time into a 32 KiB-limit StreamReader, so a
    # 256 MiB read pauses/resumes the transport ~8,000 times; 1 MiB reads measured 15-25%
    # faster. The value is a module global read at connect and on each read.
    nats_client.DEFAULT_BUFFER_SIZE = max(nats_client.DEFAULT_BUFFER_SIZE, READ_BUFFER)
    nc = nats_client.Client()
    attempt = asyncio.ensure_future(nc.connect(**opts))
    gave_up = asyncio.ensure_future(events.gave_up.wait())
    try:
        await asyncio.wait({attempt, gave_up}, timeout=options.timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        gave_up.cancel()
    if not attempt.done() or attempt.cancelled() or attempt.exception() is not None:
        failed = attempt.exception() if attempt.done() and not attempt.cancelled() else None
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        with contextlib.suppress(Exception):
            await nc.close()
        cause = events.refused or events.last_error or failed
        text = describe(cause) if cause is not None else f"no answer in {options.timeout:g}s"
        if cause is not None and closed_after_tls(cause, options):
            text = CLOSED_AFTER_TLS
        raise errors.Unavailable(f"cannot connect to {where}: {text}")
    events.connected = True
    # Imported here: nats_store imports this module (it re-exports connect).
    from objfs.store.nats_store import NatsObjectStore

    return NatsObjectStore(nc, options.timeout, options=options, events=events)


CLOSED_AFTER_TLS = (
    "TLS handshake failed: the server closed the connection after the handshake; "
    "it requires a client certificate (--tls-cert)"
)


def closed_after_tls(e: BaseException, options: ConnectOptions) -> bool:
    """Whether a TLS connection without a client certificate was closed by the server.

    With TLS 1.3 the client's side of the handshake ends before the server checks for a
    client certificate, so the server's refusal arrives after it: as the "certificate
    required" alert if the client reads first, as a broken pipe or a reset if it writes
    its CONNECT first. Which one a client sees is a matter of timing; both mean the same.
    """
    resets = (errno.EPIPE, errno.ECONNRESET)
    return (
        (options.tls_wanted or any(u.startswith(("tls://", "wss://")) for u in options.servers))
        and not options.tls_cert
        and isinstance(e, OSError) and not isinstance(e, ssl.SSLError)
        and (isinstance(e, BrokenPipeError | ConnectionResetError) or e.errno in resets)
    )


def is_auth_error(e: BaseException) -> bool:
    """Whether the server refused the credentials (retrying cannot help)."""
    low = str(e).lower()
    return isinstance(e, nats.errors.AuthorizationError) or any(
        w in low for w in ("authorization violation", "authentication expired",
                           "authentication revoked", "user authentication")
    )


def describe(e: BaseException) -> str:
    """Why a connection attempt failed, in words a user acts on."""
    text = str(e).strip().strip("'")
    if is_auth_error(e):
        return (
            "authorization violation: the server refused the credentials (user/password, "
            "token, nkey or creds)"
        )
    if isinstance(e, CredentialsError):
        return str(e)
    if isinstance(e, ssl.SSLCertVerificationError):
        why = str(e.verify_message or e.reason).rstrip(".")
        return f"TLS handshake failed: {why} (certificate name or CA: --tls-ca)"
    if isinstance(e, ssl.SSLError):
        if "CERTIFICATE_REQUIRED" in str(e.reason):
            return "TLS handshake failed: the server requires a client certificate (--tls-cert)"
        return f"TLS handshake failed: {e.reason or text}"
    if isinstance(e, ConnectionRefusedError) or (
        isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
    ) or "connect call failed" in text.lower():
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host name: {e.strerror}"
    if isinstance(e, (TimeoutError, nats.errors.TimeoutError)):
        return "no answer (timed out)"
    if isinstance(e, FileNotFoundError | PermissionError) and e.filename:
        return f"{e.filename}: {e.strerror}"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return _cause(e)


class ConnectionEvents:
    """nats-py's connection callbacks, logged at a level that matches what they mean.

    Failed attempts of the initial connect are debug and counted (``connect`` gives up on
    ``gave_up`` and raises one Unavailable with the cause); a disconnect caused by ``close()``
    is debug. A live store that loses its server
    says so once (warning, with the cause), then every ``REPEAT`` seconds while reconnect
    attempts keep failing (nats-py tries twice a second), and once more when it is back.
    """

    REPEAT = 60.0

    def __init__(self, first_pass: int = 1) -> None:
        self.connected = False
        self.closing = False
        self.last_error: Exception | None = None
        self._first_pass = first_pass
        self._failures = 0
        self.gave_up = asyncio.Event()
        """Set during the first connect on an auth error or when every server failed once."""
        self.refused: Exception | None = None
        """The first connect's auth error: its cause, whatever nats-py reports after it
        before it is stopped (a reset of the connection the server closed)."""
        self.reconnects = 0  # for objfs status and the metrics
        self._down_since: float | None = None
        self._last_said = 0.0

    def _quiet(self) -> bool:
        return self.closing or not self.connected

    async def error(self, e: Exception) -> None:
        self.last_error = e
        if not self.connected:
            self._failures += 1
            if is_auth_error(e) and self.refused is None:
                self.refused = e
            if self.refused is not None or self._failures >= self._first_pass:
                self.gave_up.set()
        now = time.monotonic()
        loud = not self._quiet() and (
            self._down_since is None or now - self._last_said >= self.REPEAT
        )
        if loud:
            self._last_said = now
            if self._down_since is not None:
                down = now - self._down_since
                log.warning("nats: still unreachable after %.0fs: %s", down, _cause(e))
                return
        log.log(logging.WARNING if loud else logging.DEBUG, "nats: %s", _cause(e))

    async def disconnected(self) -> None:
        if self._quiet():
            log.debug("nats: disconnected")
            return
        self._down_since = self._last_said = time.monotonic()
        log.warning("nats: disconnected from the server; reconnecting")

    async def reconnected(self) -> None:
        self.reconnects += 1
        if self._down_since is not None:
            log.warning("nats: reconnected after %.1fs", time.monotonic() - self._down_since)
        else:
            log.info("nats: reconnected")
        self._down_since = None


def _cause(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
