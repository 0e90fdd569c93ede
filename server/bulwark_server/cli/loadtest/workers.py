"""``--workers N``: the load shared by N processes, for rates one Python process cannot
make (one asyncio process makes a few thousand unary calls a second).

Each process (spawned, so none inherits a gRPC channel) connects and resolves the
method on its own, says it is ready, and starts at the wall-clock time the parent
then sends to all of them. Process ``i`` takes every N-th call from call ``i`` (of
the count and of the schedule alike) and its share of ``-c``, so the calls, the
rate and the schedule are those of one process, interleaved. Each reports its own
``--report-as`` signals (Bulwark adds them up); the parent shows the progress line,
merges the logs and writes the one report.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import multiprocessing
import multiprocessing.connection
import multiprocessing.sharedctypes
import queue
import signal
import sys
import time
from typing import Any

from bulwark_server.cli.loadtest.options import (
    EX_USAGE,
    EXIT_FAILED,
    LoadOptions,
    LoadTestError,
    UsageError,
)
from bulwark_server.cli.loadtest.runner import Runner
from bulwark_server.cli.loadtest.stats import CallLog

START_MARGIN = 0.2  # seconds between the go and the common start
READY_SLACK = 30.0  # seconds on top of --connect-timeout for a process to get ready


def _child(
    index: int,
    options: LoadOptions,
    results: multiprocessing.Queue[dict[str, Any]],
    go: multiprocessing.connection.Connection,
    done: Any,
) -> None:
    """One worker process: prepare, wait for the start time, run, send the log back."""
    # Ctrl-C reaches every process of the group: until the run takes it over (it stops
    # the load and sends what was done), it must not kill this one mid-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = asyncio.run(_child_run(index, options, results, go, done))
    except UsageError as exc:
        result = {"status": EX_USAGE, "message": str(exc)}
    except LoadTestError as exc:
        result = {"status": EXIT_FAILED, "message": str(exc)}
    except Exception as exc:
        result = {"status": EXIT_FAILED, "message": f"{type(exc).__name__}: {exc}"}
    results.put({"index": index, **result})


async def _child_run(
    index: int,
    options: LoadOptions,
    results: multiprocessing.Queue[dict[str, Any]],
    go: multiprocessing.connection.Connection,
    done: Any,
) -> dict[str, Any]:
    from bulwark_server.cli.loadtest import session

    plan = session.plan_of(options, index, options.workers)
    async with session.Session(options, plan) as prepared:
        runner = prepared.runner()
        results.put({"index": index, "ready": True})
        start_at = await asyncio.to_thread(_receive, go, options.connect_timeout + READY_SLACK)
        if start_at is None:
            return {"status": EXIT_FAILED, "message": "no start from the parent"}
        await asyncio.sleep(max(0.0, start_at - time.time()))
        begin = runner.clock() - (time.time() - start_at)  # the common start on our clock
        main = asyncio.ensure_future(runner.run(begin))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, main.cancel)
        counter = asyncio.ensure_future(_count(runner, done, index))
        try:
            async with prepared.side_tasks(runner, progress=False):
                await main
        finally:
            counter.cancel()
        log = runner.log
        return {
            "status": 0,
            "starts": log.starts.tobytes(),
            "latencies": log.latencies.tobytes(),
            "codes": log.codes.tobytes(),
            "errors": log.errors.tobytes(),
            "messages": log.messages,
            "elapsed": runner.elapsed,
            "end_reason": runner.end_reason,
            "unsent": runner.unsent,
        }


def _receive(go: multiprocessing.connection.Connection, wait: float) -> float | None:
    if not go.poll(wait):
        return None
    value = go.recv()
    return float(value) if value is not None else None


async def _count(runner: Runner, done: Any, index: int) -> None:
    """Keep the parent's view of our call count fresh, for its progress line."""
    while True:
        done[index] = len(runner.log)
        await asyncio.sleep(0.25)


