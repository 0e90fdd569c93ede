"""Key backups and snapshots: BackupKey/RestoreKey throughput, snapshot and restore times, RTO.

What it measures, in one run, on one Bulwark replica (its own embedded etcd)
    1. Key backups. ``--keys`` keys (``bench-key-00000`` ...) of ``--material-bytes``
       random bytes each (``os.urandom``), sent with ``KeyBackupService/BackupKey`` by
       ``--concurrency`` concurrent calls over one ``grpc.aio`` channel from this process:
       keys/s (successful calls / wall time from the first request to the last answer)
       and per-call latency p50/p90/p99/max. Every answer must be version 1 with a copy in
       etcd and in the backup directory. Then ``RestoreKey`` (version 0: the latest) of
       every key the same way, checking that every material read back equals the bytes
       sent and noting which copy each restore used.
    2. Snapshot and restore. ``--breakers`` breakers created with ``PutBreaker`` (default
       configuration) so the state holds configuration besides key material. Then
       ``RecoveryService/CreateSnapshot``, timed from the request to the last stream
       message, with the time in each of its phases (reading, sealing, writing) from the
       arrival of the progress messages; the snapshot's key count by kind and the size of
       its ``.bws`` file. Then ``RestoreSnapshot(snapshot_id, wipe=true)``: total time,
       and the verifying (load + decrypt + read the current keys), wiping and restoring
       phases from the progress messages, with keys wiped and restored. Afterwards
       ``ListKeyBackups`` and ``ListBreakers`` must count every key and breaker again,
       and ``--verify-sample`` keys, spread over the range, are restored with RestoreKey
       and compared with the material sent (and must come from the etcd copy, which the
       snapshot restore rewrote).
    3. A drill. ``RunDrill`` on that snapshot: the RTO, RPO, keys, mismatched (must be
       0) and changed-since figures of its report, and the phases as in part 2.
    For each step it also reports the CPU seconds spent by the replica, its etcd and this
    process (from ``/proc``; NaN elsewhere), beside the wall time: a step whose processes
    are busy is CPU-bound, a step whose processes are idle is waiting on something.

How
    The replica is ``BulwarkProcess`` from ``bench_servers.py`` (``python -m
    bulwark_server serve`` on 127.0.0.1 with a private embedded etcd in a temporary data
    dir), started with ``--snapshot-interval 0`` so no scheduled snapshot runs during the
    measurement. With the embedded etcd and no KEK configured, the replica makes a local
    KEK under its data dir and keeps its backup copies in ``DATA_DIR/backups`` (same disk
    as etcd), unless ``--backup-dir`` names another directory. Auth is off (plaintext on
    loopback with the embedded etcd), so every call is admin; the audit trail still
    records every BackupKey, RestoreKey, PutBreaker and snapshot call, so those events are
    part of the snapshot. Times are ``time.perf_counter`` in this process. The replica and
    its data dir are removed on exit, error or Ctrl-C.

Caveats
    The client, the replica and etcd share the machine's CPUs (2 cores where the numbers
    in RESULTS.md were taken) and etcd and the backup directory share one disk: the
    figures are for this set-up, not a bound. etcd fsyncs its WAL (no
    ``--unsafe-no-fsync``) and each backup-directory file is fsynced with its directory,
    so disk latency counts. Phase times come from the arrival of progress messages, so
    they include the stream's delivery (small next to the phases). The drill's RPO is the
    age of the snapshot when the drill began, which here is only the time parts 2 and 3
    took, not a property of a schedule. The drill's RTO depends on the replica's other
    write traffic: after each 100-key batch into its scratch prefix the server waits for
    its cache to see a write under ``/bulwark/v1/`` (see RESULTS.md), which on this idle
    replica is the leader's renewal every ``lease_ttl / 4``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from bench_load import ms_percentiles
from bench_report import (
    add_json_option,
    bench_parser,
    machine_info,
    machine_line,
    progress_to,
    require_at_least_one,
    run_and_print,
    utc_now,
)
from bench_servers import (
    SERVING_TIMEOUT,
    BulwarkProcess,
    cpu_seconds,
    embedded_etcd_pid,
    probe_getleader,
)

from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    keybackup_pb2,
    keybackup_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
)

KEY_PREFIX = "bench-key-"
BREAKER_PREFIX = "bench-breaker-"
KEY_CALL_TIMEOUT = 30.0  # deadline of one BackupKey/RestoreKey/PutBreaker call
STREAM_TIMEOUT = 600.0  # deadline of one CreateSnapshot/RestoreSnapshot/RunDrill stream
SETTLE_TIMEOUT = 15.0  # seconds for the replica's cache to list everything after a restore
PAGE = 1000  # ListKeyBackups/ListBreakers page size (the largest allowed)


_progress = progress_to("backup-bench")


def key_id(n: int) -> str:
    return f"{KEY_PREFIX}{n:05d}"


def breaker_name(n: int) -> str:
    return f"{BREAKER_PREFIX}{n:05d}"


# --------------------------------------------------------------------------- unary calls


@dataclass
class Calls:
    """One batch of unary calls made with ``concurrency`` in flight."""

    method: str
    calls: int
    ok: int
    errors: int
    errors_by_code: dict[str, int]
    concurrency: int
    wall_s: float  # first request to last answer
    per_s: float  # successful calls per second of wall time
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


async def run_calls(
    method: str,
    n: int,
    concurrency: int,
    call: Callable[[int], Awaitable[None]],
    label: str,
) -> Calls:
    """``call(0)`` ... ``call(n - 1)``, ``concurrency`` at a time; latencies of the successes.

    ``call`` raises ``grpc.aio.AioRpcError`` for a failed call (counted by status code);
    any other exception ends the batch.
    """
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    indices = iter(range(n))  # shared by the workers: each takes the next index
    step = max(1, n // 10)
    clock = time.perf_counter

    async def worker() -> None:
        for i in indices:
            started = clock()
            try:
                await call(i)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
            else:
                latencies.append(clock() - started)
            finished = len(latencies) + sum(errors.values())
            if finished % step == 0 and finished < n:
                _progress(f"{label}: {finished}/{n}")

    begin = clock()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    wall = clock() - begin
    latencies.sort()
    ok = len(latencies)
    return Calls(
        method=method,
        calls=n,
        ok=ok,
        errors=sum(errors.values()),
        errors_by_code=dict(errors),
        concurrency=concurrency,
        wall_s=wall,
        per_s=ok / wall if wall > 0 else math.nan,
        **ms_percentiles(latencies),
        mean_ms=sum(latencies) / ok * 1000 if ok else math.nan,
    )


# --------------------------------------------------------------------------- streams


@dataclass
class Phase:
    """One phase of a streamed operation, as seen from the arrival of its messages."""

    phase: str
    start_s: float  # its first message, from the request (0 for the first phase)
    seconds: float  # until the first message of the next phase (or of "done")
    done: int  # the last message's counts
    total: int


@dataclass
class StreamTiming:
    """A streamed operation from the request to its last message."""

    total_s: float
    first_message_s: float
    messages: int
    phases: list[Phase]


def timing(events: Sequence[tuple[float, recovery_pb2.Progress]], total: float) -> StreamTiming:
    """Phases in order of first appearance; the first starts at the request."""
    order: list[str] = []
    first: dict[str, float] = {}
    last: dict[str, recovery_pb2.Progress] = {}
    for at, progress in events:
        if progress.phase not in first:
            order.append(progress.phase)
            first[progress.phase] = at
        last[progress.phase] = progress
    phases = []
    for i, name in enumerate(order):
        if name == "done":
            continue
        start = 0.0 if i == 0 else first[name]
        end = first[order[i + 1]] if i + 1 < len(order) else total
        p = last[name]
        phases.append(Phase(name, start, end - start, int(p.done), int(p.total)))
    return StreamTiming(
        total_s=total,
        first_message_s=events[0][0] if events else math.nan,
        messages=len(events),
        phases=phases,
    )


async def follow(stream: AsyncIterator[Any], label: str) -> tuple[list[Any], StreamTiming]:
    """Read a progress stream to its end; every message, and the timing of its phases."""
    started = time.perf_counter()
    messages: list[Any] = []
    events: list[tuple[float, recovery_pb2.Progress]] = []
    seen = ""
    async for message in stream:
        at = time.perf_counter() - started
        messages.append(message)
        events.append((at, message.progress))
        if message.progress.phase != seen:
            seen = message.progress.phase
            _progress(f"{label}: {seen} at {at:.3f}s")
    total = time.perf_counter() - started
    return messages, timing(events, total)


def phase_seconds(t: StreamTiming, name: str) -> float:
    return next((p.seconds for p in t.phases if p.phase == name), math.nan)


# --------------------------------------------------------------------------- CPU


@dataclass
class CpuUse:
    """Wall time of one step and the CPU seconds each process spent in it."""

    wall_s: float
    replica_s: float  # the Bulwark replica (its Python process, all threads)
    etcd_s: float  # its embedded etcd
    client_s: float  # this process: the grpc.aio client and the output-draining thread


class CpuMeter:
    """CPU seconds of the replica, its etcd and this process over named steps (Linux /proc)."""

    def __init__(self, replica_pid: int) -> None:
        self.replica_pid = replica_pid
        self.steps: dict[str, CpuUse] = {}

    def _sample(self) -> tuple[float, float, float, float]:
        etcd = embedded_etcd_pid(self.replica_pid)
        return (
            time.perf_counter(),
            cpu_seconds(self.replica_pid),
            cpu_seconds(etcd) if etcd is not None else math.nan,
            time.process_time(),
        )

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        before = self._sample()
        yield
        after = self._sample()
        wall, replica, etcd, client = (b - a for a, b in zip(before, after, strict=True))
        self.steps[name] = CpuUse(wall, replica, etcd, client)


# --------------------------------------------------------------------------- results


@dataclass
class SnapshotResult:
    """CreateSnapshot: the manifest's figures, the file, and the timing."""

    snapshot_id: str
    revision: int
    keys: int
    counts: dict[str, int]
    locations: list[str]
    file_bytes: int
    manifest_bytes: int
    timing: StreamTiming
    keys_per_s: float  # keys / total time


