"""``bulwark limits``: manage the rate limits of a running deployment."""

from __future__ import annotations

import argparse
import sys

import grpc

from bulwark_server.cli.channel import add_client_arguments, server_target


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``limits`` and its ``import`` command."""
    limits = commands.add_parser(
        "limits",
        help="manage rate limits",
        description="Manage the rate limits of a running Bulwark deployment.",
    )
    limits.set_defaults(limits_help=limits.print_help, handler=run)
    limit_commands = limits.add_subparsers(dest="limits_command", metavar="COMMAND")
    import_ = limit_commands.add_parser(
        "import",
        help="create or update the limits of an envoyproxy/ratelimit YAML file",
        description=(
            "Read an envoyproxy/ratelimit configuration file (domain, descriptors, "
            "rate_limit ...) and create or update one Bulwark limit per rule with "
            "PutLimit; a rate_limit with x-bulwark-algorithm: token_bucket (and "
            "x-bulwark-burst: N) counts as a token bucket instead of a fixed window. "
            "Limits already stored exactly so are left alone; limits not in "
            "the file are never deleted. Exits 2 for a bad file (nothing is written), "
            "1 when the server refuses a limit (the earlier ones stay written)."
        ),
    )
    import_.add_argument("file", metavar="FILE", help="the YAML file")
    add_client_arguments(import_)
    import_.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per call to the server (default 5)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the ``limits`` command named; its help and 2 when none is."""
    if args.limits_command == "import":
        return import_limits(args)
    args.limits_help()
    return 2


def import_limits(args: argparse.Namespace) -> int:
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
        target = server_target(args)
        entries = load_file(args.file)
    except (EnvoyConfigError, ValueError, OSError) as exc:
        print(f"{me}: {exc}", file=sys.stderr)
        return 2
    metadata = target.metadata
    done = 0
    with target.channel() as channel:
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
