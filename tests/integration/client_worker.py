"""A client process for test_client_async: one AsyncClient, JSON lines on stdout.

``report``: record a failure for every call its breaker allows, until the
breaker refuses (the fleet's breaker tripped), then print ``tripped``.

``watch``: only ask ``allow`` in a tight loop, never record anything, and
print ``open`` with the wall-clock time it first saw the breaker refuse.

Both print ``ready`` once the client's caches are synced, and exit 0 when
done, 2 on timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bulwark import AsyncClient
from bulwark.v1 import breaker_pb2


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


async def run(args: argparse.Namespace) -> int:
    async with AsyncClient(args.endpoint, client_id=args.client_id, timeout=2.0) as client:
        records = 0
        original_record = client.record

        def counting_record(name: str, success: bool, slow: bool = False) -> None:
            nonlocal records
            records += 1
            original_record(name, success, slow)

        client.record = counting_record  # type: ignore[method-assign]
        emit("ready", staleness=client.staleness()["breakers"])
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            decision = await client.allow(args.breaker)
            if not decision.allowed:
                emit(
                    "tripped" if args.mode == "report" else "open",
                    state=breaker_pb2.BreakerState.Name(decision.state),
                    source=decision.source,
                    records=records,
                    pending=client._outcomes.pending,
                )
                return 0
            if args.mode == "report":
                client.record(args.breaker, success=False)
                await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(0.002)
        emit("timeout", records=records)
        return 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["report", "watch"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--breaker", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--timeout", type=float, default=20.0)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
