"""Fixtures of the store tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from nats_helpers import Run

from objfs.bridge import AsyncioThread, Bridge

T = TypeVar("T")


@pytest.fixture
async def run(asyncio_thread: AsyncioThread) -> Run[Any]:
    """Run an asyncio coroutine function on the asyncio thread, from the trio test."""
    bridge = Bridge(asyncio_thread)

    async def run(fn: Callable[[], Awaitable[T]]) -> T:
        return await bridge.call(fn)

    return run
