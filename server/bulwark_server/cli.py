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
    parser.print_help()
    return 2


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
