"""``bulwark loadtest``'s flags, and their values checked whole into ``LoadOptions``.

Every problem is a ``UsageError`` whose message names the flag; the command exits
``EX_USAGE`` (64) for it, before any connection is made.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from bulwark_server import config
from bulwark_server.cli.loadtest.reflection import split_method
from bulwark_server.cli.loadtest.schedule import KINDS, Schedule, ScheduleError
from bulwark_server.cli.loadtest.thresholds import Threshold, ThresholdError, parse_threshold

EXIT_OK = 0
EXIT_FAILED = 1  # the run could not be made: unreachable, no reflection, no such method
EXIT_BREACHED = 2  # a --fail-if threshold was breached
EX_USAGE = 64  # bad flags or data (sysexits.h's EX_USAGE)
EXIT_INTERRUPTED = 130  # Ctrl-C: the report of what was done is still written
FORMATS = ("summary", "json", "pretty", "csv")
_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_CONCURRENCY = 10_000


class UsageError(ValueError):
    """A flag or its value is wrong; the message names the flag."""


class LoadTestError(Exception):
    """The run could not be made (exit 1); the message says why."""


def parse_duration(text: str) -> float:
    """``5s``, ``250ms``, ``1m30s``, ``1.5`` (seconds) -> seconds (ValueError if not)."""
    value = text.strip()
    if re.fullmatch(r"[0-9]*\.?[0-9]+", value):
        seconds = float(value)
    else:
        position, seconds = 0, 0.0
        for match in _DURATION.finditer(value):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if position != len(value) or not value:
            raise ValueError(f"expected a duration like 10s, 250ms or 1m30s, got {text!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"expected a duration like 10s, got {text!r}")
    return seconds


@dataclass(frozen=True)
class LoadOptions:
    """Everything one run needs, checked."""

    host: str
    call: str
    data: str
    data_flag: str  # where the data came from, for messages
    metadata: tuple[tuple[str, str], ...]  # values may hold template actions
    concurrency: int
    total: int | None
    duration: float | None
    timeout: float
    connect_timeout: float
    schedule: Schedule | None  # None: closed loop (as fast as -c calls in flight allow)
    # TLS: (root CAs, client key, client certificate) as PEM bytes, None each for the
    # default; None for plaintext. Bytes, not credentials, so options cross to --workers.
    tls_material: tuple[bytes | None, bytes | None, bytes | None] | None
    format: str
    output: str | None
    thresholds: tuple[Threshold, ...]
    progress: bool
    report_as: str | None
    bulwark: str | None
    bulwark_token: str | None
    workers: int
    # What the JSON report's ``options`` lists (no secrets).
    shown: dict[str, object]

    @property
    def tls(self) -> bool:
        return self.tls_material is not None

    @property
    def credentials(self) -> grpc.ChannelCredentials | None:
        """The channel credentials (None: plaintext)."""
        if self.tls_material is None:
            return None
        return grpc.ssl_channel_credentials(*self.tls_material)


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None


def is_loopback(address: str) -> bool:
    """True for an address on this machine only (127.0.0.0/8, ::1, localhost)."""
    host, _ = config.split_host_port(address, "HOST:PORT")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_material(
    args: argparse.Namespace,
) -> tuple[bytes | None, bytes | None, bytes | None] | None:
    """ghz's TLS rules, with Bulwark's default for loopback: --insecure is plaintext;
    --cacert (and --cert/--key) is TLS; neither is plaintext to a loopback address
    (``make run`` serves plaintext there) and TLS with the system's roots elsewhere."""
    if args.insecure:
        if args.cacert or args.cert or args.key:
            raise UsageError("--insecure is plaintext: drop --cacert, --cert and --key")
        return None
    if bool(args.cert) != bool(args.key):
        raise UsageError("--cert and --key go together: set both")
    if not (args.cacert or args.cert) and is_loopback(args.host):
        return None
    return (
        _read(args.cacert, "--cacert") if args.cacert else None,
        _read(args.key, "--key") if args.key else None,
        _read(args.cert, "--cert") if args.cert else None,
    )


