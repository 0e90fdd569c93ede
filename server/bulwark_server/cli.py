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