@dataclass
class RestoreResult:
    """RestoreSnapshot(wipe=true): what it did and how long each phase took."""

    snapshot_id: str
    wiped: int
    restored: int
    timing: StreamTiming
    wipe_keys_per_s: float  # wiped / wiping phase
    restore_keys_per_s: float  # restored / restoring phase
    overall_keys_per_s: float  # restored / total time


@dataclass
class DrillResult:
    """RunDrill: its report and the timing of its stream."""

    snapshot_id: str
    rto_s: float
    rpo_s: float
    keys: int
    mismatched: int
    changed_since: int
    differences: list[str]
    timing: StreamTiming


@dataclass
class Report:
    """Everything printed."""

    started_utc: str
    machine: dict[str, Any]
    note: str
    settings: dict[str, Any]
    backup: Calls | None = None
    backup_check: dict[str, Any] = field(default_factory=dict)
    restore: Calls | None = None
    restore_check: dict[str, Any] = field(default_factory=dict)
    breakers: Calls | None = None
    snapshot: SnapshotResult | None = None
    restore_snapshot: RestoreResult | None = None
    after_restore: dict[str, Any] = field(default_factory=dict)
    drill: DrillResult | None = None
    cpu: dict[str, CpuUse] = field(default_factory=dict)


# --------------------------------------------------------------------------- the parts


