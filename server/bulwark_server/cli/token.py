"""``bulwark token create``: the first bearer token of a deployment, written to etcd directly."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bulwark_server import config

# The settings the command needs to reach the etcd the replicas use.
ETCD_SETTINGS = ("etcd_endpoints", "etcd_ca", "etcd_cert", "etcd_key", "etcd_timeout")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``token`` and its ``create`` command."""
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
    create.add_argument(
        "--max-priority",
        choices=("sheddable", "default", "critical"),
        default="default",
        help="the highest bulwark-priority its calls may claim (default: default)",
    )
    for name in ETCD_SETTINGS:
        opt = next(o for o in config.OPTIONS if o.name == name)
        create.add_argument(opt.flag, dest=name, default=None, help=f"{opt.help} [env {opt.env}]")
    token.set_defaults(token_help=token.print_help, handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the ``token`` command named; its help and 2 when none is."""
    if args.token_command == "create":
        return create_token(args)
    args.token_help()
    return 2


def create_token(args: argparse.Namespace) -> int:
    """``bulwark token create``: write a token's digest to etcd; print the token once."""
    from bulwark_server.security.priority import Priority
    from bulwark_server.security.roles import Role
    from bulwark_server.security.tls import etcd_tls
    from bulwark_server.security.tokens import TokenStore
    from bulwark_server.store import EtcdStore

    me = "bulwark token create"
    flags = {name: getattr(args, name) for name in ETCD_SETTINGS}
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
    most = Priority[args.max_priority.upper()].value

    async def create() -> str:
        store = EtcdStore(
            settings.etcd_endpoints, timeout=settings.etcd_timeout, tls=etcd_tls(settings)
        )
        await store.start(wait=settings.etcd_timeout * 3)
        try:
            token, _ = await TokenStore(store).create(
                args.name, role, "bulwark token create", ttl, max_priority=most
            )
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
