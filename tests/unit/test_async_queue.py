"""AsyncQueue (the async watch's hand-off): items in order, EMPTY on a timeout, and an
item that arrives after a timed-out wait is still there for the next get."""

from __future__ import annotations

import asyncio

from swarm_memory._synchronization import EMPTY, AsyncQueue


async def test_items_in_order_then_empty_after_the_timeout() -> None:
    q: AsyncQueue[int] = AsyncQueue()
    q.put(1)
    q.put(2)
    assert await q.get(0) == 1
    assert await q.get(None) == 2
    assert await q.get(0) is EMPTY
    assert await q.get(0.01) is EMPTY


async def test_a_wait_is_woken_by_a_put_and_a_timeout_loses_nothing() -> None:
    q: AsyncQueue[str] = AsyncQueue()
    waiter = asyncio.create_task(q.get(5))
    await asyncio.sleep(0)
    q.put("a")
    assert await asyncio.wait_for(waiter, 1) == "a"
    # Timed-out waits, with puts landing right as they time out: every item still comes
    # out, once, in order.
    got: list[str] = []
    for i in range(50):
        loop = asyncio.get_running_loop()
        loop.call_later(0.001, q.put, f"x{i}")
        item = await q.get(0.001)
        if item is not EMPTY:
            got.append(item)
    while (item := await q.get(0.05)) is not EMPTY:
        got.append(item)
    assert got == [f"x{i}" for i in range(50)]


async def test_no_timeout_waits_for_the_item() -> None:
    q: AsyncQueue[int] = AsyncQueue()
    asyncio.get_running_loop().call_later(0.01, q.put, 7)
    assert await q.get() == 7


async def test_a_wake_up_taken_by_a_wait_that_ended_goes_to_the_next_waiter() -> None:
    q: AsyncQueue[str] = AsyncQueue()
    first = asyncio.create_task(q.get(None))
    second = asyncio.create_task(q.get(5))
    await asyncio.sleep(0)  # both wait, first in line
    q.put("x")  # wakes the first...
    first.cancel()  # ...which ends before it runs: the item must reach the second
    assert await asyncio.wait_for(second, 1) == "x"
    assert first.cancelled()


async def test_waits_that_timed_out_do_not_hold_back_a_later_item() -> None:
    q: AsyncQueue[int] = AsyncQueue()
    for _ in range(20):
        assert await q.get(0.001) is EMPTY
    waiter = asyncio.create_task(q.get(5))
    await asyncio.sleep(0)
    q.put(3)
    assert await asyncio.wait_for(waiter, 1) == 3


async def test_the_timeout_bounds_the_whole_wait_however_often_it_is_woken() -> None:
    q: AsyncQueue[int] = AsyncQueue()
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.create_task(q.get(0.2))
    await asyncio.sleep(0)
    for i in range(20):  # wake it every 50 ms, and take the item before it runs
        if waiter.done():
            break
        q.put(i)
        assert await q.get(0) == i
        await asyncio.sleep(0.05)
    assert await waiter is EMPTY
    assert loop.time() - started < 0.6
