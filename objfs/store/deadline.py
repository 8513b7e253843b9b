"""``within``: await something for at most a number of seconds, keeping a cancellation.

Why not ``asyncio.wait_for``: on Python 3.11 it returns the awaited result when its task is
cancelled in the same loop iteration as that result arrives (CPython gh-86296, fixed in 3.12
by rewriting it on ``asyncio.timeout``): the cancellation is lost and the task carries on as
if nobody had asked it to stop. Under load the suite met it twice: a watch whose trio side
was cancelled went on waiting for heartbeats while the unmount waited for it to end, for
ever; a streaming put went back to waiting for its source, which nobody fed any more.
``asyncio.timeout`` (3.11+) keeps the cancellation and raises ``TimeoutError`` as
``wait_for`` does. nats-py's own requests still use ``wait_for``: ``Bridge`` and ``Feed``
guard against what that can swallow (bridge.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw``, raising ``TimeoutError`` after ``timeout`` seconds (None: no limit)."""
    async with asyncio.timeout(timeout):
        return await aw
