"""Envoy's rate-limit protocol served by real replicas; limits from envoyproxy/ratelimit YAML."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bulwark.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from bulwark_server.envoy_api.extensions.common.ratelimit.v3 import ratelimit_pb2 as common
from bulwark_server.envoy_api.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember
from bulwark_server.store.keys import LIMIT_KIND, kind_prefix
from tests.integration.conftest import get_leader, start_replicas, wait_for

SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
DAY = rls_pb2.RateLimitResponse.RateLimit.DAY
MAX_UINT32 = 2**32 - 1

CONFIG = """\
domain: envoy-test
descriptors:
  # 3 a day per user, each user counted separately.
  - key: user
    rate_limit: {unit: day, requests_per_unit: 3}
  - key: shadow_user
    rate_limit: {unit: day, requests_per_unit: 1}
    shadow_mode: true
  - key: internal
    rate_limit:
      unlimited: true
  - key: path
    value: /api/*
    rate_limit: {unit: day, requests_per_unit: 1, name: api-paths}
  - key: tenant
    value: acme
    detailed_metric: true
    descriptors:
      - key: remote_address
        rate_limit: {unit: Day, requests_per_unit: 2}
"""


def descriptor(*pairs: tuple[str, str], hits: int | None = None) -> common.RateLimitDescriptor:
    out = common.RateLimitDescriptor(
        entries=[common.RateLimitDescriptor.Entry(key=k, value=v) for k, v in pairs]
    )
    if hits is not None:
        out.hits_addend.value = hits
    return out


def request(
    *descriptors: common.RateLimitDescriptor, domain: str = "envoy-test", hits: int = 0
) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)


def etcd_value(etcd: EtcdMember, name: bytes) -> bytes:
    """The stored bytes of limit ``name`` ("<domain>/<name>"), read through etcd's JSON gateway."""
    key = kind_prefix(LIMIT_KIND) + name
    body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
    with urllib.request.urlopen(f"{etcd.client_url}/v3/kv/range", body, timeout=5) as answer:
        (kv,) = json.load(answer)["kvs"]
    return base64.b64decode(kv["value"])


def seconds_to_utc_midnight() -> float:
    return 86400 - time.time() % 86400


def avoid_day_boundary() -> None:
    """Day windows reset at 00:00 UTC: do not let a test's requests straddle it."""
    left = seconds_to_utc_midnight()
    if left < 30:
        time.sleep(left + 1)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulwark_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "limits.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def two_replicas(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
) -> tuple[ReplicaProcess, ReplicaProcess]:
    """(leader, follower) sharing one etcd."""
    replicas = start_replicas(replica_factory, 2, [etcd.endpoint])
    leader = wait_for(
        lambda: next((r for r in replicas if (v := get_leader(r.address)) and v.is_self), None),
        10,
    )
    follower = next(r for r in replicas if r is not leader)
    # The follower must know the leader before it can forward to it.
    wait_for(lambda: (v := get_leader(follower.address)) and v.leader.replica_id, 10)
    return leader, follower  # type: ignore[return-value]


def test_service_is_listed_healthy_and_validates_like_envoy(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess]
):
    replica = replica_factory("solo", [etcd.endpoint])
    wait_for(lambda: (v := get_leader(replica.address)) and v.is_self, 10)

    assert SERVICE in grpcurl(replica.address, "list").split()
    described = grpcurl(replica.address, "describe", SERVICE)
    assert "rpc ShouldRateLimit ( .envoy.service.ratelimit.v3.RateLimitRequest )" in described
    described = grpcurl(replica.address, "describe", "envoy.service.ratelimit.v3.RateLimitRequest")
    assert "repeated .envoy.extensions.common.ratelimit.v3.RateLimitDescriptor" in described

    with grpc.insecure_channel(replica.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ShouldRateLimit(request(descriptor(("k", "v")), domain=""), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "rate limit domain must not be empty"
        with pytest.raises(grpc.RpcError) as err:
            stub.ShouldRateLimit(request(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "rate limit descriptor list must not be empty"
        with pytest.raises(grpc.RpcError) as err:
            stub.ShouldRateLimit(request(descriptor(("k", "v" * 300))), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "descriptors[0].entries[0].value" in (err.value.details() or "")

        # Unknown domains (a domain no Bulwark limit could have included) and shapes
        # no limit can match: OK, with no limit.
        for unknown in (
            request(descriptor(("k", "v")), domain="no-such-domain"),
            request(descriptor(("k", "v")), domain="not a bulwark name!"),
            request(common.RateLimitDescriptor(), descriptor(*[(f"k{i}", "v") for i in range(17)])),
        ):
            answer = stub.ShouldRateLimit(unknown, timeout=5)
            assert answer.overall_code == OK
            assert [s.code for s in answer.statuses] == [OK] * len(unknown.descriptors)
            assert not any(s.HasField("current_limit") for s in answer.statuses)


def test_import_then_decide_through_leader_and_follower(
    two_replicas: tuple[ReplicaProcess, ReplicaProcess], config_file: Path
):
    leader, follower = two_replicas
    imported = run_cli("limits", "import", str(config_file), "--server", follower.address)
    assert imported.returncode == 0, imported.stderr
    lines = imported.stdout.splitlines()
    assert "created envoy-test/user [user=*] 3/day" in lines[0]
    assert "created envoy-test/shadow_user [shadow_user=*] 1/day shadow" in lines[1]
    assert lines[-1] == f"imported 5 limits from {config_file} into {follower.address}"
    again = run_cli("limits", "import", str(config_file), "--server", leader.address)
    assert again.returncode == 0, again.stderr
    assert all(line.startswith("unchanged ") for line in again.stdout.splitlines()[:-1])

    with grpc.insecure_channel(leader.address) as channel:
        stored = ratelimit_pb2_grpc.RateLimitServiceStub(channel).GetLimit(
            ratelimit_pb2.GetLimitRequest(domain="envoy-test", name="tenant_acme.remote_address"),
            timeout=5,
        )
    assert stored.limit.algorithm == ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW
    assert [(e.key, e.value) for e in stored.limit.descriptor] == [
        ("tenant", "acme"),
        ("remote_address", ""),
    ]

    avoid_day_boundary()
    with (
        grpc.insecure_channel(leader.address) as to_leader,
        grpc.insecure_channel(follower.address) as to_follower,
    ):
        stubs = [
            rls_pb2_grpc.RateLimitServiceStub(to_leader),
            rls_pb2_grpc.RateLimitServiceStub(to_follower),
        ]

        def ask(req: rls_pb2.RateLimitRequest, via: int = 0) -> rls_pb2.RateLimitResponse:
            answer, call = stubs[via % 2].ShouldRateLimit.with_call(req, timeout=5)
            # Decided by the leader's counters, never by a local share.
            assert "bulwark-ratelimit-mode" not in dict(call.trailing_metadata() or ())
            return answer

        # Fixed window of 3 a day, counted once across both replicas.
        answers = [ask(request(descriptor(("user", "alice"))), via=i) for i in range(5)]
        assert [a.overall_code for a in answers] == [OK, OK, OK, OVER, OVER]
        assert [a.statuses[0].limit_remaining for a in answers] == [2, 1, 0, 0, 0]
        first = answers[0].statuses[0]
        assert first.current_limit.requests_per_unit == 3
        assert first.current_limit.unit == DAY
        assert first.current_limit.name == "user"
        reset = first.duration_until_reset.seconds
        assert abs(reset - seconds_to_utc_midnight()) <= 5, reset
        assert first.duration_until_reset.nanos == 0  # whole seconds, as Envoy's

        # Each value counts on its own; a known domain's unknown descriptor has no limit.
        other = ask(request(descriptor(("user", "bob")), descriptor(("nobody", "x"))), via=1)
        assert other.overall_code == OK
        assert other.statuses[0].limit_remaining == 2
        assert other.statuses[1].code == OK and not other.statuses[1].HasField("current_limit")

        # hits_addend: the request's (0 means 1), a descriptor's own overriding it, 0 = look.
        two = ask(request(descriptor(("user", "carol")), hits=2))
        assert two.statuses[0].limit_remaining == 1
        look = ask(request(descriptor(("user", "carol"), hits=0), hits=2), via=1)
        assert look.overall_code == OK and look.statuses[0].limit_remaining == 1
        heavy = ask(request(descriptor(("user", "carol"), hits=5), descriptor(("user", "dan"))))
        assert [s.code for s in heavy.statuses] == [OVER, OK]
        assert heavy.overall_code == OVER, "one descriptor over makes the request over"
        assert heavy.statuses[1].limit_remaining == 2, "dan is charged the request's 1 hit"

        # Shadow mode: counted, reported OK (remaining 0 once over), never OVER overall.
        shadow = [ask(request(descriptor(("shadow_user", "eve"))), via=i) for i in range(3)]
        assert [a.overall_code for a in shadow] == [OK, OK, OK]
        assert [a.statuses[0].code for a in shadow] == [OK, OK, OK]
        assert [a.statuses[0].limit_remaining for a in shadow] == [0, 0, 0]
        assert shadow[2].statuses[0].current_limit.requests_per_unit == 1

        # Unlimited: OK with the largest remaining, no current limit.
        free = ask(request(descriptor(("internal", "ldap"))), via=1)
        assert free.statuses[0].code == OK
        assert free.statuses[0].limit_remaining == MAX_UINT32
        assert not free.statuses[0].HasField("current_limit")

        # Prefix wildcard: each matching value has its own window; others do not match.
        paths = [
            ask(request(descriptor(("path", p)))) for p in ("/api/a", "/api/a", "/api/b", "/web/a")
        ]
        assert [a.overall_code for a in paths] == [OK, OVER, OK, OK]
        assert paths[0].statuses[0].current_limit.name == "api-paths"
        assert not paths[3].statuses[0].HasField("current_limit")

        # Nested descriptors: only the full-length descriptor matches, per remote address.
        nested = [
            ask(request(descriptor(("tenant", "acme"), ("remote_address", a))), via=i)
            for i, a in enumerate(["10.0.0.1"] * 3 + ["10.0.0.2"])
        ]
        assert [a.overall_code for a in nested] == [OK, OK, OVER, OK]
        short = ask(request(descriptor(("tenant", "acme"))))
        assert not short.statuses[0].HasField("current_limit")

    # Through reflection too, as an operator would.
    reply = json.loads(
        grpcurl(
            "-d",
            json.dumps(
                {
                    "domain": "envoy-test",
                    "descriptors": [{"entries": [{"key": "user", "value": "alice"}]}],
                }
            ),
            follower.address,
            f"{SERVICE}/ShouldRateLimit",
        )
    )
    # grpcurl prints the proto field names.
    assert reply["overall_code"] == "OVER_LIMIT"
    assert reply["statuses"][0]["current_limit"]["unit"] == "DAY"


def test_limits_file_is_loaded_at_start(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], config_file: Path
):
    first = replica_factory("loader", [etcd.endpoint], f"--limits-file={config_file}")
    loaded = [e for e in first.events() if e.get("event") == "limits_file.loaded"]
    assert loaded and loaded[0]["limits_created"] == 5 and loaded[0]["limits_unchanged"] == 0, (
        first.tail()
    )
    per_limit = [e["limit"] for e in first.events() if e.get("event") == "limits_file.limit"]
    assert "envoy-test/api-paths" in per_limit

    with grpc.insecure_channel(first.address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        limit = stub.GetLimit(
            ratelimit_pb2.GetLimitRequest(domain="envoy-test", name="shadow_user"), timeout=5
        ).limit
    assert limit.shadow_mode and not limit.unlimited
    assert limit.rate == ratelimit_pb2.Rate(requests_per_unit=1, unit=ratelimit_pb2.RATE_UNIT_DAY)
    assert limit.algorithm == ratelimit_pb2.LIMIT_ALGORITHM_FIXED_WINDOW
    revision = limit.revision

    # A second replica with the same file (env variable this time) rewrites nothing.
    second = replica_factory(
        "reloader", [etcd.endpoint], env={"BULWARK_LIMITS_FILE": str(config_file)}
    )
    loaded = [e for e in second.events() if e.get("event") == "limits_file.loaded"]
    assert loaded and loaded[0]["limits_unchanged"] == 5, second.tail()
    with grpc.insecure_channel(second.address) as channel:
        stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        again = stub.GetLimit(
            ratelimit_pb2.GetLimitRequest(domain="envoy-test", name="shadow_user"), timeout=5
        ).limit
    assert again.revision == revision


def test_bad_files_are_refused_before_anything_is_written(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: edge\ndescriptors:\n  - key: a\n    rate_limit: {unit: week}\n")
    served = run_cli("serve", f"--limits-file={bad}", "--listen=127.0.0.1:0")
    assert served.returncode == 2
    assert "limits_file (BULWARK_LIMITS_FILE)" in served.stderr
    assert "descriptors[0].rate_limit.unit: 'week' is not a unit" in served.stderr

    missing = run_cli("serve", f"--limits-file={tmp_path / 'missing.yaml'}")
    assert missing.returncode == 2 and "cannot read" in missing.stderr

    imported = run_cli("limits", "import", str(bad), "--server", "127.0.0.1:1")
    assert imported.returncode == 2
    assert imported.stderr.startswith(f"bulwark limits import: {bad}: descriptors[0]")
    assert imported.stdout == ""


def test_import_reports_a_server_it_cannot_reach(config_file: Path):
    result = run_cli(
        "limits", "import", str(config_file), "--server", "127.0.0.1:1", "--timeout", "2"
    )
    assert result.returncode == 1
    assert "127.0.0.1:1 refused envoy-test/user" in result.stderr
    assert "UNAVAILABLE" in result.stderr and "stopped after 0 of 5 limits" in result.stderr


REPLACES_CONFIG = """\
domain: replaces-test
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 1, name: per-user}
  - key: plan
    value: premium
    rate_limit:
      unit: day
      requests_per_unit: 100
      name: premium
      replaces: [{name: per-user}]
"""


def test_a_matched_limit_that_replaces_another_drops_it(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], tmp_path: Path
):
    avoid_day_boundary()
    config = tmp_path / "replaces.yaml"
    config.write_text(REPLACES_CONFIG)
    replica = replica_factory("replacer", [etcd.endpoint], f"--limits-file={config}")
    wait_for(lambda: (v := get_leader(replica.address)) is not None and v.is_self, 10)
    with grpc.insecure_channel(replica.address) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        user = descriptor(("user", "alice"))
        premium = descriptor(("plan", "premium"))
        # Alone, the per-user limit (1 a day) applies.
        first = stub.ShouldRateLimit(request(user, domain="replaces-test"), timeout=5)
        second = stub.ShouldRateLimit(request(user, domain="replaces-test"), timeout=5)
        assert (first.overall_code, second.overall_code) == (OK, OVER)
        # With the premium plan matched too, per-user is replaced: not applied.
        both = stub.ShouldRateLimit(request(user, premium, domain="replaces-test"), timeout=5)
        assert both.overall_code == OK
        assert not both.statuses[0].HasField("current_limit")
        assert both.statuses[1].current_limit.requests_per_unit == 100
        # Whatever each descriptor's hits: the replacing limit is matched in the same
        # request, so per-user is still not applied (it was once decided apart).
        heavy = descriptor(("user", "alice"), hits=5)
        light = descriptor(("plan", "premium"), hits=0)
        for first_descriptor, second_descriptor in (
            (heavy, premium),
            (user, light),
            (heavy, light),
        ):
            mixed = stub.ShouldRateLimit(
                request(first_descriptor, second_descriptor, domain="replaces-test", hits=2),
                timeout=5,
            )
            assert mixed.overall_code == OK
            assert not mixed.statuses[0].HasField("current_limit")
            assert mixed.statuses[1].current_limit.requests_per_unit == 100
        # premium counted 1 + 2 + 0 + 0 (the last two looked only): 97 left.
        looked = stub.ShouldRateLimit(
            request(descriptor(("plan", "premium"), hits=0), domain="replaces-test")
        )
        assert looked.statuses[0].limit_remaining == 97


BLOCK_CONFIG = """\
domain: block-test
descriptors:
  # envoyproxy/ratelimit's "Black list IP": 0 requests per unit blocks it.
  - key: remote_address
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: remote_address
    value: 50.0.0.6
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1000}
"""


def test_requests_per_unit_zero_blocks_every_matching_request(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], tmp_path: Path
):
    config = tmp_path / "block.yaml"
    config.write_text(BLOCK_CONFIG)
    replica = replica_factory("blocker", [etcd.endpoint], f"--limits-file={config}")
    wait_for(lambda: (v := get_leader(replica.address)) is not None and v.is_self, 10)
    with grpc.insecure_channel(replica.address) as channel:
        envoy = rls_pb2_grpc.RateLimitServiceStub(channel)
        native = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        blocked, shadow, other = (
            descriptor(("remote_address", ip)) for ip in ("50.0.0.5", "50.0.0.6", "10.0.0.1")
        )
        for hits in (0, 1, 5):
            answer = envoy.ShouldRateLimit(request(blocked, domain="block-test", hits=hits))
            assert answer.overall_code == OVER
            (status,) = answer.statuses
            assert status.code == OVER and status.limit_remaining == 0
            assert status.current_limit.requests_per_unit == 0
            assert status.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.SECOND
            assert 1 <= status.duration_until_reset.seconds <= 1
        # Shadow mode still answers OK; other addresses get their own limit.
        answer = envoy.ShouldRateLimit(request(shadow, other, domain="block-test"))
        assert answer.overall_code == OK
        assert [s.code for s in answer.statuses] == [OK, OK]
        assert answer.statuses[0].current_limit.requests_per_unit == 0
        assert answer.statuses[1].current_limit.requests_per_unit == 1000

        entries = [ratelimit_pb2.DescriptorEntry(key="remote_address", value="50.0.0.5")]
        check = native.Check(
            ratelimit_pb2.CheckRequest(
                domain="block-test",
                descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=entries)],
            )
        )
        assert check.overall_code == ratelimit_pb2.CHECK_CODE_OVER_LIMIT
        assert check.results[0].remaining == 0
        assert check.results[0].current_limit.requests_per_unit == 0
        lease = native.LeaseQuota(
            ratelimit_pb2.LeaseQuotaRequest(
                domain="block-test",
                descriptor=ratelimit_pb2.RateLimitDescriptor(entries=entries),
                client_id="gw-1",
                wanted=10,
            )
        )
        assert lease.granted == 0
        assert lease.limit == ratelimit_pb2.Rate(
            requests_per_unit=0, unit=ratelimit_pb2.RATE_UNIT_SECOND
        )

        # The native API takes the same limit: a rate of 0 with a unit.
        put = native.PutLimit(
            ratelimit_pb2.PutLimitRequest(
                limit=ratelimit_pb2.Limit(
                    domain="block-test",
                    name="deny-bots",
                    descriptor=[ratelimit_pb2.DescriptorEntry(key="agent", value="bot")],
                    rate=ratelimit_pb2.Rate(unit=ratelimit_pb2.RATE_UNIT_HOUR),
                )
            )
        )
        assert put.limit.effective_rate.unit == ratelimit_pb2.RATE_UNIT_HOUR
        assert put.limit.effective_rate.requests_per_unit == 0
        # Shown as written (rate 0, the flag); stored as 1 per hour with the flag, a
        # limit a replica of the previous version counts instead of failing on.
        got = native.GetLimit(ratelimit_pb2.GetLimitRequest(domain="block-test", name="deny-bots"))
        for shown in (put.limit, got.limit):
            assert shown.blocks_all and shown.burst == 0
            assert shown.rate == ratelimit_pb2.Rate(unit=ratelimit_pb2.RATE_UNIT_HOUR)
        stored = ratelimit_pb2.Limit.FromString(etcd_value(etcd, b"block-test/deny-bots"))
        assert stored.blocks_all and stored.burst == 1
        assert stored.rate == ratelimit_pb2.Rate(
            requests_per_unit=1, unit=ratelimit_pb2.RATE_UNIT_HOUR
        )
        listed = native.ListLimits(ratelimit_pb2.ListLimitsRequest(domain="block-test"))
        blocking = [limit for limit in listed.limits if limit.blocks_all]
        assert len(blocking) == 3 and "deny-bots" in {limit.name for limit in blocking}
        assert all(limit.rate.requests_per_unit == 0 and limit.burst == 0 for limit in blocking)
        bot = descriptor(("agent", "bot"))
        assert envoy.ShouldRateLimit(request(bot, domain="block-test")).overall_code == OVER
        with pytest.raises(grpc.RpcError) as err:
            native.PutLimit(
                ratelimit_pb2.PutLimitRequest(
                    limit=ratelimit_pb2.Limit(
                        domain="block-test",
                        name="no-unit",
                        descriptor=[ratelimit_pb2.DescriptorEntry(key="agent")],
                        rate=ratelimit_pb2.Rate(requests_per_unit=0),
                    )
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


HEADERS_CONFIG = """\
domain: headers-test
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 3}
  - key: client
    rate_limit: {unit: minute, requests_per_unit: 1000}
  - key: internal
    rate_limit: {unlimited: true}
"""


def test_response_headers_report_the_descriptor_closest_to_its_limit(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], tmp_path: Path
):
    avoid_day_boundary()
    config = tmp_path / "headers.yaml"
    config.write_text(HEADERS_CONFIG)
    replica = replica_factory(
        "headers",
        [etcd.endpoint],
        f"--limits-file={config}",
        "--limit-response-headers-enabled=true",
        env={"BULWARK_LIMIT_RESET_HEADER": "X-Reset"},
    )
    wait_for(lambda: (v := get_leader(replica.address)) is not None and v.is_self, 10)

    def headers(answer: rls_pb2.RateLimitResponse) -> dict[str, str]:
        return {h.key: h.value for h in answer.response_headers_to_add}

    with grpc.insecure_channel(replica.address) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        user, client = descriptor(("user", "u1")), descriptor(("client", "c1"))
        internal, unknown = descriptor(("internal", "x")), descriptor(("nobody", "x"))
        # No limit, or an unlimited one: no headers.
        assert not stub.ShouldRateLimit(
            request(internal, unknown, domain="headers-test")
        ).response_headers_to_add
        # The day limit has the least remaining (2 against 999).
        answer = stub.ShouldRateLimit(request(client, user, internal, domain="headers-test"))
        got = headers(answer)
        assert list(got) == ["RateLimit-Limit", "RateLimit-Remaining", "X-Reset"]
        assert (got["RateLimit-Limit"], got["RateLimit-Remaining"]) == ("3", "2")
        assert abs(int(got["X-Reset"]) - seconds_to_utc_midnight()) <= 2
        # Alone, the minute limit reports itself.
        got = headers(stub.ShouldRateLimit(request(client, domain="headers-test")))
        assert (got["RateLimit-Limit"], got["RateLimit-Remaining"]) == ("1000", "998")
        assert 1 <= int(got["X-Reset"]) <= 60
        # Over the limit: that descriptor, remaining 0.
        for _ in range(3):
            answer = stub.ShouldRateLimit(request(user, client, domain="headers-test"))
        assert answer.overall_code == OVER
        got = headers(answer)
        assert (got["RateLimit-Limit"], got["RateLimit-Remaining"]) == ("3", "0")


def test_response_headers_are_off_by_default(
    two_replicas: tuple[ReplicaProcess, ReplicaProcess], config_file: Path
):
    leader, _ = two_replicas
    assert run_cli("limits", "import", str(config_file), "--server", leader.address).returncode == 0
    with grpc.insecure_channel(leader.address) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        answer = stub.ShouldRateLimit(request(descriptor(("user", "headers-off"))))
        assert answer.statuses[0].HasField("current_limit")
        assert not answer.response_headers_to_add


def overridden(
    pairs: tuple[str, str], per_unit: int, unit: int = DAY
) -> common.RateLimitDescriptor:
    out = descriptor(pairs)
    out.limit.requests_per_unit = per_unit
    out.limit.unit = unit  # type: ignore[assignment]
    return out


def test_a_descriptor_limit_override_applies_with_its_own_counter(
    two_replicas: tuple[ReplicaProcess, ReplicaProcess], config_file: Path
):
    avoid_day_boundary()
    leader, follower = two_replicas
    assert run_cli("limits", "import", str(config_file), "--server", leader.address).returncode == 0
    with grpc.insecure_channel(follower.address) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)

        def decide(*descriptors: common.RateLimitDescriptor) -> rls_pb2.RateLimitResponse:
            return stub.ShouldRateLimit(request(*descriptors), timeout=5)

        # The override (2 a day) applies instead of the configured 3 a day.
        answers = [decide(overridden(("user", "bob"), 2)) for _ in range(3)]
        assert [a.overall_code for a in answers] == [OK, OK, OVER]
        status = answers[0].statuses[0]
        assert (status.current_limit.name, status.current_limit.requests_per_unit) == ("", 2)
        assert status.current_limit.unit == DAY and status.limit_remaining == 1
        # The configured limit's counter was not touched.
        configured = decide(descriptor(("user", "bob"))).statuses[0]
        assert (configured.current_limit.name, configured.limit_remaining) == ("user", 2)
        # Keyed by domain, entries and unit, as envoyproxy/ratelimit: another
        # requests_per_unit of the same unit shares the count (3 so far), another
        # unit counts apart.
        assert decide(overridden(("user", "bob"), 5)).statuses[0].limit_remaining == 1
        hour = rls_pb2.RateLimitResponse.RateLimit.HOUR
        assert decide(overridden(("user", "bob"), 5, hour)).statuses[0].limit_remaining == 4
        # It applies where no limit is configured too, and 0 blocks.
        assert decide(overridden(("nobody", "x"), 1)).statuses[0].limit_remaining == 0
        blocked = decide(overridden(("nobody", "y"), 0))
        assert (
            blocked.overall_code == OVER
            and blocked.statuses[0].current_limit.requests_per_unit == 0
        )
        # A unit Bulwark does not count in is refused.
        month = rls_pb2.RateLimitResponse.RateLimit.MONTH
        with pytest.raises(grpc.RpcError) as err:
            decide(overridden(("user", "bob"), 5, month))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


TOKEN_BUCKET_CONFIG = """\
domain: bucket-test
descriptors:
  # 1 a second sustained, 3 at once: Bulwark's token bucket, not a fixed window.
  - key: client
    rate_limit:
      unit: second
      requests_per_unit: 1
      x-bulwark-algorithm: token_bucket
      x-bulwark-burst: 3
"""


def test_an_imported_token_bucket_limit_bursts_then_refills(
    etcd: EtcdMember, replica_factory: Callable[..., ReplicaProcess], tmp_path: Path
):
    config = tmp_path / "bucket.yaml"
    config.write_text(TOKEN_BUCKET_CONFIG)
    replica = replica_factory("bucket", [etcd.endpoint])
    wait_for(lambda: (v := get_leader(replica.address)) is not None and v.is_self, 10)
    imported = run_cli("limits", "import", str(config), "--server", replica.address)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(
        "created bucket-test/client [client=*] 1/second token_bucket(burst 3)"
    )

    with grpc.insecure_channel(replica.address) as channel:
        native = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        stored = native.GetLimit(
            ratelimit_pb2.GetLimitRequest(domain="bucket-test", name="client"), timeout=5
        ).limit
        assert stored.algorithm == ratelimit_pb2.LIMIT_ALGORITHM_TOKEN_BUCKET
        assert stored.burst == 3

        def check(hits: int) -> ratelimit_pb2.DescriptorResult:
            entries = [ratelimit_pb2.DescriptorEntry(key="client", value="c1")]
            answer = native.Check(
                ratelimit_pb2.CheckRequest(
                    domain="bucket-test",
                    descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=entries)],
                    hits=hits,
                ),
                timeout=5,
            )
            return answer.results[0]

        # The whole burst at once: a window of 1 a second could never admit 3 hits.
        burst = check(3)
        assert burst.code == ratelimit_pb2.CHECK_CODE_OK and burst.remaining == 0
        # Empty: the next token comes within a second, the bucket is full in about 3
        # (a one-second window would reset within a second, all of it at once).
        empty = check(1)
        assert empty.code == ratelimit_pb2.CHECK_CODE_OVER_LIMIT
        retry = empty.retry_after.ToNanoseconds() / 1e9
        assert 0 < retry <= 1
        assert empty.reset_after.ToNanoseconds() / 1e9 > 2
        # Envoy's protocol sees the same bucket (hits_addend 0 only looks).
        envoy = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
            request(descriptor(("client", "c1"), hits=0), domain="bucket-test"), timeout=5
        )
        (status,) = envoy.statuses
        assert status.current_limit.requests_per_unit == 1
        assert status.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.SECOND
        assert status.limit_remaining == 0 and status.duration_until_reset.seconds >= 2

        # After the wait it named, one token is back, not the whole burst.
        time.sleep(retry + 0.05)
        refilled = check(1)
        assert refilled.code == ratelimit_pb2.CHECK_CODE_OK and refilled.remaining == 0
        assert check(1).code == ratelimit_pb2.CHECK_CODE_OVER_LIMIT
