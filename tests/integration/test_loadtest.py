"""``bulwark loadtest`` against a real replica, as chaos experiments run it: a
subprocess (``python -m bulwark_server loadtest ... -O json``) whose report must match
what the replica saw, whose ``--fail-if`` sets its exit status, and whose
``--report-as`` signals reach Bulwark."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jsonschema

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc, registry_pb2_grpc, signals_pb2
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember

SCHEMA = json.loads((Path(__file__).parents[1] / "loadtest_report.schema.json").read_text())
CHECK = "bulwark.v1.RateLimitService/Check"
DAY = 100_000  # the limit's requests a day: far above what the test sends


def loadtest(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulwark_server", "loadtest", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def report_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert "Traceback" not in done.stderr, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, SCHEMA)
    return document


def check_data(user: str) -> str:
    return json.dumps(
        {"domain": "lt", "descriptors": [{"entries": [{"key": "user", "value": user}]}]}
    )


def remaining(stub: ratelimit_pb2_grpc.RateLimitServiceStub, user: str) -> int:
    """What is left of ``user``'s day (a check that charges nothing)."""
    request = ratelimit_pb2.CheckRequest(domain="lt", hits=0)
    request.descriptors.add().entries.add(key="user", value=user)
    return int(stub.Check(request, timeout=5).results[0].remaining)


def test_the_report_counts_what_the_replica_saw_and_thresholds_set_the_status(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], tmp_path: Path
) -> None:
    replica = replica_factory("lt1", [etcd.endpoint])
    with grpc.insecure_channel(replica.address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        limit = ratelimit_pb2.Limit(
            domain="lt",
            name="per-user",
            descriptor=[ratelimit_pb2.DescriptorEntry(key="user")],
            rate=ratelimit_pb2.Rate(requests_per_unit=DAY, unit=ratelimit_pb2.RATE_UNIT_DAY),
            algorithm=ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW,
        )
        stub.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=5)

        # A closed loop of 150 calls for one user; a met threshold: exit 0.
        done = loadtest(
            replica.address, "--call", CHECK, "-d", check_data("alice"), "-n", "150", "-c", "6",
            "-O", "json", "--fail-if", "p99>60s", "--fail-if", "error_rate>0%",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = report_of(done)
        assert (report["count"], report["errors"], report["endReason"]) == (150, 0, "normal")
        assert report["statusCodeDistribution"] == {"OK": 150}
        assert report["errorDistribution"] == {}
        assert report["latencyFrom"] == "send" and report["options"]["concurrency"] == 6
        assert report["fastest"] <= report["latencyDistribution"][2]["latency"] <= report["slowest"]
        assert [t["breached"] for t in report["thresholds"]] == [False, False]
        assert remaining(stub, "alice") == DAY - 150  # each call reached the replica once

        # Open loop, templated users u0-u2, the ghz-style call name; a breached
        # threshold (fewer than a million calls a second): exit 2, the report written.
        output = tmp_path / "paced.json"
        done = loadtest(
            replica.address, "--call", CHECK.replace("/", "."),
            "-d", check_data("u{{randomInt 0 3}}"), "--rps", "200", "-n", "60",
            "-O", "json", "-o", str(output), "--fail-if", "rps<1000000", "--fail-if", "p99>60s",
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "threshold breached: rps<1000000" in done.stderr and done.stdout == ""
        paced = json.loads(output.read_text())
        jsonschema.validate(paced, SCHEMA)
        assert (paced["count"], paced["statusCodeDistribution"]) == (60, {"OK": 60})
        assert paced["latencyFrom"] == "schedule" and paced["schedule"] == "200/s"
        assert [t["breached"] for t in paced["thresholds"]] == [True, False]
        assert sum(DAY - remaining(stub, f"u{i}") for i in range(3)) == 60

        # The summary and CSV formats, and data that does not fit the request: 64.
        done = loadtest(replica.address, "--call", CHECK, "-d", check_data("bob"), "-n", "5",
                        "-O", "csv")  # fmt: skip
        assert done.returncode == 0 and len(done.stdout.splitlines()) == 6
        done = loadtest(replica.address, "--call", CHECK, "-d", '{"domian": "x"}', "-n", "5")
        assert done.returncode == 64
        assert "-d/--data: does not fit bulwark.v1.CheckRequest" in done.stderr
        done = loadtest(replica.address, "--call", "bulwark.v1.RateLimitService/Nope", "-n", "1")
        assert done.returncode == 1 and "has no method 'Nope'" in done.stderr
        done = loadtest(replica.address, "--call", "bulwark.v1.Nope/Check", "-n", "1")
        assert done.returncode == 1 and "no service 'bulwark.v1.Nope'" in done.stderr


def test_errors_are_counted_by_status_and_reported_as_signals(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> None:
    replica = replica_factory("lt2", [etcd.endpoint])
    # No breaker "missing" exists: every Allow is NOT_FOUND. Two worker processes share
    # the calls; each reports its signals, and the report is the merge.
    done = loadtest(
        replica.address, "--call", "bulwark.v1.CircuitBreakerService/Allow",
        "-d", '{"name": "missing", "caller": "{{.WorkerID}}-{{.RequestNumber}}"}',
        "-n", "40", "-c", "4", "--workers", "2", "-O", "json", "--fail-if", "error_rate>50%",
        "--report-as", "checkout", "--bulwark", replica.address,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    report = report_of(done)
    assert report["statusCodeDistribution"] == {"NOT_FOUND": 40}
    ((message, count),) = report["errorDistribution"].items()
    assert count == 40 and message.startswith("NOT_FOUND: ") and "missing" in message
    assert report["errors"] == 40 and report["fastest"] is None
    assert report["options"]["workers"] == 2
    with grpc.insecure_channel(replica.address) as channel:
        signals = registry_pb2_grpc.RegistryServiceStub(channel).GetServiceSignals(
            signals_pb2.GetServiceSignalsRequest(service="checkout"), timeout=5
        )
    inbound = signals.signals.by_caller["bulwark-loadtest"]
    assert (inbound.calls, inbound.errors) == (40, 40)


def test_ctrl_c_stops_the_load_and_still_writes_the_report(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], tmp_path: Path
) -> None:
    """As a chaos experiment stops a load step: SIGINT, then the report of what was done."""
    replica = replica_factory("lt3", [etcd.endpoint])
    output = tmp_path / "stopped.json"
    with subprocess.Popen(
        [
            sys.executable, "-m", "bulwark_server", "loadtest", replica.address,
            "--call", CHECK, "-d", check_data("carol"), "--rps", "100", "-z", "60s",
            "--progress", "-O", "json", "-o", str(output),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:  # fmt: skip
        try:
            assert process.stderr is not None
            first = process.stderr.readline()  # the first progress line: the load is on
            assert first.startswith("["), first
            process.send_signal(signal.SIGINT)
            status = process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert status == 130
    report = json.loads(output.read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["endReason"] == "cancel" and 50 <= report["count"] < 6000
    assert report["statusCodeDistribution"] == {"OK": report["count"]}