async def part_keys(
    channel: grpc.aio.Channel, args: argparse.Namespace, report: Report, meter: CpuMeter
) -> dict[str, bytes]:
    """BackupKey then RestoreKey of every key; returns the material of those backed up."""
    stub = keybackup_pb2_grpc.KeyBackupServiceStub(channel)
    material = {key_id(n): os.urandom(args.material_bytes) for n in range(args.keys)}
    ids = list(material)
    backed_up: dict[str, bytes] = {}
    unexpected: list[str] = []
    locations: Counter[str] = Counter()

    async def backup(i: int) -> None:
        kid = ids[i]
        response = await stub.BackupKey(
            keybackup_pb2.BackupKeyRequest(key_id=kid, material=material[kid]),
            timeout=KEY_CALL_TIMEOUT,
        )
        backed_up[kid] = material[kid]
        b = response.backup
        locations[len(b.locations)] += 1
        if b.key_id != kid or b.version != 1 or b.size != len(material[kid]):
            unexpected.append(f"{kid}: version {b.version}, size {b.size}")
        elif len(b.locations) < 2 or b.locations[0] != "etcd":
            unexpected.append(f"{kid}: locations {list(b.locations)}")

    _progress(f"BackupKey x {args.keys}, {args.concurrency} in flight...")
    with meter.step("BackupKey"):
        report.backup = await run_calls(
            "KeyBackupService/BackupKey", args.keys, args.concurrency, backup, "BackupKey"
        )
    report.backup_check = {
        "unexpected": len(unexpected),
        "unexpected_first": unexpected[:5],
        "responses_by_location_count": {str(k): v for k, v in sorted(locations.items())},
    }
    _progress(
        f"BackupKey: {report.backup.ok} ok, {report.backup.per_s:.1f} keys/s, p99 "
        f"{report.backup.p99_ms:.1f} ms"
    )

    restored_ids = sorted(backed_up)
    mismatched: list[str] = []
    used: Counter[str] = Counter()
    damaged = 0

    async def restore(i: int) -> None:
        nonlocal damaged
        kid = restored_ids[i]
        response = await stub.RestoreKey(
            keybackup_pb2.RestoreKeyRequest(key_id=kid, version=0), timeout=KEY_CALL_TIMEOUT
        )
        used[response.location] += 1
        damaged += len(response.damaged)
        if response.material != backed_up[kid] or response.backup.key_id != kid:
            mismatched.append(kid)

    _progress(f"RestoreKey x {len(restored_ids)} (latest version), {args.concurrency} in flight...")
    with meter.step("RestoreKey"):
        report.restore = await run_calls(
            "KeyBackupService/RestoreKey",
            len(restored_ids),
            args.concurrency,
            restore,
            "RestoreKey",
        )
    report.restore_check = {
        "verified": report.restore.ok - len(mismatched),
        "mismatched": len(mismatched),
        "mismatched_first": mismatched[:5],
        "copy_used": dict(sorted(used.items())),
        "damaged_copies_reported": damaged,
    }
    _progress(
        f"RestoreKey: {report.restore.ok} ok, {report.restore.per_s:.1f} keys/s, "
        f"{len(mismatched)} mismatched"
    )
    return backed_up


