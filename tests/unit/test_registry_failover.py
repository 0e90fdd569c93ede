"""Failover decisions: who is promoted, when, with which epoch, and when nobody is."""

from __future__ import annotations

import pytest

from bulwark.v1 import registry_pb2
from bulwark_server import timestamps
from bulwark_server.errors import FailedPrecondition, NotFound
from bulwark_server.registry.failover import best_backup, decide, request_switchover

SERVING = registry_pb2.INSTANCE_HEALTH_SERVING
UNSPECIFIED = registry_pb2.INSTANCE_HEALTH_UNSPECIFIED
NOT_SERVING = registry_pb2.INSTANCE_HEALTH_NOT_SERVING
DRAINING = registry_pb2.INSTANCE_HEALTH_DRAINING
NOW = 1_000_000.0


def inst(
    id_: str,
    health: int = SERVING,
    priority: int = 0,
    lag_ms: int = 0,
    zone: str = "",
) -> registry_pb2.Instance:
    instance = registry_pb2.Instance(
        service="db", id=id_, address=f"{id_}:5432", health=health, priority=priority, zone=zone
    )
    instance.load.replication_lag.FromMilliseconds(lag_ms)
    return instance


def fleet(*instances: registry_pb2.Instance) -> dict[str, registry_pb2.Instance]:
    return {i.id: i for i in instances}


def primary(instance_id: str, epoch: int) -> registry_pb2.Primary:
    return registry_pb2.Primary(service="db", instance_id=instance_id, epoch=epoch)


def test_best_backup_orders_by_priority_then_lag_then_zone_then_id() -> None:
    assert best_backup([inst("a", priority=1), inst("b", priority=5)]).id == "b"
    assert best_backup([inst("a", lag_ms=50), inst("b", lag_ms=10)]).id == "b"
    same_zone = [inst("a", zone="z1"), inst("b", zone="z2")]
    assert best_backup(same_zone, zone="z2").id == "b"
    assert best_backup(same_zone, zone="z1").id == "a"
    assert best_backup([inst("c"), inst("b")]).id == "b"
    # Priority outranks lag, lag outranks zone.
    assert best_backup([inst("a", priority=2, lag_ms=900), inst("b", priority=1)]).id == "a"
    assert best_backup([inst("a", zone="z", lag_ms=5), inst("b", lag_ms=1)], zone="z").id == "b"


@pytest.mark.parametrize("health", [NOT_SERVING, DRAINING, UNSPECIFIED])
def test_best_backup_never_chooses_an_instance_that_is_not_serving(health: int) -> None:
    assert best_backup([inst("a", health=health, priority=9), inst("b")]).id == "b"
    assert best_backup([inst("a", health=health)]) is None


def test_best_backup_excludes_the_old_primary() -> None:
    assert best_backup([inst("a", priority=9), inst("b")], exclude="a").id == "b"
    assert best_backup([inst("a")], exclude="a") is None


def test_first_serving_instance_becomes_primary_at_epoch_one() -> None:
    record = decide("db", None, fleet(inst("a", health=NOT_SERVING), inst("b")), NOW)
    assert (record.instance_id, record.epoch) == ("b", 1)
    assert record.address == "b:5432"
    assert timestamps.unix(record.since) == pytest.approx(NOW)


def test_no_record_and_no_serving_instance_changes_nothing() -> None:
    assert decide("db", None, fleet(inst("a", health=NOT_SERVING)), NOW) is None
    assert decide("db", None, {}, NOW) is None


def test_a_serving_primary_is_kept_even_when_a_better_instance_exists() -> None:
    instances = fleet(inst("a"), inst("b", priority=100))
    assert decide("db", primary("a", 4), instances, NOW) is None


def test_a_primary_that_left_is_replaced_by_the_best_backup_with_the_next_epoch() -> None:
    instances = fleet(inst("b", priority=1), inst("c", priority=2), inst("d", health=NOT_SERVING))
    record = decide("db", primary("a", 7), instances, NOW)
    assert (record.instance_id, record.epoch, record.previous_instance_id) == ("c", 8, "a")
    assert "left" in record.reason


def test_a_primary_reporting_not_serving_is_replaced() -> None:
    instances = fleet(inst("a", health=NOT_SERVING, zone="z1"), inst("b"), inst("c", zone="z1"))
    record = decide("db", primary("a", 2), instances, NOW)
    # Same priority and lag: the old primary's zone decides.
    assert (record.instance_id, record.epoch) == ("c", 3)
    assert "NOT_SERVING" in record.reason


def test_no_serving_backup_leaves_the_service_without_primary_and_keeps_the_epoch() -> None:
    instances = fleet(inst("a", health=NOT_SERVING), inst("b", health=DRAINING))
    record = decide("db", primary("a", 5), instances, NOW)
    assert record.instance_id == ""
    assert record.epoch == 5
    assert record.previous_instance_id == "a"
    assert "no SERVING backup" in record.reason
    # Once vacant, nothing changes until some instance serves again ...
    assert decide("db", record, instances, NOW) is None
    # ... which is then promoted with the next epoch (the returning old primary too).
    instances["a"] = inst("a")
    again = decide("db", record, instances, NOW)
    assert (again.instance_id, again.epoch) == ("a", 6)


