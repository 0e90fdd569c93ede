"""``bulwark serve``: run a Bulwark replica."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from bulwark_server import config

log = logging.getLogger("bulwark_server")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``, whose flags are the settings of :mod:`bulwark_server.config`."""
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
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; 2 for bad settings, 1 when the replica cannot start."""
    flags = {opt.name: getattr(args, opt.name) for opt in config.OPTIONS}
    try:
        settings = config.load(flags)
    except config.SettingsError as exc:
        print(f"bulwark serve: {exc}", file=sys.stderr)
        return 2
    from bulwark_server.observability import setup_logging
    from bulwark_server.runner import serve

    setup_logging(settings)
    # Young collections every 20,000 allocations, not 700: at 700, objects of the
    # calls in flight at each one outlived two and were counted toward a full
    # collection, which came every few seconds under load and, with 100,000 limits
    # held, paused the event loop 250-650 ms each time (measured; at 20,000, one
    # in a 4-minute load of 100,000 limits, which ran 20 % faster).
    gc.set_threshold(20_000, 10, 10)
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
