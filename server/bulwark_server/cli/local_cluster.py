"""``bulwark local-cluster``: etcd members and replicas on loopback until Ctrl-C."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``local-cluster``."""
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
    cluster.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the cluster until SIGINT or SIGTERM."""
    from bulwark_server.loopback.deployment import run_local_cluster

    return run_local_cluster(
        replicas=args.replicas,
        etcd_members=args.etcd_members,
        root=args.dir,
        lease_ttl=args.lease_ttl,
    )
