"""``bulwark instance``: keep one service instance registered until stopped."""

from __future__ import annotations

import argparse
import sys

from bulwark_server.cli.channel import add_client_arguments, server_target


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``instance``."""
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
    instance.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Register, heartbeat, report role changes; deregister on SIGTERM or SIGINT."""
    from bulwark.v1 import registry_pb2
    from bulwark_server.cli import instance_agent

    me = "bulwark instance"
    try:
        target = server_target(args)
    except (ValueError, OSError) as exc:
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
    return instance_agent.run(target, record, args.timeout)
