"""The status table read backwards: a forwarding replica rebuilds the leader's error."""

from __future__ import annotations

import grpc
import pytest

from bulwark_server.api.status import (
    STATUS_BY_ERROR,
    error_from_status,
    status_for,
    trailing_metadata_for,
)
from bulwark_server.errors import (
    AlreadyExists,
    BulwarkError,
    Conflict,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotLeader,
    PermissionDenied,
    ResourceExhausted,
    StoreUnavailable,
)

Code = grpc.StatusCode

SAMPLES: list[BulwarkError] = [
    InvalidArgument("outcomes[3].name", "is required"),
    NotFound("breaker 'x' not found"),
    AlreadyExists("feature 'y' exists"),
    FailedPrecondition("the prefix is not empty"),
    Conflict("changed concurrently"),
    ResourceExhausted("busy", retry_after=0.75),
    PermissionDenied("key 'k' belongs to another caller"),
    DataLoss("every copy is corrupt"),
]


def _wire(error: BulwarkError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    return status_for(error), error.message, dict(trailing_metadata_for(error))


def test_samples_cover_every_code_a_forwarded_call_can_carry_back() -> None:
    # UNAVAILABLE is the only code left out: forwarded, it means "the leader did not take it".
    covered = {status_for(e) for e in SAMPLES}
    assert covered == set(STATUS_BY_ERROR.values()) - {Code.UNAVAILABLE}


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_keeps_class_message_and_code(error: BulwarkError) -> None:
    rebuilt = error_from_status(*_wire(error))
    assert type(rebuilt) is type(error)
    assert rebuilt is not None and rebuilt.message == error.message
    assert status_for(rebuilt) is status_for(error)


def test_round_trip_keeps_field_and_retry_hint() -> None:
    invalid = error_from_status(*_wire(InvalidArgument("spec.ttl", "must be 2-300s")))
    assert isinstance(invalid, InvalidArgument) and invalid.field == "spec.ttl"
    busy = error_from_status(*_wire(ResourceExhausted("busy", retry_after=0.75)))
    assert isinstance(busy, ResourceExhausted) and busy.retry_after == 0.75


@pytest.mark.parametrize("error", [NotLeader("moving", "10.0.0.1:1"), StoreUnavailable("down")])
def test_unavailable_is_not_rebuilt(error: BulwarkError) -> None:
    assert error_from_status(*_wire(error)) is None


def test_a_refusal_by_the_access_layer_is_not_the_callers_permission_denied() -> None:
    # The access layer refusing a replica sends PERMISSION_DENIED without the marker.
    assert error_from_status(Code.PERMISSION_DENIED, "role dataplane may not", {}) is None
    assert error_from_status(Code.UNAUTHENTICATED, "no identity", {}) is None


def test_a_bad_retry_hint_falls_back_to_one_second() -> None:
    busy = error_from_status(Code.RESOURCE_EXHAUSTED, "busy", {"retry-after-ms": "soon"})
    assert isinstance(busy, ResourceExhausted) and busy.retry_after == 1.0