def _log_of(result: dict[str, Any]) -> CallLog:
    log = CallLog()
    log.starts.frombytes(result["starts"])
    log.latencies.frombytes(result["latencies"])
    log.codes.frombytes(result["codes"])
    log.errors.frombytes(result["errors"])
    log.messages = list(result["messages"])
    return log


class _Merged:
    """What the report needs of a runner, from every worker's result."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.log = CallLog()
        for result in results:
            self.log.extend(_log_of(result))
        self.elapsed = max(float(r["elapsed"]) for r in results)
        self.unsent = sum(int(r["unsent"]) for r in results)
        reasons = {str(r["end_reason"]) for r in results}
        self.end_reason = next(
            (reason for reason in ("cancel", "timeout") if reason in reasons), "normal"
        )


def run(options: LoadOptions) -> int:
    """Run the load over ``options.workers`` processes; the exit status."""
    from bulwark_server.cli import loadtest
    from bulwark_server.cli.loadtest.session import build_report

    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[dict[str, Any]] = ctx.Queue()
    done = ctx.Array("q", options.workers, lock=False)
    pipes = [ctx.Pipe(duplex=False) for _ in range(options.workers)]
    processes = [
        ctx.Process(target=_child, args=(i, options, results, pipes[i][0], done), daemon=True)
        for i in range(options.workers)
    ]
    interrupted = False

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True  # the workers got it too: they stop and send what they did

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        for process in processes:
            process.start()
        ready, finished = 0, []
        deadline = time.monotonic() + options.connect_timeout + READY_SLACK
        while ready < len(processes):
            item = _next(results, processes, deadline)
            if item.get("ready"):
                ready += 1
                continue
            raise _failure(item)
        start_at = time.time() + START_MARGIN
        for _, sender in pipes:
            sender.send(start_at)
        bound = (options.duration or 24 * 3600.0) + options.timeout + READY_SLACK
        deadline, shown = time.monotonic() + START_MARGIN + bound, 0.0
        while len(finished) < len(processes):
            try:
                item = results.get(timeout=0.25)
            except queue.Empty:
                _check(processes, len(finished), deadline)
                if options.progress and time.monotonic() - shown >= 1.0 and not interrupted:
                    shown = time.monotonic()
                    line = f"[{time.time() - start_at:6.1f}s] {sum(done)} calls"
                    tty = sys.stderr.isatty()
                    sys.stderr.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
                    sys.stderr.flush()
                continue
            if item.get("status", 0) != 0:
                raise _failure(item)
            finished.append(item)
        if options.progress and sys.stderr.isatty():
            sys.stderr.write("\n")
        merged = _Merged(finished)
        started = datetime.datetime.fromtimestamp(start_at, datetime.UTC)
        report = build_report(options, merged, started)  # type: ignore[arg-type]
        return loadtest.finish(options, report)
    finally:
        signal.signal(signal.SIGINT, previous)
        for _, sender in pipes:  # a worker still waiting for the start: none is coming
            with contextlib.suppress(OSError):
                sender.send(None)
        for process in processes:
            process.join(5.0 if process.is_alive() else 0)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()


def _next(
    results: multiprocessing.Queue[dict[str, Any]],
    processes: list[Any],
    deadline: float,
) -> dict[str, Any]:
    while True:
        try:
            return results.get(timeout=0.25)
        except queue.Empty:
            _check(processes, 0, deadline)


def _check(processes: list[Any], finished: int, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise LoadTestError("the worker processes did not finish in time")
    if sum(p.exitcode is not None for p in processes) > finished:
        # A process that ended sent its result first; give the queue a moment.
        time.sleep(0.5)
        if sum(p.exitcode not in (None, 0) for p in processes):
            raise LoadTestError("a worker process died without a result")


def _failure(item: dict[str, Any]) -> Exception:
    message = f"worker {item.get('index')}: {item.get('message', 'failed')}"
    if item.get("status") == EX_USAGE:
        return UsageError(message)
    return LoadTestError(message)
