"""The load itself: ``concurrency`` workers making calls, closed loop or on a schedule.

Closed loop (no rate): each worker sends its next call when its last one is
answered; a call's latency runs from its send.

Open loop (a schedule): the workers take the calls in order of their due times
and send each when due, whatever the answers. A call's latency runs from its due
time, or from its send when that came first (a worker wakes up to ``early``
seconds ahead: the event loop's timers are coarser than a fast call). So when the
server stalls and every worker waits, the calls that fall due meanwhile queue up
and their wait counts in their latency: the report does not omit the stall the
way a closed loop does (coordinated omission). Calls that fall due before the end
of a ``--duration`` run but are never sent, all workers being busy until then,
are counted in ``unsent``.

``clock`` and ``sleep`` are injectable, so the arithmetic can be tested on a
simulated clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

import grpc
import grpc.aio

from bulwark_server.cli.loadtest.reflection import DataError, RequestFactory
from bulwark_server.cli.loadtest.schedule import Schedule
from bulwark_server.cli.loadtest.stats import OK, UNKNOWN, CallLog
from bulwark_server.cli.loadtest.template import Call, Template

# How far ahead of its due time a paced call may go: about the event loop's timer
# granularity (epoll waits in whole milliseconds, rounded up).
EARLY_SEND = 0.001

# One call: (call number, worker id) -> (status code, error message or None).
Invoke = Callable[[int, str], Awaitable[tuple[int, str | None]]]


@dataclass(frozen=True)
class Plan:
    """What one process sends. With several worker processes, process ``offset`` of
    ``stride`` takes the calls numbered ``offset``, ``offset + stride`` …, and worker
    ids from ``first_worker``."""

    concurrency: int
    total: int | None = None
    duration: float | None = None
    schedule: Schedule | None = None
    offset: int = 0
    stride: int = 1
    first_worker: int = 0
    early: float = EARLY_SEND


def start_time(sent: float, due: float | None) -> float:
    """When a call's latency starts: its send in a closed loop; in an open loop its due
    time, or its send when it went early (coordinated-omission correction)."""
    return sent if due is None else min(sent, due)


class Runner:
    """Runs a ``Plan`` with ``invoke`` and logs each call (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        invoke: Invoke,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.plan = plan
        self.invoke = invoke
        self.clock = clock
        self.sleep = sleep
        self.log = CallLog()
        self.begin = math.nan
        self.finished = math.nan
        self.unsent = 0
        self.end_reason = "normal"
        self._next = itertools.count()
        self._due: Iterator[float] | None = None
        self._end = math.inf
        self._taken = 0

    @property
    def elapsed(self) -> float:
        """Seconds from the start to the last answer (or to now while running)."""
        if math.isnan(self.begin):
            return 0.0
        last = self.finished if not math.isnan(self.finished) else self.clock()
        return last - self.begin

    def _number(self) -> int | None:
        """The next call number of this process, or None when ``total`` is reached."""
        n = self.plan.offset + next(self._next) * self.plan.stride
        if self.plan.total is not None and n >= self.plan.total:
            return None
        return n

    async def run(self, begin: float | None = None) -> None:
        """Run to the end of the plan (``begin``: the clock value to start at)."""
        plan = self.plan
        self.begin = self.clock() if begin is None else begin
        if plan.duration is not None:
            self._end = self.begin + plan.duration
        if plan.schedule is not None:
            self._due = itertools.islice(plan.schedule.due_times(), plan.offset, None, plan.stride)
        worker = self._paced if plan.schedule is not None else self._closed
        tasks = [
            asyncio.ensure_future(worker(f"w{plan.first_worker + i}"))
            for i in range(plan.concurrency)
        ]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            self.end_reason = "cancel"
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.finished = self.clock()
            if self.end_reason == "normal" and self._end < math.inf:
                if plan.total is None or self._taken < self._share(plan.total):
                    self.end_reason = "timeout"
            self.unsent = max(0, self._expected() - self._taken)

    def _share(self, calls: int) -> int:
        """How many of the first ``calls`` call numbers are this process's."""
        return max(0, math.ceil((calls - self.plan.offset) / self.plan.stride))

    def _expected(self) -> int:
        """Paced runs with a duration: this process's calls due before the end."""
        plan = self.plan
        if plan.schedule is None or plan.duration is None or self.end_reason == "cancel":
            return 0
        due = plan.schedule.calls_before(plan.duration)
        if plan.total is not None:
            due = min(due, plan.total)
        return self._share(due)

    async def _closed(self, worker: str) -> None:
        clock, invoke, add = self.clock, self.invoke, self.log.add
        begin, end = self.begin, self._end
        while (n := self._number()) is not None:
            sent = clock()
            if sent >= end:
                return
            self._taken += 1
            code, message = await invoke(n, worker)
            add(sent - begin, clock() - sent, code, message)

    async def _paced(self, worker: str) -> None:
        clock, invoke, add = self.clock, self.invoke, self.log.add
        begin, end = self.begin, self._end
        early, due_times = self.plan.early, self._due
        assert due_times is not None
        while (n := self._number()) is not None:
            due = begin + next(due_times)
            if due >= end or clock() >= end:
                return
            self._taken += 1
            wait = due - clock() - early
            if wait > 0:
                await self.sleep(wait)
            sent = clock()
            started = start_time(sent, due)
            code, message = await invoke(n, worker)
            add(started - begin, clock() - started, code, message)


def make_invoke(
    method: grpc.aio.UnaryUnaryMultiCallable,
    requests: RequestFactory,
    metadata: tuple[tuple[str, Template], ...],
    timeout: float,
) -> Invoke:
    """The call function: build the request (and metadata), call, map the outcome."""
    static = all(template.static for _, template in metadata)
    fixed = tuple((key, template.text) for key, template in metadata)
    build = requests.build

    async def invoke(number: int, worker: str) -> tuple[int, str | None]:
        try:
            if static:
                headers = fixed
            else:
                call = Call(number, worker)
                headers = tuple((key, template.render(call)) for key, template in metadata)
            await method(build(number, worker), timeout=timeout, metadata=headers)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            return code.value[0], f"{code.name}: {exc.details()}"
        except DataError as exc:
            return UNKNOWN, f"request: {exc}"
        return OK, None

    return invoke


async def show_progress(runner: Runner, out: TextIO = sys.stderr, every: float = 1.0) -> None:
    """A live line on ``out`` until cancelled: calls, rate, errors (rewritten in place on
    a terminal, a line each ``every`` seconds elsewhere)."""
    tty = out.isatty()
    seen, errors, then = 0, 0, time.perf_counter()
    while True:
        await asyncio.sleep(every)
        log = runner.log
        count, now = len(log), time.perf_counter()
        errors += sum(1 for code in log.codes[seen:count] if code != OK)
        rate = (count - seen) / (now - then) if now > then else 0.0
        seen, then = count, now
        line = f"[{runner.elapsed:6.1f}s] {count} calls, {rate:.0f}/s now, {errors} errors"
        out.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
        out.flush()