async def part_breakers(
    channel: grpc.aio.Channel, args: argparse.Namespace, report: Report, meter: CpuMeter
) -> None:
    stub = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)

    async def put(i: int) -> None:
        await stub.PutBreaker(
            breaker_pb2.PutBreakerRequest(name=breaker_name(i)), timeout=KEY_CALL_TIMEOUT
        )

    _progress(f"PutBreaker x {args.breakers}...")
    with meter.step("PutBreaker"):
        report.breakers = await run_calls(
            "CircuitBreakerService/PutBreaker", args.breakers, args.concurrency, put, "PutBreaker"
        )


async def part_snapshot(channel: grpc.aio.Channel, report: Report, meter: CpuMeter) -> str:
    """CreateSnapshot; RestoreSnapshot(wipe=true) of it. Returns the snapshot id."""
    stub = recovery_pb2_grpc.RecoveryServiceStub(channel)
    _progress("CreateSnapshot...")
    with meter.step("CreateSnapshot"):
        messages, t = await follow(
            stub.CreateSnapshot(recovery_pb2.CreateSnapshotRequest(), timeout=STREAM_TIMEOUT),
            "CreateSnapshot",
        )
    manifest = messages[-1].snapshot
    if not manifest.id:
        raise RuntimeError("CreateSnapshot ended without a snapshot")
    # The locations are the replica's backup directories, on this machine.
    base = Path(manifest.locations[0]) / "snapshots"
    file_bytes = (base / f"{manifest.id}.bws").stat().st_size
    manifest_bytes = (base / f"{manifest.id}.json").stat().st_size
    report.snapshot = SnapshotResult(
        snapshot_id=manifest.id,
        revision=manifest.revision,
        keys=manifest.keys,
        counts=dict(sorted(manifest.counts.items())),
        locations=list(manifest.locations),
        file_bytes=file_bytes,
        manifest_bytes=manifest_bytes,
        timing=t,
        keys_per_s=manifest.keys / t.total_s,
    )
    _progress(f"snapshot {manifest.id}: {manifest.keys} keys, {file_bytes} bytes, {t.total_s:.3f}s")

    _progress(f"RestoreSnapshot({manifest.id}, wipe=true)...")
    with meter.step("RestoreSnapshot"):
        messages, t = await follow(
            stub.RestoreSnapshot(
                recovery_pb2.RestoreSnapshotRequest(snapshot_id=manifest.id, wipe=True),
                timeout=STREAM_TIMEOUT,
            ),
            "RestoreSnapshot",
        )
    last = messages[-1]
    if last.snapshot.id != manifest.id:
        raise RuntimeError(f"RestoreSnapshot ended without a result (last: {last})")
    report.restore_snapshot = RestoreResult(
        snapshot_id=manifest.id,
        wiped=last.wiped,
        restored=last.restored,
        timing=t,
        wipe_keys_per_s=last.wiped / phase_seconds(t, "wiping") if last.wiped else math.nan,
        restore_keys_per_s=last.restored / phase_seconds(t, "restoring"),
        overall_keys_per_s=last.restored / t.total_s,
    )
    _progress(f"restored {last.restored} keys (wiped {last.wiped}) in {t.total_s:.3f}s")
    return manifest.id


