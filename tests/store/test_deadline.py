"""``within`` (store/deadline.py): a bounded wait that keeps a cancellation, unlike Python
3.11's ``asyncio.wait_for``, which returns the result that arrives with the cancel."""

from __future__ import annotations

import asyncio

import pytest

from objfs.store.deadline import within


async def _cancelled_as_the_result_arrives() -> str:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    reached = []

    async def waiter() -> None:
        await within(fut, 10)  # asyncio.wait_for returns 1 here on 3.11
        reached.append("went on after the cancel")

    task = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)  # the waiter now waits for fut
    fut.set_result(1)
    task.cancel()  # in the same loop iteration
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return reached[0]


def test_a_cancel_that_meets_the_result_is_kept() -> None:
    assert asyncio.run(_cancelled_as_the_result_arrives()) == "cancelled"


def test_within_times_out_and_returns_results() -> None:
    async def main() -> None:
        assert await within(asyncio.sleep(0, "x"), 5) == "x"
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(10), 0.01)
        assert await within(asyncio.sleep(0, "y"), None) == "y"

    asyncio.run(main())
