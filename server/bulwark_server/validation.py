"""Input checks shared by every capability. Pure: raise InvalidArgument naming the field."""

from __future__ import annotations

import re
from collections.abc import Sequence

from google.protobuf import duration_pb2, timestamp_pb2

from bulwark_server.errors import InvalidArgument
from bulwark_server.store import decode_token
from bulwark_server.store.keys import MAX_NAME_BYTES

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_ID_LENGTH = 256


def validate_name(value: str, field: str = "name") -> str:
    """A resource name: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not NAME_RE.fullmatch(value):
        raise InvalidArgument(
            field,
            f"{value[:64]!r} is not a valid name (1-128 letters, digits, '.', '_', '-', "
            "starting with a letter or digit)",
        )
    return value


def validate_pair(first: str, second: str, first_field: str, second_field: str) -> None:
    """Two names stored as one key name, "<first>/<second>": each valid, and together
    within the key layout's limit (checked here so it is INVALID_ARGUMENT, naming
    the second field)."""
    validate_name(first, first_field)
    validate_name(second, second_field)
    if len(first) + 1 + len(second) > MAX_NAME_BYTES:
        raise InvalidArgument(
            second_field,
            f"{first_field} and {second_field} together must be at most "
            f"{MAX_NAME_BYTES - 1} characters",
        )


def validate_id(value: str, field: str, *, required: bool = True) -> str:
    """A free-form identifier (caller, holder, reporter): printable, at most 256 bytes
    of UTF-8 (some are parts of etcd keys, whose names are limited in bytes)."""
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return value
    if len(value) > MAX_ID_LENGTH or len(value.encode()) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_ID_LENGTH} bytes of UTF-8")
    if not value.isprintable():
        raise InvalidArgument(field, "must be printable text")
    return value


def duration_seconds(
    value: duration_pb2.Duration,
    field: str,
    *,
    minimum: float = 0.0,
    maximum: float = 365 * 86400.0,
) -> float:
    """Seconds of a Duration, checked against [minimum, maximum]."""
    if value.nanos and (value.seconds * value.nanos < 0 or abs(value.nanos) >= 1_000_000_000):
        raise InvalidArgument(field, "is not a valid duration")
    seconds = value.seconds + value.nanos / 1e9
    if seconds < minimum:
        raise InvalidArgument(field, f"must be at least {minimum:g}s, got {seconds:g}s")
    if seconds > maximum:
        raise InvalidArgument(field, f"must be at most {maximum:g}s, got {seconds:g}s")
    return seconds


# The range a Timestamp may hold: years 0001 to 9999.
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799


def timestamp_seconds(value: timestamp_pb2.Timestamp, field: str) -> float:
    """Unix seconds of a Timestamp; InvalidArgument when it is not a valid one."""
    if not (
        MIN_TIMESTAMP_S <= value.seconds <= MAX_TIMESTAMP_S and 0 <= value.nanos < 1_000_000_000
    ):
        raise InvalidArgument(field, "is not a valid timestamp")
    return value.seconds + value.nanos / 1e9


MAX_WATCH_NAMES = 1000


def validate_watch(
    start_revision: int, names: Sequence[str], field: str = "names"
) -> frozenset[str]:
    """The names a Watch call follows (empty: all), checked with its start revision."""
    if start_revision < 0:
        raise InvalidArgument("start_revision", "must not be negative")
    if len(names) > MAX_WATCH_NAMES:
        raise InvalidArgument(field, f"at most {MAX_WATCH_NAMES} {field}")
    for i, name in enumerate(names):
        validate_name(name, f"{field}[{i}]")
    return frozenset(names)


def page_params(page_size: int, page_token: str) -> tuple[int, str]:
    """(size, start_after) from a list request; InvalidArgument for a bad size or token."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0-{MAX_PAGE_SIZE}, got {page_size}")
    size = page_size or DEFAULT_PAGE_SIZE
    if not page_token:
        return size, ""
    try:
        start_after = decode_token(page_token)
    except ValueError:
        raise InvalidArgument("page_token", "is not a token returned by this API") from None
    # Tokens hold the last name of a page: a name, or "<scope>/<name>" (limits).
    parts = start_after.split("/")
    if len(parts) > 2 or not all(NAME_RE.fullmatch(part) for part in parts):
        raise InvalidArgument("page_token", "is not a token returned by this API")
    return size, start_after
