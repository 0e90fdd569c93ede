"""The ``bulwark`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bulwark import __version__
from bulwark_server import config

log = logging.getLogger("bulwark_server")


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
    import_.add_argument(
        "--server",
        default="127.0.0.1:50051",
        help="host:port of any Bulwark replica (default 127.0.0.1:50051)",
    )
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
    instance.add_argument(
        "--server",
        default="127.0.0.1:50051",
        help="host:port of any Bulwark replica (default 127.0.0.1:50051)",
    )
    instance.add_argument(
        "--timeout", type=float, default=2.0, help="seconds per call to the server (default 2)"
    )
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
    if args.command == "limits":
        if args.limits_command == "import":
            return _import_limits(args)
        args.limits_help()
        return 2
    parser.print_help()
    return 2


def _import_limits(args: argparse.Namespace) -> int:
    """``bulwark limits import FILE``: PutLimit each limit of the file; print what was done."""
    import grpc

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
        entries = load_file(args.file)
    except EnvoyConfigError as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    done = 0
    with grpc.insecure_channel(args.server) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        for entry in entries:
            limit = entry.limit
            try:
                try:
                    stored = stub.GetLimit(
                        ratelimit_pb2.GetLimitRequest(domain=limit.domain, name=limit.name),
                        timeout=args.timeout,
                    ).limit
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                        raise
                    stored = None
                if stored is not None and same_limit(stored, limit):
                    print(f"unchanged {describe(limit)}")
                else:
                    put = stub.PutLimit(
                        ratelimit_pb2.PutLimitRequest(limit=limit), timeout=args.timeout
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
    return instance_agent.run(args.server, record, args.timeout)


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
