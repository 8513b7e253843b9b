"""The retry policy of every NATS request: transient failures are retried until the timeout.

A store request that fails because the connection dropped, the server restarted or a stream
leader changed is not the caller's problem while the store's ``timeout`` has not run out: it
is tried again (each attempt bounded by ``attempt_timeout``, with a short backoff between
attempts), and only when the deadline passes does the last error (Unavailable, Timeout:
EIO/ETIMEDOUT for the filesystem) reach the caller. Retrying is safe because every request
objfs repeats is idempotent: reads are, and every publish carries a ``Nats-Msg-Id`` that stays
the same across its attempts, so JetStream's duplicate window (two minutes by default) answers
a repeat of a publish that had landed with the original sequence instead of storing it twice
(a rollup meta publish included: the duplicate check comes before the rollup and before any
``Nats-Expected-Last-Subject-Sequence`` check, so a repeated exclusive create that had won
still reports its win).

What is transient: ``Unavailable`` (its subclass ``Timeout`` included) and ``NoResponders``
on a bucket subject, which during a server's restart means "JetStream has not loaded the
stream yet" as often as "no such bucket": ``retry`` asks the JetStream API (``settle``) which
it is, and a bucket that really does not exist is NotFound at once. Everything else (Exists,
NoSpace, ReadOnly, Corrupt, a malformed answer) is the server's definite answer and is raised
at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from objfs.store import errors

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 0.5
"""Seconds between attempts: doubling from the first to the max (a restarting server needs
a moment; a stream leader election takes a few hundred milliseconds)."""


class NoResponders(errors.NotFound):
    """Nobody answered on a bucket's subject: the stream is missing, or not loaded yet."""


def attempt_timeout(timeout: float) -> float:
    """How long one attempt waits for its answer: a request lost with a dead connection is
    sent again well before the whole timeout has gone by."""
    return max(0.5, min(timeout, timeout / 3))


async def retry(
    what: str,
    timeout: float,
    attempt: Callable[[float], Awaitable[T]],
    *,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """``attempt(seconds)`` until it succeeds, fails definitely, or ``timeout`` has passed.

    ``settle``: asked after a NoResponders answer; it raises NotFound if the bucket really
    does not exist (returns if it does, or if JetStream cannot tell yet: never Unavailable).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = BACKOFF_FIRST
    tries = 0
    while True:
        left = deadline - loop.time()
        tries += 1
        try:
            return await attempt(max(0.05, min(attempt_timeout(timeout), left)))
        except NoResponders:
            if settle is None:
                raise
            await settle()
            error: errors.StoreError = errors.Unavailable(f"{what}: no responders")
        except errors.Unavailable as e:
            error = e
        left = deadline - loop.time()
        if left <= 0:
            if tries > 1:
                log.debug("%s: giving up after %d attempts: %s", what, tries, error)
            raise error
        log.debug("%s: attempt %d failed (%s), retrying", what, tries, error)
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, BACKOFF_MAX)


class Patience:
    """The retry budget of an operation made of many requests (a put's chunks, a read's
    batches): the timeout, counted from the first failure since the last progress, so an
    outage shorter than the timeout is survived however long the operation runs."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.retried = False
        """Whether anything was retried (a caller may check its result then)."""
        self._deadline: float | None = None
        self._pause = BACKOFF_FIRST

    def progress(self) -> None:
        """A request succeeded: a later outage gets a whole timeout again."""
        self._deadline = None
        self._pause = BACKOFF_FIRST

    async def failed(self, e: errors.StoreError) -> None:
        """Raise ``e`` once the timeout has passed without progress; else back off."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._deadline is None:
            self._deadline = now + self.timeout
        if now >= self._deadline:
            raise e
        self.retried = True
        log.debug("%s; retrying", e)
        await asyncio.sleep(min(self._pause, self._deadline - now))
        self._pause = min(self._pause * 2, BACKOFF_MAX)
