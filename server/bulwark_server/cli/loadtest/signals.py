"""``--report-as``: the calls' outcomes reported to Bulwark as a service's signals.

About once a second the calls logged since the last report go to
``RegistryService/ReportSignals`` (reporter ``bulwark-loadtest``) as one
``SignalReport`` of the service named: calls, errors (any status but OK) and the
latency histogram the client library sends (OpenTelemetry's exponential buckets at
scale 2, in milliseconds), so Bulwark's error-rate and latency probes see the load
as they see a real caller. A report that fails is kept and sent with the next one;
the load never waits for Bulwark.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections import Counter
from typing import TextIO

import grpc
import grpc.aio

from bulwark.v1 import registry_pb2_grpc, signals_pb2
from bulwark_server.cli.loadtest.stats import OK, CallLog

REPORTER = "bulwark-loadtest"
MIN_INDEX = -40  # the histogram's first bucket, about 1 µs
MAX_INDEX = 99  # its last, about 8.7 h
SCALE = 4  # buckets per doubling


def bucket_of(latency_s: float) -> int:
    """The histogram bucket of a latency in seconds, as the client library computes it:
    bucket ``i`` holds (2^(i/4), 2^((i+1)/4)] ms, the end buckets the rest."""
    ms = latency_s * 1000.0
    if not ms > 0:
        return MIN_INDEX
    if math.isinf(ms):
        return MAX_INDEX
    return min(MAX_INDEX, max(MIN_INDEX, math.ceil(math.log2(ms) * SCALE) - 1))


class SignalReporter:
    """Counts the log's new calls and reports them (see the module docstring)."""

    def __init__(
        self,
        stub: registry_pb2_grpc.RegistryServiceStub,
        service: str,
        log: CallLog,
        metadata: tuple[tuple[str, str], ...] = (),
        timeout: float = 2.0,
        err: TextIO = sys.stderr,
    ) -> None:
        self.stub = stub
        self.service = service
        self.log = log
        self.metadata = metadata
        self.timeout = timeout
        self.err = err
        self.reported = 0  # calls of the log counted so far
        self.sent_calls = 0  # calls Bulwark accepted
        self._calls = 0
        self._errors = 0
        self._buckets: Counter[int] = Counter()
        self._warned = False

    def count_new(self) -> None:
        """Add the calls logged since the last count to what the next report holds."""
        end = len(self.log)
        codes, latencies = self.log.codes, self.log.latencies
        for i in range(self.reported, end):
            self._calls += 1
            self._errors += codes[i] != OK
            self._buckets[bucket_of(latencies[i])] += 1
        self.reported = end

    def request(self) -> signals_pb2.ReportSignalsRequest:
        """What the next report sends."""
        counts = signals_pb2.SignalCounts(calls=self._calls, errors=self._errors)
        if self._buckets:
            low, high = min(self._buckets), max(self._buckets)
            counts.latency.offset = low
            counts.latency.counts.extend(self._buckets.get(i, 0) for i in range(low, high + 1))
        report = signals_pb2.SignalReport(service=self.service, counts=counts)
        return signals_pb2.ReportSignalsRequest(reporter=REPORTER, reports=[report])

    async def flush(self) -> None:
        """Count the new calls and report them; on failure keep them for next time."""
        self.count_new()
        if not self._calls:
            return
        try:
            await self.stub.ReportSignals(
                self.request(), timeout=self.timeout, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as exc:
            if not self._warned:
                self._warned = True
                print(
                    f"bulwark loadtest: --report-as: ReportSignals failed "
                    f"({exc.code().name}: {exc.details()}); retrying with the next report",
                    file=self.err,
                    flush=True,
                )
            return
        self.sent_calls += self._calls
        self._calls = self._errors = 0
        self._buckets.clear()

    async def run(self, every: float = 1.0) -> None:
        """Report every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            await self.flush()