async def _count_pages(list_page: Callable[[str], Awaitable[tuple[int, str]]]) -> int:
    count, token = 0, ""
    while True:
        n, token = await list_page(token)
        count += n
        if not token:
            return count


async def check_after_restore(
    channel: grpc.aio.Channel,
    backed_up: dict[str, bytes],
    args: argparse.Namespace,
    report: Report,
) -> None:
    """Everything listed again, and a sample of keys restored byte for byte from etcd."""
    keys = keybackup_pb2_grpc.KeyBackupServiceStub(channel)
    breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)

    async def key_page(token: str) -> tuple[int, str]:
        r = await keys.ListKeyBackups(
            keybackup_pb2.ListKeyBackupsRequest(page_size=PAGE, page_token=token),
            timeout=KEY_CALL_TIMEOUT,
        )
        return len(r.backups), r.next_page_token

    async def breaker_page(token: str) -> tuple[int, str]:
        r = await breakers.ListBreakers(
            breaker_pb2.ListBreakersRequest(page_size=PAGE, page_token=token),
            timeout=KEY_CALL_TIMEOUT,
        )
        return len(r.breakers), r.next_page_token

    # The listings read the replica's cache, which follows etcd's watch: give it a moment.
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        listed_keys = await _count_pages(key_page)
        listed_breakers = await _count_pages(breaker_page)
        settled = listed_keys == len(backed_up) and listed_breakers == args.breakers
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)

    ids = sorted(backed_up)
    count = min(args.verify_sample, len(ids))
    sample = [ids[(i * len(ids)) // count] for i in range(count)] if count else []
    mismatched = 0
    used: Counter[str] = Counter()
    for kid in sample:
        r = await keys.RestoreKey(
            keybackup_pb2.RestoreKeyRequest(key_id=kid), timeout=KEY_CALL_TIMEOUT
        )
        used[r.location] += 1
        mismatched += r.material != backed_up[kid]
    report.after_restore = {
        "key_backups_listed": listed_keys,
        "key_backups_expected": len(backed_up),
        "breakers_listed": listed_breakers,
        "breakers_expected": args.breakers,
        "sample_restored": len(sample),
        "sample_mismatched": mismatched,
        "sample_copy_used": dict(sorted(used.items())),
    }
    _progress(
        f"after restore: {listed_keys}/{len(backed_up)} key backups and "
        f"{listed_breakers}/{args.breakers} breakers listed; sample of {len(sample)}: "
        f"{mismatched} mismatched"
    )


async def part_drill(
    channel: grpc.aio.Channel, snapshot_id: str, report: Report, meter: CpuMeter
) -> None:
    stub = recovery_pb2_grpc.RecoveryServiceStub(channel)
    _progress(f"RunDrill({snapshot_id})...")
    with meter.step("RunDrill"):
        messages, t = await follow(
            stub.RunDrill(
                recovery_pb2.RunDrillRequest(snapshot_id=snapshot_id), timeout=STREAM_TIMEOUT
            ),
            "RunDrill",
        )
    r = messages[-1].report
    if not r.snapshot_id:
        raise RuntimeError("RunDrill ended without a report")
    report.drill = DrillResult(
        snapshot_id=r.snapshot_id,
        rto_s=r.rto.ToNanoseconds() / 1e9,
        rpo_s=r.rpo.ToNanoseconds() / 1e9,
        keys=r.keys,
        mismatched=r.mismatched,
        changed_since=r.changed_since,
        differences=list(r.differences)[:5],
        timing=t,
    )
    _progress(
        f"drill: RTO {report.drill.rto_s:.3f}s, RPO {report.drill.rpo_s:.1f}s, "
        f"{r.keys} keys, {r.mismatched} mismatched"
    )


async def run_parts(
    address: str, args: argparse.Namespace, report: Report, meter: CpuMeter
) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), SERVING_TIMEOUT)
        backed_up = await part_keys(channel, args, report, meter)
        if args.breakers:
            await part_breakers(channel, args, report, meter)
        snapshot_id = await part_snapshot(channel, report, meter)
        await check_after_restore(channel, backed_up, args, report)
        await part_drill(channel, snapshot_id, report, meter)
    report.cpu = meter.steps


