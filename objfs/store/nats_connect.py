"""Connecting to NATS: ``connect`` opens the connection a ``NatsObjectStore`` lives on.

It turns objfs's connection options (servers, user/password, token, creds, TLS) into nats-py's,
reconnecting for ever (a mount outlives server restarts), and decides whether the lean bulk
reader of ``nats_bulk`` may open its own second connection: it speaks plain TCP with
user/password or token only, so TLS or creds leave reads on nats-py's connection. nats-py's
socket reads are raised to ``READ_BUFFER`` (its 32 KiB default measured slow for large reads).

nats-py reports the connection's life through callbacks; ``ConnectionEvents`` logs them at a
level that matches what they mean, so an outage is told once, not once per reconnect attempt.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import nats
import nats.aio.client as nats_client
import nats.errors

from objfs.store import errors
from objfs.store.nats_bulk import BulkAuth

if TYPE_CHECKING:
    from objfs.store.nats_store import NatsObjectStore

# The store's logger, as before the split: the log lines keep their name.
log = logging.getLogger("objfs.store.nats_store")

READ_BUFFER = 1 << 20
"""Socket read size and reader buffer limit of the connection (see connect)."""


async def connect(
    servers: list[str],
    *,
    timeout: float = 5.0,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    creds: str | None = None,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    name: str = "objfs",
) -> NatsObjectStore:
    """Connect to NATS; the store reconnects by itself for as long as it lives.

    Unavailable if no server answers within ``timeout``.
    """
    events = ConnectionEvents()
    opts: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,  # a mount outlives server restarts
        "reconnect_time_wait": 0.5,
        "error_cb": events.error,
        "disconnected_cb": events.disconnected,
        "reconnected_cb": events.reconnected,
    }
    if user is not None:
        opts["user"] = user
        opts["password"] = password
    if token is not None:
        opts["token"] = token
    # The lean bulk reader speaks plain TCP with these credentials only (see nats_bulk).
    bulk: BulkAuth | None = BulkAuth(user, password, token)
    if creds is not None:
        opts["user_credentials"] = creds
        bulk = None
    if tls_ca or tls_cert:
        bulk = None
        ctx = ssl.create_default_context(cafile=tls_ca)
        if tls_cert:
            ctx.load_cert_chain(tls_cert, tls_key)
        opts["tls"] = ctx
    # nats-py reads the socket 32 KiB at a time into a 32 KiB-limit StreamReader, so a
    # 256 MiB read pauses/resumes the transport ~8,000 times; 1 MiB reads measured 15-25%
    # faster. The value is a module global read at connect and on each read.
    nats_client.DEFAULT_BUFFER_SIZE = max(nats_client.DEFAULT_BUFFER_SIZE, READ_BUFFER)
    try:
        # The initial connect does not retry for ever (only reconnects do), but bound it anyway.
        nc = await asyncio.wait_for(nats.connect(**opts), timeout * 2 + 1)
    except (TimeoutError, OSError, nats.errors.Error) as e:
        # A timeout says nothing; the last attempt's error (e.g. connection refused) does.
        cause = events.last_error if isinstance(e, TimeoutError) and events.last_error else e
        text = str(cause).strip() or f"no answer within {timeout * 2 + 1:g}s"
        where = ",".join(servers)
        raise errors.Unavailable(f"cannot connect to {where}: {text}") from None
    events.connected = True
    # Imported here: nats_store imports this module (it re-exports connect).
    from objfs.store.nats_store import NatsObjectStore

    return NatsObjectStore(nc, timeout, bulk=bulk, events=events)


class ConnectionEvents:
    """nats-py's connection callbacks, logged at a level that matches what they mean.

    Failed attempts of the initial connect are debug (``connect`` raises one Unavailable with
    the cause); a disconnect caused by ``close()`` is debug. A live store that loses its server
    says so once (warning, with the cause), then every ``REPEAT`` seconds while reconnect
    attempts keep failing (nats-py tries twice a second), and once more when it is back.
    """

    REPEAT = 60.0

    def __init__(self) -> None:
        self.connected = False
        self.closing = False
        self.last_error: Exception | None = None
        self.reconnects = 0  # for objfs status and the metrics
        self._down_since: float | None = None
        self._last_said = 0.0

    def _quiet(self) -> bool:
        return self.closing or not self.connected

    async def error(self, e: Exception) -> None:
        self.last_error = e
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


def _cause(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
