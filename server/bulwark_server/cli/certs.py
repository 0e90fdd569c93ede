"""``bulwark certs``: a local CA and certificates for mutual TLS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs`` and its ``init`` and ``issue`` commands."""
    certs = commands.add_parser(
        "certs",
        help="make a local CA and certificates for mutual TLS",
        description=(
            "Make a private CA, a server certificate and client certificates whose "
            "organizational unit carries the caller's role (dataplane, operator, admin). "
            "For trials and small deployments; use your own PKI where you have one."
        ),
    )
    certs.set_defaults(certs_help=certs.print_help, handler=run)
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


def _client_pair(name_role: str) -> tuple[str, str]:
    name, sep, role = name_role.partition(":")
    if not sep or not name or not role:
        raise ValueError(f"--client: expected NAME:ROLE, got {name_role!r}")
    return name, role


def run(args: argparse.Namespace) -> int:
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
