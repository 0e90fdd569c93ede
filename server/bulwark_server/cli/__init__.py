"""The ``bulwark`` command: one module per command group, dispatched from :func:`main`.

Each command module adds its parser with ``add_parser`` (``add_parsers`` for
:mod:`.recovery`, which has two top-level commands) and sets the ``handler``
default that runs it; :mod:`.channel` holds the client flags every command
that calls a replica shares.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bulwark_server import __version__
from bulwark_server.cli import (
    certs,
    chaos,
    instance,
    limits,
    loadtest,
    local_cluster,
    recovery,
    serve,
    token,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``bulwark`` parser, its commands in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="bulwark",
        description=(
            "Bulwark, the resilience control plane: circuit breakers, bulkheads, rate "
            "limits and primaries shared by a whole fleet, kept in etcd."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bulwark {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_parser(commands)
    local_cluster.add_parser(commands)
    limits.add_parser(commands)
    instance.add_parser(commands)
    certs.add_parser(commands)
    recovery.add_parsers(commands)
    token.add_parser(commands)
    chaos.add_parser(commands)
    loadtest.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bulwark`` with ``argv`` (default: the process's arguments); the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # As parse_args would, but through the command's own parser when it has one,
        # so a command with its own usage-error status (loadtest: 64) keeps it.
        command_parser = getattr(args, "command_parser", None) or parser
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    status: int = handler(args)
    return status
