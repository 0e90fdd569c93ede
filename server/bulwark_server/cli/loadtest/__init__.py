"""``bulwark loadtest``: a ghz-style load generator for any unary gRPC method.

The package, by concern: :mod:`.flags` and :mod:`.options` (the flags, their values
checked), :mod:`.reflection` (the method and its messages through server
reflection, requests from JSON), :mod:`.template` (ghz's template actions),
:mod:`.schedule` (open-loop rates), :mod:`.runner` (the workers, coordinated-omission
correction), :mod:`.stats` and :mod:`.report` (the numbers and their formats),
:mod:`.thresholds` (``--fail-if``), :mod:`.signals` (``--report-as``),
:mod:`.session` (one process's run made ready) and :mod:`.workers` (``--workers``).
This module is the front: the parser and the run, from flags to exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import signal
import sys
from typing import NoReturn

from bulwark_server.cli.loadtest.flags import add_arguments
from bulwark_server.cli.loadtest.options import (
    EX_USAGE,
    EXIT_BREACHED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LoadOptions,
    LoadTestError,
    UsageError,
    from_args,
)
from bulwark_server.cli.loadtest.report import Report

ME = "bulwark loadtest"
DESCRIPTION = """\
Load any unary gRPC method a server exposes through reflection, as ghz does, and
report throughput, latency percentiles, a histogram and status codes.

Without --rps the load is a closed loop: -c workers each send a call as soon as
their last one is answered, and latency counts from each send. With --rps (or a
--load-schedule) it is an open loop: calls are sent when due whatever the answers,
and latency counts from the due time, so a stall shows in the percentiles instead
of slowing the sender (coordinated omission). -c caps the calls in flight.

A run needs a bound: -n calls, -z time, or both (whichever comes first). It connects
only to HOST:PORT (and to --bulwark with --report-as). Plaintext by default to a
loopback address, TLS with the system's roots elsewhere; --insecure forces
plaintext, --cacert/--cert/--key set TLS up.
"""
EPILOG = """\
examples:
  bulwark loadtest 127.0.0.1:50051 --call bulwark.v1.RateLimitService/Check -n 2000 -c 20 \\
    -d '{"domain": "demo", "descriptors": [{"entries": [
          {"key": "user", "value": "u{{randomInt 1 100}}"}]}]}'
  bulwark loadtest 127.0.0.1:50051 --call bulwark.v1.CircuitBreakerService/Allow \\
    -d '{"name": "payments"}' --rps 200 -z 10s --fail-if 'p99>50ms' --fail-if 'error_rate>1%'

output: a summary on stdout (-O json, pretty or csv for machines; -o FILE to write
there); the live progress line and every message go to stderr.

exit status:
  0    the run completed and no --fail-if threshold was breached
  1    the run could not be made: the server unreachable, no reflection, no such
       method, the report not written
  2    a --fail-if threshold was breached (the report says which)
  64   a usage error: a bad flag, value, threshold or request data
  130  interrupted (Ctrl-C); the report of the calls made is still written
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``loadtest``; its usage errors exit 64, not argparse's 2 (2 is a breach)."""
    parser = commands.add_parser(
        "loadtest",
        help="load a unary gRPC method and report latency and throughput (ghz-style)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)

    def usage_error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(EX_USAGE, f"{ME}: error: {message}\n")

    parser.error = usage_error  # type: ignore[method-assign]
    parser.set_defaults(handler=run, command_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Run ``bulwark loadtest``; the exit status (see ``EPILOG``)."""
    try:
        options = from_args(args)
    except UsageError as exc:
        print(f"{ME}: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        if options.workers > 1:
            from bulwark_server.cli.loadtest import workers

            return workers.run(options)
        return asyncio.run(_run(options))
    except UsageError as exc:
        print(f"{ME}: {exc}", file=sys.stderr)
        return EX_USAGE
    except LoadTestError as exc:
        print(f"{ME}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{ME}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: one line, never a traceback
        print(f"{ME}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _run(options: LoadOptions) -> int:
    from bulwark_server.cli.loadtest import session

    async with session.Session(options) as prepared:
        runner = prepared.runner()
        started = datetime.datetime.now(datetime.UTC)
        begin = runner.clock()
        main = asyncio.ensure_future(runner.run(begin))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, main.cancel)
        try:
            async with prepared.side_tasks(runner):
                await main
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        return finish(options, prepared.report(runner, started))


def finish(options: LoadOptions, report: Report) -> int:
    """Write the report where asked; the exit status it calls for."""
    from bulwark_server.cli.loadtest import report as formats

    if options.format == "csv":
        text = formats.format_csv(report.log, report.started)
    elif options.format in ("json", "pretty"):
        text = formats.format_json(report, pretty=options.format == "pretty")
    else:
        text = formats.format_summary(report)
    if options.output:
        try:
            with open(options.output, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise LoadTestError(
                f"-o/--output: cannot write {options.output}: {exc.strerror}"
            ) from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if report.breached:
        which = ", ".join(verdict.threshold.text for verdict in report.breached)
        print(f"{ME}: threshold breached: {which}", file=sys.stderr)
        return EXIT_BREACHED
    if report.end_reason == "cancel":
        return EXIT_INTERRUPTED
    return EXIT_OK