# --------------------------------------------------------------------------- report


def _calls_line(label: str, c: Calls) -> str:
    return (
        f"{label:<28} {c.calls:>7} {c.errors:>6} {c.wall_s:>8.2f} {c.per_s:>9.1f} "
        f"{c.p50_ms:>7.2f} {c.p90_ms:>7.2f} {c.p99_ms:>7.2f} {c.max_ms:>8.2f}"
    )


def _phases_lines(t: StreamTiming) -> list[str]:
    lines = [f"    {'phase':<11} {'from s':>8} {'seconds':>8} {'done/total':>14}"]
    for p in t.phases:
        counts = f"{p.done}/{p.total}" if p.total else "-"
        lines.append(f"    {p.phase:<11} {p.start_s:>8.3f} {p.seconds:>8.3f} {counts:>14}")
    return lines


def format_report(report: Report) -> str:
    """The human-readable tables."""
    m, s = report.machine, report.settings
    lines = [
        f"Bulwark key backup and snapshot benchmark, started {report.started_utc}",
        machine_line(m, " (embedded, single member, fsync on)"),
        f"Backup directory: {s['backup_dir']}",
        f"Note: {report.note}",
    ]
    header = (
        f"{'calls':<28} {'n':>7} {'errors':>6} {'wall s':>8} {'keys/s':>9} {'p50 ms':>7} "
        f"{'p90 ms':>7} {'p99 ms':>7} {'max ms':>8}"
    )
    if report.backup is not None:
        lines += [
            "",
            f"1. Key backups: {s['keys']} keys of {s['material_bytes']} random bytes, "
            f"{s['concurrency']} calls in flight over one grpc.aio channel",
            header,
            _calls_line("BackupKey", report.backup),
        ]
        if report.restore is not None:
            lines.append(_calls_line("RestoreKey (latest)", report.restore))
        b, r = report.backup_check, report.restore_check
        lines.append(
            f"Checks: {b['unexpected']} unexpected BackupKey answers; RestoreKey "
            f"{r.get('verified', 0)} verified, {r.get('mismatched', 0)} mismatched, copy "
            f"used {r.get('copy_used', {})}, {r.get('damaged_copies_reported', 0)} damaged "
            "copies reported"
        )
        for c in (report.backup, report.restore):
            if c is not None and c.errors_by_code:
                lines.append(f"  {c.method} errors by code: {c.errors_by_code}")
    if report.breakers is not None:
        lines += [
            "",
            f"2. Snapshot and restore (state: the key backups above, {s['breakers']} breakers, "
            "and the audit events of all those calls)",
            header,
            _calls_line("PutBreaker (setup)", report.breakers),
        ]
    elif report.snapshot is not None:
        lines += ["", "2. Snapshot and restore"]
    sn = report.snapshot
    if sn is not None:
        lines += [
            f"CreateSnapshot {sn.snapshot_id}: {sn.keys} keys {sn.counts}, file "
            f"{sn.file_bytes} bytes (+ {sn.manifest_bytes}-byte JSON manifest) in "
            f"{len(sn.locations)} location(s); {sn.timing.total_s:.3f}s request to last "
            f"message ({sn.keys_per_s:.0f} keys/s)",
            *_phases_lines(sn.timing),
        ]
    rs = report.restore_snapshot
    if rs is not None:
        lines += [
            f"RestoreSnapshot(wipe=true): {rs.restored} keys restored, {rs.wiped} wiped; "
            f"{rs.timing.total_s:.3f}s request to last message ({rs.overall_keys_per_s:.0f} "
            f"keys/s overall; wiping {rs.wipe_keys_per_s:.0f} keys/s, restoring "
            f"{rs.restore_keys_per_s:.0f} keys/s)",
            *_phases_lines(rs.timing),
        ]
    a = report.after_restore
    if a:
        lines.append(
            f"After the restore: {a['key_backups_listed']}/{a['key_backups_expected']} key "
            f"backups and {a['breakers_listed']}/{a['breakers_expected']} breakers listed; "
            f"{a['sample_restored']} sampled keys restored, {a['sample_mismatched']} "
            f"mismatched, copy used {a['sample_copy_used']}"
        )
    d = report.drill
    if d is not None:
        lines += [
            "",
            f"3. Drill on snapshot {d.snapshot_id}",
            f"RTO {d.rto_s:.3f}s, RPO {d.rpo_s:.1f}s, keys {d.keys}, mismatched "
            f"{d.mismatched}, changed since {d.changed_since}; RunDrill took "
            f"{d.timing.total_s:.3f}s request to last message",
            *_phases_lines(d.timing),
        ]
        if d.differences:
            lines.append(f"    first differences: {d.differences}")
    if report.cpu:
        lines += [
            "",
            "CPU seconds per step (from /proc; cores busy = CPU seconds / wall seconds)",
            f"{'step':<16} {'wall s':>8} {'replica s':>10} {'etcd s':>8} {'client s':>9} "
            f"{'replica cores':>14} {'all cores':>10}",
        ]
        for name, c in report.cpu.items():
            every = c.replica_s + c.etcd_s + c.client_s
            lines.append(
                f"{name:<16} {c.wall_s:>8.2f} {c.replica_s:>10.2f} {c.etcd_s:>8.2f} "
                f"{c.client_s:>9.2f} {c.replica_s / c.wall_s:>14.2f} {every / c.wall_s:>10.2f}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--help`` documents each."""
    parser = bench_parser(
        "backup_bench.py",
        "Measure Bulwark's key backups and snapshots on one local replica (embedded "
        "etcd): (1) BackupKey then RestoreKey throughput (keys/s) and p50/p99 for --keys "
        "keys with --concurrency calls in flight, every material checked; (2) "
        "CreateSnapshot and RestoreSnapshot(wipe=true) times, by phase, of that state "
        "plus --breakers breakers; (3) RunDrill's RTO, RPO and mismatches on that "
        "snapshot. Everything runs on 127.0.0.1; client and server share the CPUs.",
    )
    parser.add_argument("--keys", type=int, default=10_000, help="keys backed up and restored")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="BackupKey/RestoreKey/PutBreaker calls kept in flight (one grpc.aio channel)",
    )
    parser.add_argument(
        "--material-bytes",
        type=int,
        default=32,
        help="bytes of random key material per key (1-65536)",
    )
    parser.add_argument(
        "--breakers",
        type=int,
        default=1000,
        help="breakers created with PutBreaker before the snapshot (configuration state)",
    )
    parser.add_argument(
        "--verify-sample",
        type=int,
        default=100,
        help="keys restored and compared again after the snapshot restore",
    )
    parser.add_argument(
        "--backup-dir",
        type=Path,
        default=None,
        help="put the replica's backup directory (--backup-dirs) in a fresh subdirectory "
        "of this one, removed at the end (e.g. /dev/shm to take the disk out of the copies); "
        "default DATA_DIR/backups in the temporary data dir, on the same disk as etcd",
    )
    add_json_option(parser)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "keys", "concurrency")
    if not 1 <= args.material_bytes <= 64 * 1024:
        parser.error("--material-bytes must be 1-65536 (BackupKey's limits)")
    if args.breakers < 0 or args.verify_sample < 0:
        parser.error("--breakers and --verify-sample must not be negative")
    return args


