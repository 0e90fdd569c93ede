"""``bulwark snapshot create|list|restore`` and ``bulwark drill``: backups of a deployment."""

from __future__ import annotations

import argparse
import sys

import grpc

from bulwark_server.cli.channel import add_client_arguments, server_target


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``snapshot`` with its commands, and ``drill``."""
    snapshot = commands.add_parser(
        "snapshot",
        help="take, list or restore snapshots of Bulwark's state",
        description=(
            "Snapshots hold every Bulwark key at one etcd revision, sealed with the "
            "key-encryption key and written to each backup directory of the replica. "
            "Progress goes to stderr, the result to stdout."
        ),
    )
    snapshot.set_defaults(snapshot_help=snapshot.print_help, handler=run_snapshot)
    snapshot_commands = snapshot.add_subparsers(dest="snapshot_command", metavar="COMMAND")
    snap_create = snapshot_commands.add_parser("create", help="take a snapshot now (operator)")
    add_client_arguments(snap_create)
    snap_list = snapshot_commands.add_parser("list", help="list snapshots, newest first")
    add_client_arguments(snap_list)
    snap_restore = snapshot_commands.add_parser(
        "restore",
        help="restore a snapshot (admin)",
        description=(
            "Verify a snapshot, then restore it in dependency order. Refused when Bulwark "
            "already holds keys, unless --wipe deletes them first."
        ),
    )
    snap_restore.add_argument("id", nargs="?", default="", help="snapshot id (default: latest)")
    snap_restore.add_argument(
        "--wipe", action="store_true", help="delete the current keys first (except leased ones)"
    )
    add_client_arguments(snap_restore)
    drill = commands.add_parser(
        "drill",
        help="restore a snapshot into scratch space and report RTO and RPO (admin)",
        description=(
            "Restore a snapshot (default: the latest) into a scratch prefix, compare it with "
            "the snapshot and with the live state, delete the scratch, and report the "
            "recovery time (RTO) and the snapshot's age (RPO)."
        ),
    )
    drill.add_argument("id", nargs="?", default="", help="snapshot id (default: latest)")
    add_client_arguments(drill)
    drill.set_defaults(handler=run_drill)
    for sub in (snap_create, snap_list, snap_restore, drill):
        sub.add_argument(
            "--timeout", type=float, default=600.0, help="seconds to wait (default 600)"
        )


def run_snapshot(args: argparse.Namespace) -> int:
    """Run the ``snapshot`` command named; its help and 2 when none is."""
    if args.snapshot_command is None:
        args.snapshot_help()
        return 2
    return _recovery(args, args.snapshot_command)


def run_drill(args: argparse.Namespace) -> int:
    """``bulwark drill``: restore into scratch space and print the report."""
    return _recovery(args, "drill")


class ProgressLine:
    """One progress line on stderr: redrawn in place on a terminal, a line per phase otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._phase = ""

    def show(self, phase: str, done: int, total: int) -> None:
        """Show ``phase`` at ``done`` of ``total`` (a total of 0: no count known)."""
        if self._tty:
            width = 30
            filled = width * done // total if total else 0
            bar = "#" * filled + "." * (width - filled)
            count = f"{done}/{total}" if total else ""
            print(f"\r{phase:<10} [{bar}] {count:<15}", end="", file=sys.stderr, flush=True)
        elif phase != self._phase:
            print(f"{phase}...", file=sys.stderr, flush=True)
        self._phase = phase

    def close(self) -> None:
        """End the redrawn line, so what follows starts on a line of its own."""
        if self._tty and self._phase:
            print(file=sys.stderr)


def _recovery(args: argparse.Namespace, command: str) -> int:
    """``bulwark snapshot create|list|restore`` and ``bulwark drill`` against a replica."""
    from google.protobuf import json_format

    from bulwark.v1 import recovery_pb2, recovery_pb2_grpc

    me = f"bulwark {'drill' if command == 'drill' else 'snapshot ' + command}"
    try:
        target = server_target(args)
    except (ValueError, OSError) as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    options = {"timeout": args.timeout, "metadata": target.metadata}
    progress = ProgressLine()
    try:
        with target.channel() as channel:
            stub = recovery_pb2_grpc.RecoveryServiceStub(channel)
            if command == "list":
                for snap in stub.ListSnapshots(
                    recovery_pb2.ListSnapshotsRequest(), **options
                ).snapshots:
                    print(
                        f"{snap.id}  revision {snap.revision}  {snap.keys} keys  "
                        f"by {snap.created_by}  in {len(snap.locations)} locations"
                    )
                return 0
            if command == "create":
                stream = stub.CreateSnapshot(recovery_pb2.CreateSnapshotRequest(), **options)
            elif command == "restore":
                stream = stub.RestoreSnapshot(
                    recovery_pb2.RestoreSnapshotRequest(snapshot_id=args.id, wipe=args.wipe),
                    **options,
                )
            else:
                stream = stub.RunDrill(recovery_pb2.RunDrillRequest(snapshot_id=args.id), **options)
            last = None
            for message in stream:
                progress.show(message.progress.phase, message.progress.done, message.progress.total)
                last = message
            progress.close()
    except grpc.RpcError as exc:
        progress.close()
        code = exc.code().name  # type: ignore[attr-defined]
        print(f"{me}: {args.server}: {code}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    if last is not None:
        result = last.report if command == "drill" else last
        print(json_format.MessageToJson(result, preserving_proto_field_name=True))
    return 0
