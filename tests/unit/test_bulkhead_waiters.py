"""Unit tests for bulwark_server.bulkheads.waiters: the per-replica wait queue."""

from __future__ import annotations

import asyncio

from bulwark_server.bulkheads.waiters import WaitQueue


async def test_wake_is_fifo_and_counted() -> None:
    queue = WaitQueue()
    a, b, c = (queue.join("db") for _ in range(3))
    assert queue.wake("db", 2) == 2
    assert a.done() and b.done() and not c.done()
    assert queue.waiting("db") == 1
    assert queue.wake("db", 5) == 1
    assert c.done() and queue.names() == []


async def test_front_goes_first() -> None:
    queue = WaitQueue()
    old = queue.join("db")
    retry = queue.join("db", front=True)
    queue.wake("db", 1)
    assert retry.done() and not old.done()


async def test_cancelled_waiters_do_not_use_up_a_wake() -> None:
    queue = WaitQueue()
    gone = queue.join("db")
    live = queue.join("db")
    gone.cancel()
    assert queue.wake("db", 1) == 1
    assert live.done() and live.result() is None


async def test_leave_and_isolation_between_bulkheads() -> None:
    queue = WaitQueue()
    a = queue.join("a")
    b = queue.join("b")
    queue.leave("a", a)
    queue.leave("a", a)  # twice is harmless
    assert queue.wake("a", 1) == 0
    assert queue.names() == ["b"]
    assert queue.wake_all() == 1
    assert b.done()


async def test_woken_waiter_resumes() -> None:
    queue = WaitQueue()
    future = queue.join("db")
    waiter = asyncio.create_task(asyncio.wait_for(future, 1.0))
    await asyncio.sleep(0)
    queue.wake_all("db")
    assert await waiter is None
