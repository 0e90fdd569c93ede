"""One process's run, made ready: the channel open, the method resolved, requests
built, the runner planned; then the side tasks (progress, ``--report-as``) and the
report assembled from what the runner logged.

Channels go only to the addresses given: HOST:PORT, and ``--bulwark`` with
``--report-as``, opened as ``cli/channel.py``'s ``ServerTarget`` opens them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import sys
from collections.abc import AsyncIterator
from types import TracebackType

import grpc
import grpc.aio

from bulwark.v1 import registry_pb2_grpc
from bulwark_server.cli.channel import ServerTarget
from bulwark_server.cli.loadtest.options import LoadOptions, LoadTestError, UsageError
from bulwark_server.cli.loadtest.reflection import (
    DataError,
    RequestFactory,
    ResolvedMethod,
    ResolveError,
    resolve,
)
from bulwark_server.cli.loadtest.report import Report
from bulwark_server.cli.loadtest.runner import Plan, Runner, make_invoke, show_progress
from bulwark_server.cli.loadtest.signals import SignalReporter
from bulwark_server.cli.loadtest.stats import summarize
from bulwark_server.cli.loadtest.template import Call, Template, TemplateError
from bulwark_server.cli.loadtest.thresholds import evaluate


def plan_of(options: LoadOptions, offset: int = 0, stride: int = 1) -> Plan:
    """The plan of process ``offset`` of ``stride``: its share of the calls and of -c."""
    share = options.concurrency // stride + (1 if offset < options.concurrency % stride else 0)
    first = offset * (options.concurrency // stride) + min(offset, options.concurrency % stride)
    return Plan(
        concurrency=share,
        total=options.total,
        duration=options.duration,
        schedule=options.schedule,
        offset=offset,
        stride=stride,
        first_worker=first,
    )


async def connect(channel: grpc.aio.Channel, address: str, options: LoadOptions) -> None:
    """Wait until ``channel`` is ready; LoadTestError, with a hint, if it is not in time."""
    try:
        await asyncio.wait_for(channel.channel_ready(), options.connect_timeout)
    except TimeoutError:
        hint = (
            " (TLS is on: is it a plaintext server? --insecure)"
            if options.tls
            else " (plaintext: is it a TLS server? --cacert)"
        )
        raise LoadTestError(
            f"cannot connect to {address} within {options.connect_timeout:g}s{hint}"
        ) from None


class Session:
    """``async with Session(options) as session``: everything a run needs, closed after."""

    def __init__(self, options: LoadOptions, plan: Plan | None = None) -> None:
        self.options = options
        self.plan = plan or plan_of(options)
        self.channel: grpc.aio.Channel | None = None
        self.bulwark_channel: grpc.aio.Channel | None = None
        self.method: ResolvedMethod | None = None

    async def __aenter__(self) -> Session:
        options = self.options
        try:
            self.channel = ServerTarget(options.host, options.credentials, ()).aio_channel()
            await connect(self.channel, options.host, options)
            names = [key for key, _ in options.metadata]
            # Reflection gets the metadata as written (a token may be needed there too).
            self.method = await resolve(
                self.channel, options.call, options.connect_timeout, options.metadata
            )
            try:
                self.requests = RequestFactory(self.method, options.data, options.data_flag)
                self.metadata = tuple(
                    (key, Template(value, self.method.names)) for key, value in options.metadata
                )
                for _, template in self.metadata:
                    template.render(Call(0, "w0"))
            except TemplateError as exc:
                raise UsageError(f"-m/--metadata ({', '.join(names)}): {exc}") from None
            except DataError as exc:
                raise UsageError(str(exc)) from None
            if options.report_as and options.bulwark:
                target = ServerTarget(options.bulwark, options.credentials, ())
                self.bulwark_channel = target.aio_channel()
            # What is loaded by now (modules, descriptors) lives for the whole run: out
            # of the collector's sight, a full collection during the load is shorter.
            gc.collect()
            gc.freeze()
        except ResolveError as exc:
            await self.close()
            raise LoadTestError(f"{options.call} on {options.host}: {exc}") from None
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in (self.channel, self.bulwark_channel):
            if channel is not None:
                await channel.close()

    def runner(self) -> Runner:
        """A runner of this process's plan, calling the resolved method."""
        assert self.channel is not None and self.method is not None
        method = self.channel.unary_unary(
            self.method.path,
            request_serializer=None,  # requests arrive serialized (RequestFactory)
            response_deserializer=self.method.response_class.FromString,
        )
        invoke = make_invoke(method, self.requests, self.metadata, self.options.timeout)
        return Runner(self.plan, invoke)

    def reporter(self, runner: Runner) -> SignalReporter | None:
        """The ``--report-as`` reporter of ``runner``'s calls, if asked for."""
        if self.bulwark_channel is None or not self.options.report_as:
            return None
        secret = self.options.bulwark_token
        token = (("authorization", f"Bearer {secret}"),) if secret else ()
        stub = registry_pb2_grpc.RegistryServiceStub(self.bulwark_channel)
        return SignalReporter(stub, self.options.report_as, runner.log, token)

    @contextlib.asynccontextmanager
    async def side_tasks(self, runner: Runner, progress: bool | None = None) -> AsyncIterator[None]:
        """Progress and signal reports while the block runs; a last report after it."""
        tasks = []
        if self.options.progress if progress is None else progress:
            tasks.append(asyncio.ensure_future(show_progress(runner)))
        reporter = self.reporter(runner)
        if reporter is not None:
            tasks.append(asyncio.ensure_future(reporter.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if tasks and (self.options.progress if progress is None else progress):
                if sys.stderr.isatty():
                    sys.stderr.write("\n")
            if reporter is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reporter.flush(), 3.0)

    def report(self, runner: Runner, started: datetime.datetime) -> Report:
        """The report of ``runner``'s finished run."""
        return build_report(self.options, runner, started)


def build_report(options: LoadOptions, runner: Runner, started: datetime.datetime) -> Report:
    """Numbers, verdicts and options of a finished run (one process's or merged)."""
    summary = summarize(runner.log, runner.elapsed)
    return Report(
        summary=summary,
        verdicts=evaluate(options.thresholds, summary.metric_values()),
        options=options.shown,
        started=started,
        end_reason=runner.end_reason,
        unsent=runner.unsent,
        schedule=options.schedule.describe() if options.schedule else None,
        log=runner.log,
    )
