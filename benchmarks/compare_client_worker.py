"""One side's ``AsyncClient.allow()`` decisions per second: a child of ``compare_commits.py``.

Usage (the parent runs it so, once per turn and side)::

    PYTHONPATH=<tree>/clients/python python -P compare_client_worker.py \\
        ADDRESS BREAKER WARMUP DURATION

It imports the standard library and the ``bulwark`` package of that tree only, through
public API that exists since the commit before the refactoring (86cf2f8):
``from bulwark import AsyncClient``, ``AsyncClient(address)`` as an async context manager,
and ``await client.allow(name)`` returning a decision with ``allowed`` and ``source``.
``-P`` keeps this script's directory (with the other benchmarks, which import the tree the
parent runs from) off ``sys.path``.

After ``async with AsyncClient(address)`` it calls ``allow()`` until a decision comes from
the watch-fed cache (the breaker must exist and be CLOSED), then counts decisions as
``client_bench.py``'s ``_AllowPeer.untimed`` does (it calls ``count`` of this module):
``BATCH`` decisions between clock reads,
an ``asyncio.sleep(0)`` after each batch so the client's watch and reporter tasks run,
first for WARMUP seconds (discarded), then for DURATION seconds. Prints one JSON line:
``decisions``, ``seconds``, ``not_from_cache`` (decisions that were not allowed from the
cache; expected 0) and ``bulwark_file`` (which tree's client library ran).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import bulwark
from bulwark import AsyncClient

BATCH = 256  # decisions between clock reads and between yields to the event loop
READY_TIMEOUT = 15.0  # seconds for the cache to answer for the breaker


async def count(client: AsyncClient, name: str, seconds: float) -> tuple[int, float, int]:
    """Decisions made in ``seconds``, the seconds they took, and how many were not cached."""
    allow, clock = client.allow, time.perf_counter
    n = bad = 0
    begin = clock()
    end = begin + seconds
    while clock() < end:
        for _ in range(BATCH):
            decision = await allow(name)
            if not decision.allowed or decision.source != "cache":
                bad += 1
        n += BATCH
        await asyncio.sleep(0)
    return n, clock() - begin, bad


async def run(address: str, name: str, warmup: float, duration: float) -> dict[str, object]:
    async with AsyncClient(address) as client:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            decision = await client.allow(name)
            if decision.allowed and decision.source == "cache":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the client's cache never allowed {name!r}: {decision}")
            await asyncio.sleep(0.01)
        if warmup > 0:
            await count(client, name, warmup)
        decisions, seconds, bad = await count(client, name, duration)
    return {
        "decisions": decisions,
        "seconds": seconds,
        "not_from_cache": bad,
        "bulwark_file": bulwark.__file__,
    }


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    address, name, warmup, duration = argv[0], argv[1], float(argv[2]), float(argv[3])
    print(json.dumps(asyncio.run(run(address, name, warmup, duration))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