def test_a_draining_primary_hands_over_only_when_a_backup_serves() -> None:
    assert decide("db", primary("a", 1), fleet(inst("a", health=DRAINING)), NOW) is None
    instances = fleet(inst("a", health=DRAINING), inst("b"))
    record = decide("db", primary("a", 1), instances, NOW)
    assert (record.instance_id, record.epoch) == ("b", 2)


def switching(target: str, deadline: float, epoch: int = 3) -> registry_pb2.Primary:
    record = primary("a", epoch)
    record.switchover_target = target
    record.switchover_deadline.CopyFrom(timestamps.at(deadline))
    return record


def test_switchover_waits_for_the_primary_to_drain() -> None:
    instances = fleet(inst("a"), inst("b"), inst("c", priority=5))
    assert decide("db", switching("b", NOW + 10), instances, NOW) is None
    instances["a"] = inst("a", health=DRAINING)
    record = decide("db", switching("b", NOW + 10), instances, NOW)
    # The named target, not the higher-priority backup.
    assert (record.instance_id, record.epoch) == ("b", 4)
    assert not record.HasField("switchover_target")
    assert "drained" in record.reason


def test_switchover_promotes_anyway_after_the_deadline() -> None:
    instances = fleet(inst("a"), inst("b"))
    record = decide("db", switching("b", NOW - 0.1), instances, NOW)
    assert (record.instance_id, record.epoch) == ("b", 4)
    assert "in time" in record.reason


def test_switchover_without_target_takes_the_best_backup() -> None:
    instances = fleet(inst("a", health=DRAINING), inst("b"), inst("c", priority=5))
    assert decide("db", switching("", NOW + 10), instances, NOW).instance_id == "c"


def test_switchover_target_that_stopped_serving_falls_back_to_the_best_backup() -> None:
    instances = fleet(inst("a", health=DRAINING), inst("b", health=NOT_SERVING), inst("c"))
    assert decide("db", switching("b", NOW + 10), instances, NOW).instance_id == "c"


def test_switchover_with_nobody_to_promote_is_abandoned_and_the_primary_stays() -> None:
    instances = fleet(inst("a", health=DRAINING), inst("b", health=NOT_SERVING))
    record = decide("db", switching("b", NOW + 10), instances, NOW)
    assert (record.instance_id, record.epoch) == ("a", 3)
    assert not record.HasField("switchover_target")
    assert "abandoned" in record.reason


def test_switchover_when_the_primary_dies_meanwhile_promotes_at_once() -> None:
    record = decide("db", switching("b", NOW + 10), fleet(inst("b")), NOW)
    assert (record.instance_id, record.epoch) == ("b", 4)


def test_request_switchover_marks_the_record_without_changing_the_epoch() -> None:
    instances = fleet(inst("a"), inst("b"))
    record = request_switchover(primary("a", 3), instances, "b", 5.0, NOW)
    assert (record.instance_id, record.epoch, record.switchover_target) == ("a", 3, "b")
    assert timestamps.unix(record.switchover_deadline) == pytest.approx(NOW + 5.0)
    best = request_switchover(primary("a", 3), instances, "", 5.0, NOW)
    assert best.HasField("switchover_target") and best.switchover_target == ""


def test_request_switchover_refuses_what_cannot_work() -> None:
    instances = fleet(inst("a"), inst("b", health=NOT_SERVING))
    with pytest.raises(FailedPrecondition, match="no primary"):
        request_switchover(None, instances, "", 5.0, NOW)
    with pytest.raises(FailedPrecondition, match="no primary"):
        request_switchover(primary("", 3), instances, "", 5.0, NOW)
    with pytest.raises(NotFound, match="target_instance_id"):
        request_switchover(primary("a", 3), instances, "zz", 5.0, NOW)
    with pytest.raises(FailedPrecondition, match="already the primary"):
        request_switchover(primary("a", 3), instances, "a", 5.0, NOW)
    with pytest.raises(FailedPrecondition, match="NOT_SERVING"):
        request_switchover(primary("a", 3), instances, "b", 5.0, NOW)
    with pytest.raises(FailedPrecondition, match="no SERVING backup"):
        request_switchover(primary("a", 3), instances, "", 5.0, NOW)


def test_epochs_only_grow_over_a_long_run_of_failures() -> None:
    """Kill whoever is primary, again and again: every decision raises the epoch by one."""
    instances = fleet(*(inst(f"i{n}", priority=n % 3) for n in range(10)))
    record = decide("db", None, instances, NOW)
    seen = {record.epoch: record.instance_id}
    while len(instances) > 1:
        del instances[record.instance_id]
        nxt = decide("db", record, instances, NOW)
        assert nxt.epoch == record.epoch + 1
        assert nxt.epoch not in seen
        seen[nxt.epoch] = nxt.instance_id
        record = nxt
    del instances[record.instance_id]
    vacant = decide("db", record, instances, NOW)
    assert vacant.instance_id == "" and vacant.epoch == record.epoch


def test_the_old_primarys_zone_is_preferred_even_after_its_key_is_gone() -> None:
    first = decide("db", None, fleet(inst("b1", zone="z-b")), NOW)
    assert first.zone == "z-b"
    instances = fleet(inst("a1", zone="z-a"), inst("a2", zone="z-a"), inst("b2", zone="z-b"))
    assert decide("db", first, instances, NOW).instance_id == "b2"
