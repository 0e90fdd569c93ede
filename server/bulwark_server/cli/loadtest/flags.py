"""``bulwark loadtest``'s flags as ``--help`` shows them; :mod:`.options` checks their
values."""

from __future__ import annotations

import argparse
import os

from bulwark_server.cli.loadtest.options import FORMATS, parse_duration
from bulwark_server.cli.loadtest.schedule import KINDS


def _duration_type(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate_type(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected calls a second, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of ``bulwark loadtest``, grouped as ``--help`` shows them."""
    parser.add_argument("host", metavar="HOST:PORT", help="the server to load (and only it)")
    what = parser.add_argument_group("what to call")
    what.add_argument(
        "--call",
        required=True,
        metavar="METHOD",
        help="unary method, package.Service/Method or package.Service.Method, found through "
        "the server's reflection",
    )
    what.add_argument(
        "-d",
        "--data",
        metavar="JSON",
        help="request as JSON, with template actions such as {{.RequestNumber}}, "
        "{{.WorkerID}}, {{.UUID}}, {{randomString 8}}, {{randomInt 1 1000}}; '@' reads "
        "stdin (default {})",
    )
    what.add_argument("-D", "--data-file", metavar="FILE", help="request JSON from a file")
    what.add_argument(
        "-m",
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE|JSON",
        help="call metadata, repeatable: KEY=VALUE or a JSON object; values take templates",
    )
    how = parser.add_argument_group("how much")
    how.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=50,
        metavar="N",
        help="calls in flight at most (default 50)",
    )
    how.add_argument("-n", "--total", type=int, metavar="N", help="calls to make")
    how.add_argument(
        "-z",
        "--duration",
        type=_duration_type,
        metavar="DURATION",
        help="how long to send (10s, 1m30s)",
    )
    how.add_argument(
        "-r",
        "--rps",
        type=_rate_type,
        metavar="RPS",
        help="open loop: calls a second, sent on schedule whatever the answers (default: "
        "closed loop, each worker sends when its last call is answered)",
    )
    how.add_argument("--load-schedule", choices=KINDS, default="const", help="rate schedule")
    how.add_argument(
        "--load-start", type=_rate_type, metavar="RPS", help="step/line: starting calls a second"
    )
    how.add_argument(
        "--load-step", type=_rate_type, metavar="RPS", help="step/line: change per step/second"
    )
    how.add_argument(
        "--load-end", type=_rate_type, metavar="RPS", help="step/line: the rate to stop changing at"
    )
    how.add_argument(
        "--load-step-duration",
        type=_duration_type,
        metavar="DURATION",
        help="step: a step's length",
    )
    how.add_argument(
        "--load-max-duration",
        type=_duration_type,
        metavar="DURATION",
        help="step/line: stop changing after this",
    )
    how.add_argument(
        "-t",
        "--timeout",
        type=_duration_type,
        default=20.0,
        metavar="DURATION",
        help="deadline of a call (20s)",
    )
    how.add_argument(
        "--connect-timeout",
        type=_duration_type,
        default=10.0,
        metavar="DURATION",
        help="to connect (10s)",
    )
    how.add_argument(
        "--workers", type=int, default=1, metavar="N", help="processes sharing the load (default 1)"
    )
    tls = parser.add_argument_group("security")
    tls.add_argument("--insecure", action="store_true", help="plaintext (default for loopback)")
    tls.add_argument("--cacert", metavar="FILE", help="PEM CA to verify the server: TLS")
    tls.add_argument("--cert", metavar="FILE", help="PEM client certificate (mutual TLS)")
    tls.add_argument("--key", metavar="FILE", help="PEM private key of --cert")
    tls.add_argument("--token", help="bearer token sent with every call to HOST:PORT")
    out = parser.add_argument_group("report")
    out.add_argument(
        "-O", "--format", choices=FORMATS, default="summary", help="output format (summary)"
    )
    out.add_argument("-o", "--output", metavar="FILE", help="write the report there, not stdout")
    out.add_argument(
        "--fail-if",
        action="append",
        default=[],
        metavar="COND",
        help="exit 2 when COND holds, repeatable: 'p99>50ms', 'error_rate>1%%', 'rps<100'; "
        "metrics p50 p90 p95 p99 p999 average fastest slowest rps error_rate errors count; "
        "units ns us ms s and %%",
    )
    out.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a live line on stderr (default: when stderr is a terminal)",
    )
    out.add_argument(
        "--report-as",
        metavar="SERVICE",
        help="report the calls' outcomes to Bulwark as signals of SERVICE, every second",
    )
    out.add_argument("--bulwark", metavar="HOST:PORT", help="the Bulwark replica --report-as uses")
    # Apart from --token: a Bulwark credential must never reach the target, which may
    # be any service (a chaos experiment's load step names it).
    out.add_argument(
        "--bulwark-token",
        default=os.environ.get("BULWARK_TOKEN"),
        help="bearer token for --bulwark only [env BULWARK_TOKEN]",
    )