def _metadata(items: list[str], token: str | None) -> tuple[tuple[str, str], ...]:
    """-m values, each a JSON object of strings or KEY=VALUE; then --token's header."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        if item.lstrip().startswith("{"):
            try:
                loaded = json.loads(item)
            except ValueError as exc:
                raise UsageError(f"-m/--metadata: not valid JSON: {exc}") from None
            if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
                raise UsageError('-m/--metadata: expected a JSON object of strings, {"k": "v"}')
            pairs.extend(loaded.items())
        else:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(
                    f"-m/--metadata: expected KEY=VALUE or a JSON object, got {item!r}"
                )
            pairs.append((key.strip(), value))
    for key, _ in pairs:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", key) or key.lower().endswith("-bin"):
            raise UsageError(f"-m/--metadata: {key!r} is not a text metadata key")
    result = [(key.lower(), value) for key, value in pairs]
    if token:
        result.append(("authorization", f"Bearer {token}"))
    return tuple(result)


def _schedule(args: argparse.Namespace) -> Schedule | None:
    shaped = {
        "--load-start": args.load_start,
        "--load-step": args.load_step,
        "--load-end": args.load_end,
        "--load-step-duration": args.load_step_duration,
        "--load-max-duration": args.load_max_duration,
    }
    given = [flag for flag, value in shaped.items() if value is not None]
    if args.load_schedule == "const":
        if given:
            raise UsageError(f"{given[0]} shapes a step or line schedule: add --load-schedule")
        if args.rps is None:
            return None
        return Schedule("const", args.rps).validate()
    if args.rps is not None:
        raise UsageError(f"--rps is the rate of a const schedule; use --load-start with {KINDS}")
    if args.load_start is None or args.load_step is None:
        raise UsageError(f"--load-schedule {args.load_schedule} needs --load-start and --load-step")
    return Schedule(
        kind=args.load_schedule,
        start=args.load_start,
        step=args.load_step,
        end=args.load_end or 0.0,
        step_duration=args.load_step_duration or 0.0,
        max_duration=args.load_max_duration or 0.0,
    ).validate()


def _data(args: argparse.Namespace) -> str:
    if args.data is not None and args.data_file is not None:
        raise UsageError("-d/--data and -D/--data-file: give one of them")
    if args.data_file is not None:
        return _read(args.data_file, "-D/--data-file").decode("utf-8", "replace")
    if args.data == "@":
        return sys.stdin.read()
    return args.data if args.data is not None else "{}"


def from_args(args: argparse.Namespace) -> LoadOptions:
    """The checked options of the parsed flags; UsageError naming the flag if not."""
    try:
        config.split_host_port(args.host, "HOST:PORT")
        split_method(args.call)
        if args.bulwark is not None:
            config.split_host_port(args.bulwark, "--bulwark")
        schedule = _schedule(args)
    except (ValueError, ScheduleError) as exc:
        raise UsageError(str(exc)) from None
    if args.total is None and args.duration is None:
        raise UsageError(
            "a load test needs a bound: set -n/--total (calls) or -z/--duration (time), or both"
        )
    if args.total is not None and args.total < 1:
        raise UsageError("-n/--total must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("-z/--duration must be positive")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"-c/--concurrency must be 1 to {MAX_CONCURRENCY}")
    if args.timeout <= 0 or args.connect_timeout <= 0:
        raise UsageError("-t/--timeout and --connect-timeout must be positive")
    if not 1 <= args.workers <= 64:
        raise UsageError("--workers must be 1 to 64")
    if args.workers > args.concurrency:
        raise UsageError("--workers must not exceed -c/--concurrency (each needs a call in flight)")
    if (args.report_as is None) != (args.bulwark is None):
        raise UsageError("--report-as SERVICE and --bulwark HOST:PORT go together")
    if args.report_as is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", args.report_as):
        raise UsageError("--report-as: 1-128 letters, digits, '.', '_' or '-'")
    try:
        thresholds = tuple(parse_threshold(text) for text in args.fail_if)
    except ThresholdError as exc:
        raise UsageError(str(exc)) from None
    tls_material = _tls_material(args)
    metadata = _metadata(args.metadata, args.token)
    data = _data(args)
    shown: dict[str, object] = {
        "host": args.host,
        "call": args.call,
        "insecure": tls_material is None,
        "concurrency": args.concurrency,
        "total": args.total or 0,
        "duration": round((args.duration or 0) * 1e9),
        "timeout": round(args.timeout * 1e9),
        "loadSchedule": schedule.kind if schedule else "none",
        "rps": schedule.start if schedule else 0,
        "workers": args.workers,
    }
    if schedule is not None and schedule.kind != "const":
        shown.update(
            loadStart=schedule.start,
            loadStep=schedule.step,
            loadEnd=schedule.end,
            loadStepDuration=round(schedule.step_duration * 1e9),
            loadMaxDuration=round(schedule.max_duration * 1e9),
        )
    for key, value in (("cacert", args.cacert), ("cert", args.cert), ("key", args.key)):
        if value:
            shown[key] = value
    shown["data"] = data
    shown["metadata"] = {k: ("<redacted>" if k == "authorization" else v) for k, v in metadata}
    return LoadOptions(
        host=args.host,
        call=args.call,
        data=data,
        data_flag="-D/--data-file" if args.data_file is not None else "-d/--data",
        metadata=metadata,
        concurrency=args.concurrency,
        total=args.total,
        duration=args.duration,
        timeout=args.timeout,
        connect_timeout=args.connect_timeout,
        schedule=schedule,
        tls_material=tls_material,
        format=args.format,
        output=args.output,
        thresholds=thresholds,
        progress=args.progress or (args.progress is None and sys.stderr.isatty()),
        report_as=args.report_as,
        bulwark=args.bulwark,
        bulwark_token=args.bulwark_token,
        workers=args.workers,
        shown=shown,
    )