def benchmark(args: argparse.Namespace) -> Report:
    """Start the replica, run the three parts, stop it; return the report."""
    machine = machine_info()
    root = tempfile.mkdtemp(prefix="bulwark-backup-bench-")
    data_dir = Path(root) / "replica"
    if args.backup_dir:
        # A fresh directory inside it: copies left by another run would count as versions.
        args.backup_dir.mkdir(parents=True, exist_ok=True)
        backup_dir = Path(tempfile.mkdtemp(prefix="bulwark-backup-bench-", dir=args.backup_dir))
    else:
        backup_dir = data_dir.resolve() / "backups"
    report = Report(
        started_utc=utc_now(),
        machine=machine,
        note=(
            f"client, replica and etcd share this {machine['cpus']}-core machine on "
            "127.0.0.1"
            + ("." if args.backup_dir else ", and etcd and the backup directory share its disk.")
        ),
        settings={
            "keys": args.keys,
            "concurrency": args.concurrency,
            "material_bytes": args.material_bytes,
            "breakers": args.breakers,
            "verify_sample": args.verify_sample,
            "backup_dir": str(backup_dir) if args.backup_dir else "DATA_DIR/backups (default)",
        },
    )
    extra = ["--snapshot-interval", "0"]
    if args.backup_dir:
        extra += ["--backup-dirs", str(backup_dir)]
    replica: BulwarkProcess | None = None
    try:
        _progress("starting Bulwark replica (embedded etcd, no snapshot schedule)...")
        replica = BulwarkProcess(str(data_dir), name="replica", extra_args=extra)
        address = replica.wait_address()
        probe_getleader(address)
        _progress(f"replica serving on {address}")
        asyncio.run(run_parts(address, args, report, CpuMeter(replica.proc.pid)))
        replica.check_alive()
    finally:
        if replica is not None:
            try:
                replica.stop()
            except Exception as exc:
                _progress(f"stopping the replica failed: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        if args.backup_dir:
            shutil.rmtree(backup_dir, ignore_errors=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables (or JSON)."""
    return run_and_print(
        parse_args(argv), benchmark, format_report, _progress, "the replica is stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
