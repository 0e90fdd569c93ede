"""The ``bulwark`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from bulwark import __version__
from bulwark_server import config

log = logging.getLogger("bulwark_server")


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """--server and how to reach it securely: CA, client certificate, bearer token."""
    parser.add_argument(
        "--server",
        default="127.0.0.1:50051",
        help="host:port of any Bulwark replica (default 127.0.0.1:50051)",
    )
    parser.add_argument("--ca", help="PEM CA bundle to verify the server; turns TLS on")
    parser.add_argument("--cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--key", help="PEM private key of --cert")
    parser.add_argument(
        "--token",
        default=os.environ.get("BULWARK_TOKEN"),
        help="bearer token to send [env BULWARK_TOKEN]",
    )


def client_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from --ca/--cert/--key, or None for plaintext."""
    if not args.ca:
        if args.cert or args.key:
            raise ValueError("--cert and --key need --ca (client certificates go over TLS)")
        return None
    if bool(args.cert) != bool(args.key):
        raise ValueError("set both --cert and --key")
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    return grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))


def client_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {args.token}"),) if args.token else ()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulwark",
        description=(
            "Bulwark, the resilience control plane: circuit breakers, bulkheads, rate "
            "limits and primaries shared by a whole fleet, kept in etcd."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bulwark {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run a Bulwark replica",
        description=(
            "Run a Bulwark replica. Every flag can also be set with the environment "
            "variable shown beside it; flags win. With no etcd endpoints, a private etcd "
            "is started on 127.0.0.1 with its data under --data-dir."
        ),
    )
    config.add_arguments(serve)

    cluster = commands.add_parser(
        "local-cluster",
        help="run 3 etcd members and 3 replicas on loopback until Ctrl-C",
        description=(
            "Start an etcd cluster and Bulwark replicas on 127.0.0.1 with free ports, "
            "print their addresses, and stop them all on Ctrl-C or SIGTERM."
        ),
    )
    cluster.add_argument("--replicas", type=int, default=3, help="Bulwark replicas (default 3)")
    cluster.add_argument("--etcd-members", type=int, default=3, help="etcd members (default 3)")
    cluster.add_argument(
        "--dir",
        default="var/local-cluster",
        help="folder for data and logs (default var/local-cluster)",
    )
    cluster.add_argument("--lease-ttl", type=int, default=2, help="replica lease TTL in seconds")

    limits = commands.add_parser(
        "limits",
        help="manage rate limits",
        description="Manage the rate limits of a running Bulwark deployment.",
    )
    limits.set_defaults(limits_help=limits.print_help)
    limit_commands = limits.add_subparsers(dest="limits_command", metavar="COMMAND")
    import_ = limit_commands.add_parser(
        "import",
        help="create or update the limits of an envoyproxy/ratelimit YAML file",
        description=(
            "Read an envoyproxy/ratelimit configuration file (domain, descriptors, "
            "rate_limit ...) and create or update one Bulwark limit per rule with "
            "PutLimit. Limits already stored exactly so are left alone; limits not in "
            "the file are never deleted. Exits 2 for a bad file (nothing is written), "
            "1 when the server refuses a limit (the earlier ones stay written)."
        ),
    )
    import_.add_argument("file", metavar="FILE", help="the YAML file")
    add_client_arguments(import_)
    import_.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per call to the server (default 5)"
    )

    instance = commands.add_parser(
        "instance",
        help="keep one service instance registered until stopped",
        description=(
            "Register an instance with the registry, heartbeat every third of its TTL, "
            "and print a JSON line on stdout whenever its role or epoch changes. A "
            "switchover's drain request is answered with DRAINING at once. SIGTERM or "
            "Ctrl-C deregisters it. For processes that cannot embed the client library."
        ),
    )
    instance.add_argument("--service", required=True, help="service name")
    instance.add_argument("--id", required=True, help="instance id, unique within the service")
    instance.add_argument("--address", required=True, help="where callers reach it (host:port)")
    instance.add_argument("--zone", default="", help="its zone")
    instance.add_argument("--region", default="", help="its region")
    instance.add_argument(
        "--priority", type=int, default=0, help="promotion preference, higher first (default 0)"
    )
    instance.add_argument(
        "--ttl", type=int, default=10, help="lease TTL in seconds, 2-300 (default 10)"
    )
    instance.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label (repeatable)",
    )
    add_client_arguments(instance)
    instance.add_argument(
        "--timeout", type=float, default=2.0, help="seconds per call to the server (default 2)"
    )

    certs = commands.add_parser(
        "certs",
        help="make a local CA and certificates for mutual TLS",
        description=(
            "Make a private CA, a server certificate and client certificates whose "
            "organizational unit carries the caller's role (dataplane, operator, admin). "
            "For trials and small deployments; use your own PKI where you have one."
        ),
    )
    certs.set_defaults(certs_help=certs.print_help)
    cert_commands = certs.add_subparsers(dest="certs_command", metavar="COMMAND")
    init = cert_commands.add_parser(
        "init",
        help="create DIR with ca.pem, server.pem and client certificates",
        description="Create a new CA in DIR (never overwriting one) and issue certificates.",
    )
    init.add_argument("dir", metavar="DIR", help="folder to create (keys are mode 0600)")
    init.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or IP the server is reached by (repeatable; default localhost, "
        "127.0.0.1, ::1)",
    )
    init.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME:ROLE",
        help="a client certificate to issue (repeatable; default admin:admin, "
        "operator:operator, dataplane:dataplane)",
    )
    issue = cert_commands.add_parser(
        "issue",
        help="issue more client certificates from the CA in DIR",
        description="Issue client certificates signed by DIR/ca.pem and DIR/ca-key.pem.",
    )
    issue.add_argument("dir", metavar="DIR", help="folder made by `bulwark certs init`")
    issue.add_argument(
        "--client", action="append", required=True, metavar="NAME:ROLE", help="repeatable"
    )

    snapshot = commands.add_parser(
        "snapshot",
        help="take, list or restore snapshots of Bulwark's state",
        description=(
            "Snapshots hold every Bulwark key at one etcd revision, sealed with the "
            "key-encryption key and written to each backup directory of the replica. "
            "Progress goes to stderr, the result to stdout."
        ),
    )
    snapshot.set_defaults(snapshot_help=snapshot.print_help)
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
    for sub in (snap_create, snap_list, snap_restore, drill):
        sub.add_argument(
            "--timeout", type=float, default=600.0, help="seconds to wait (default 600)"
        )

    token = commands.add_parser(
        "token",
        help="create a bearer token directly in etcd (bootstrap)",
        description=(
            "Create a bearer token by writing its digest to etcd directly, for the first "
            "admin token of a deployment (later ones: AuthService/CreateToken). Prints "
            "the token once. Needs the etcd endpoints (and TLS files) the replicas use."
        ),
    )
    token_commands = token.add_subparsers(dest="token_command", metavar="COMMAND")
    create = token_commands.add_parser("create", help="create a token and print it")
    create.add_argument("--name", required=True, help="who or what it is for")
    create.add_argument(
        "--role", required=True, choices=("dataplane", "operator", "admin"), help="its role"
    )
    create.add_argument("--ttl-days", type=float, help="days it works (default: until revoked)")
    for name in ("etcd_endpoints", "etcd_ca", "etcd_cert", "etcd_key", "etcd_timeout"):
        opt = next(o for o in config.OPTIONS if o.name == name)
        create.add_argument(opt.flag, dest=name, default=None, help=f"{opt.help} [env {opt.env}]")
    token.set_defaults(token_help=token.print_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "local-cluster":
        from bulwark_server.localcluster import run_local_cluster

        return run_local_cluster(
            replicas=args.replicas,
            etcd_members=args.etcd_members,
            root=args.dir,
            lease_ttl=args.lease_ttl,
        )
    if args.command == "instance":
        return _run_instance(args)
    if args.command == "certs":
        return _certs(args)
    if args.command == "snapshot":
        if args.snapshot_command is None:
            args.snapshot_help()
            return 2
        return _recovery(args, args.snapshot_command)
    if args.command == "drill":
        return _recovery(args, "drill")
    if args.command == "token":
        if args.token_command == "create":
            return _create_token(args)
        args.token_help()
        return 2
    if args.command == "limits":
        if args.limits_command == "import":
            return _import_limits(args)
        args.limits_help()
        return 2
    parser.print_help()
    return 2


class ProgressLine:
    """One progress line on stderr: redrawn in place on a terminal, a line per phase otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._phase = ""

    def show(self, phase: str, done: int, total: int) -> None:
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
        if self._tty and self._phase:
            print(file=sys.stderr)


def _recovery(args: argparse.Namespace, command: str) -> int:
    """``bulwark snapshot create|list|restore`` and ``bulwark drill`` against a replica."""
    from google.protobuf import json_format

    from bulwark.v1 import recovery_pb2, recovery_pb2_grpc

    me = f"bulwark {'drill' if command == 'drill' else 'snapshot ' + command}"
    try:
        config.split_host_port(args.server, "--server")
        credentials = client_credentials(args)
    except (ValueError, OSError) as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    channel = (
        grpc.insecure_channel(args.server)
        if credentials is None
        else grpc.secure_channel(args.server, credentials)
    )
    options = {"timeout": args.timeout, "metadata": client_metadata(args)}
    progress = ProgressLine()
    try:
        with channel:
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


def _client_pair(name_role: str) -> tuple[str, str]:
    name, sep, role = name_role.partition(":")
    if not sep or not name or not role:
        raise ValueError(f"--client: expected NAME:ROLE, got {name_role!r}")
    return name, role


def _certs(args: argparse.Namespace) -> int:
    """``bulwark certs init|issue``: write a CA and certificates; print what was written."""
    from bulwark_server.security import certs

    me = f"bulwark certs {args.certs_command or ''}".strip()
    if args.certs_command not in ("init", "issue"):
        args.certs_help()
        return 2
    try:
        directory = Path(args.dir)
        if args.certs_command == "init":
            clients = [_client_pair(c) for c in args.client] or [
                ("admin", "admin"),
                ("operator", "operator"),
                ("dataplane", "dataplane"),
            ]
            hosts = args.host or ["localhost", "127.0.0.1", "::1"]
            written = certs.write_bundle(directory, hosts, clients)
        else:
            written = certs.issue_more(directory, [_client_pair(c) for c in args.client])
    except (ValueError, OSError) as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    for label, path in written.items():
        print(f"{label:>16}  {path}")
    if args.certs_command == "init":
        print(
            f"\nserve with: bulwark serve --tls-cert {directory / 'server.pem'} "
            f"--tls-key {directory / 'server-key.pem'} --tls-client-ca {directory / 'ca.pem'}"
        )
    return 0


def _create_token(args: argparse.Namespace) -> int:
    """``bulwark token create``: write a token's digest to etcd; print the token once."""
    from bulwark_server.security.roles import Role
    from bulwark_server.security.tls import etcd_tls
    from bulwark_server.security.tokens import TokenStore
    from bulwark_server.store import EtcdStore

    me = "bulwark token create"
    flags = {
        name: getattr(args, name)
        for name in ("etcd_endpoints", "etcd_ca", "etcd_cert", "etcd_key", "etcd_timeout")
    }
    try:
        settings = config.load(flags)
    except config.SettingsError as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    if not settings.etcd_endpoints:
        print(
            f"{me}: --etcd-endpoints (or BULWARK_ETCD_ENDPOINTS) is required: the token "
            "goes into the etcd the replicas use",
            file=sys.stderr,
        )
        return 2
    role = Role.parse(args.role)
    assert role is not None  # argparse choices
    if args.ttl_days is not None and args.ttl_days <= 0:
        print(f"{me}: --ttl-days must be more than 0", file=sys.stderr)
        return 2
    ttl = args.ttl_days * 86400 if args.ttl_days is not None else None

    async def create() -> str:
        store = EtcdStore(
            settings.etcd_endpoints, timeout=settings.etcd_timeout, tls=etcd_tls(settings)
        )
        await store.start(wait=settings.etcd_timeout * 3)
        try:
            token, _ = await TokenStore(store).create(args.name, role, "bulwark token create", ttl)
            return token
        finally:
            await store.close()

    from bulwark_server.errors import BulwarkError

    try:
        print(asyncio.run(create()))
    except BulwarkError as exc:
        print(f"{me}: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _import_limits(args: argparse.Namespace) -> int:
    """``bulwark limits import FILE``: PutLimit each limit of the file; print what was done."""
    from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc
    from bulwark_server.ratelimits.envoy_config import (
        EnvoyConfigError,
        describe,
        load_file,
        same_limit,
    )

    me = "bulwark limits import"
    try:
        config.split_host_port(args.server, "--server")
    except ValueError as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    try:
        credentials = client_credentials(args)
        entries = load_file(args.file)
    except (EnvoyConfigError, ValueError, OSError) as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    metadata = client_metadata(args)
    done = 0
    channel = (
        grpc.insecure_channel(args.server)
        if credentials is None
        else grpc.secure_channel(args.server, credentials)
    )
    with channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        for entry in entries:
            limit = entry.limit
            try:
                try:
                    stored = stub.GetLimit(
                        ratelimit_pb2.GetLimitRequest(domain=limit.domain, name=limit.name),
                        timeout=args.timeout,
                        metadata=metadata,
                    ).limit
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                        raise
                    stored = None
                if stored is not None and same_limit(stored, limit):
                    print(f"unchanged {describe(limit)}")
                else:
                    put = stub.PutLimit(
                        ratelimit_pb2.PutLimitRequest(limit=limit),
                        timeout=args.timeout,
                        metadata=metadata,
                    )
                    action = "created" if put.created else "updated"
                    print(f"{action} {describe(put.limit)} (revision {put.limit.revision})")
            except grpc.RpcError as exc:
                code = exc.code().name  # type: ignore[attr-defined]
                print(
                    f"{me}: {args.server} refused {limit.domain}/{limit.name} "
                    f"({entry.path}): {code}: {exc.details()}; "  # type: ignore[attr-defined]
                    f"stopped after {done} of {len(entries)} limits",
                    file=sys.stderr,
                )
                return 1
            done += 1
    print(f"imported {done} limits from {args.file} into {args.server}")
    return 0


def _run_instance(args: argparse.Namespace) -> int:
    """``bulwark instance``: register, heartbeat, report role changes; deregister on exit."""
    from bulwark.v1 import registry_pb2
    from bulwark_server import instance_agent

    me = "bulwark instance"
    try:
        config.split_host_port(args.server, "--server")
    except ValueError as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    metadata = {}
    for item in args.metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"{me}: --metadata: expected KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        metadata[key] = value
    record = registry_pb2.Instance(
        service=args.service,
        id=args.id,
        address=args.address,
        zone=args.zone,
        region=args.region,
        priority=args.priority,
        metadata=metadata,
    )
    record.ttl.FromSeconds(args.ttl)
    try:
        credentials = client_credentials(args)
    except (ValueError, OSError) as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    return instance_agent.run(args.server, record, args.timeout, credentials, client_metadata(args))


def _serve(args: argparse.Namespace) -> int:
    flags = {opt.name: getattr(args, opt.name) for opt in config.OPTIONS}
    try:
        settings = config.load(flags)
    except config.SettingsError as exc:
        print(f"bulwark serve: {exc}", file=sys.stderr)
        return 2
    from bulwark_server.observability import setup_logging
    from bulwark_server.runner import serve

    setup_logging(settings)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        log.error("cannot start: %s", exc, extra={"event": "start_failed"})
        return 1
    except Exception as exc:
        from bulwark_server.errors import BulwarkError

        if isinstance(exc, BulwarkError | RuntimeError):
            log.error("cannot start: %s", exc, extra={"event": "start_failed"})
            return 1
        raise
    return 0
