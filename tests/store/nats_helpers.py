"""Helpers of the NATS store tests: the ``run`` fixture's type (tests/store/conftest.py),
reading whole objects, and telling whether reads go through the lean reader."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from objfs.store.api import ObjectInfo
from objfs.store.nats_store import NatsObjectStore

T = TypeVar("T")
Run = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]
"""The ``run`` fixture (tests/store/conftest.py): runs a coroutine function on the asyncio
thread, where nats-py lives, from the trio test."""


async def read_all(store: NatsObjectStore, info: ObjectInfo, window: int = 64) -> bytes:
    out = bytearray()
    async for batch in store.read_stream(info, window=window):
        for chunk in batch:
            out += chunk
    return bytes(out)


def bulk_in_use(store: NatsObjectStore) -> bool:
    """Whether the store's lean reader connection is open (reads go through it)."""
    return store.reader._bulk is not None and store.reader._bulk.is_open
