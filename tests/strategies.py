"""Hypothesis strategies that build any protobuf message from its descriptor.

``messages(SomeRequest)`` draws instances of ``SomeRequest``, a third of them in
each of three modes:

* tame: every field plausible (names from a small shared pool, small counts,
  short valid durations, timestamps in the next hour, known enum values), so
  that requests pass validation often enough to reach the code behind it;
* mixed: each field tame or, one time in four, hostile;
* wild: any subset of the fields set, every one hostile: empty, unicode, control
  characters, '/', page-token look-alikes and strings up to 2000 characters;
  integers at the edges of their type; NaN, infinities, huge and negative
  floats; unknown enum numbers; Durations/Timestamps with out-of-range seconds
  and nanos; lists of 0-5 items or, now and then, 1000-1200 (past the server's
  list limits); maps.

Nested messages go 3 levels deep at most; examples stay small on average.
Fields of a oneof are drawn independently (the last one set wins).
"""

from __future__ import annotations

import base64
import functools
import math
import time
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf import message_factory
from hypothesis import strategies as st

FD = _descriptor.FieldDescriptor

# Names shared by every request, so that one request may find what another made.
NAME_POOL = ("a", "b", "a-b.c", "svc", "x_1", "Z9", "web", "primary")

INT32_EDGES = (0, 1, -1, 2, 2**31 - 1, -(2**31), 1000, 1001)
UINT32_EDGES = (0, 1, 2, 2**32 - 1, 2**31, 1000, 1001)
INT64_EDGES = (0, 1, -1, 2, 2**31 - 1, 2**53 + 1, 2**63 - 1, -(2**63), 10**12)
UINT64_EDGES = (0, 1, 2, 2**63, 2**64 - 1, 10**12)
FLOAT_EDGES = (
    0.0,
    -0.0,
    0.5,
    1.0,
    -1.0,
    100.0,
    101.0,
    math.nan,
    math.inf,
    -math.inf,
    1e300,
    -1e300,
    1e-45,
    5e-324,
)
# Seconds and nanos around the validity limits of Duration and Timestamp.
DURATION_SECONDS = (0, 1, 2, 5, 60, -1, 315_576_000_000, 315_576_000_001, 2**63 - 1, -(2**63))
NANOS = (0, 1, 500_000_000, 999_999_999, 1_000_000_000, -1, -999_999_999, 2**31 - 1, -(2**31))
TIMESTAMP_MIN_S = -62_135_596_800
TIMESTAMP_MAX_S = 253_402_300_799


@functools.cache
def names() -> st.SearchStrategy[str]:
    """Resource names: mostly from the shared pool, sometimes fresh, sometimes of the
    longest valid length (128) or one more."""
    return st.one_of(
        st.sampled_from(NAME_POOL),
        st.sampled_from(NAME_POOL),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True),
        st.just("n" * 128),
        st.just("n" * 129),
    )


@functools.cache
def texts() -> st.SearchStrategy[str]:
    """Any string a caller could send: names, empty, unicode, control characters,
    slashes, page-token look-alikes, and (rarely) very long ones."""
    unicode = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
    control = st.text(st.characters(min_codepoint=0, max_codepoint=31), min_size=1, max_size=4)
    return st.one_of(
        names(),
        names(),
        st.just(""),
        unicode,
        control,
        st.builds(lambda a, b: f"{a}/{b}", names(), st.sampled_from(("", "b", "..", "a/b"))),
        st.sampled_from(("/", "..", ".", "-a", " a", "a ", "*", "\x00", "é", "名前", "🙂")),
        names().map(lambda n: base64.urlsafe_b64encode(n.encode()).decode()),
        st.sampled_from(("!!!", "YQ", "Lw==", "YS9iL2M=")),
        st.builds(lambda c, n: c * n, st.sampled_from("aé/\x01 "), st.integers(200, 2000)),
    )


def _ints(edges: tuple[int, ...], lo: int, hi: int) -> st.SearchStrategy[int]:
    """The type's edges, small values, or anything in [lo, hi]."""
    return st.one_of(
        st.sampled_from(edges), st.integers(max(lo, -3), min(hi, 20)), st.integers(lo, hi)
    )


INT32 = _ints(INT32_EDGES, -(2**31), 2**31 - 1)
UINT32 = _ints(UINT32_EDGES, 0, 2**32 - 1)
INT64 = _ints(INT64_EDGES, -(2**63), 2**63 - 1)
UINT64 = _ints(UINT64_EDGES, 0, 2**64 - 1)
FLOATS = st.one_of(st.sampled_from(FLOAT_EDGES), st.floats(-2.0, 200.0), st.floats())

_INT_BY_TYPE = {
    FD.TYPE_INT32: INT32,
    FD.TYPE_SINT32: INT32,
    FD.TYPE_SFIXED32: INT32,
    FD.TYPE_UINT32: UINT32,
    FD.TYPE_FIXED32: UINT32,
    FD.TYPE_INT64: INT64,
    FD.TYPE_SINT64: INT64,
    FD.TYPE_SFIXED64: INT64,
    FD.TYPE_UINT64: UINT64,
    FD.TYPE_FIXED64: UINT64,
}


def durations() -> st.SearchStrategy[dict[str, int]]:
    """Duration fields: mostly short and valid, else any edge of seconds x nanos."""
    valid = st.fixed_dictionaries(
        {"seconds": st.integers(0, 5)}, optional={"nanos": st.sampled_from((0, 100_000_000))}
    )
    hostile = st.fixed_dictionaries(
        {},
        optional={
            "seconds": st.sampled_from(DURATION_SECONDS) | st.integers(-10, 100),
            "nanos": st.sampled_from(NANOS),
        },
    )
    return valid | hostile


def _from_now(offset: int) -> int:
    """Seconds since the epoch ``offset`` seconds from now. Applied with ``map`` so that
    what hypothesis draws (the offset) does not depend on the clock."""
    return int(time.time()) + offset


def timestamps() -> st.SearchStrategy[dict[str, int]]:
    """Timestamp fields: near now (past and future), else the edges of the valid range."""
    near = st.fixed_dictionaries(
        {"seconds": st.integers(-3600, 3600).map(_from_now)},
        optional={"nanos": st.sampled_from((0, 1, 999_999_999))},
    )
    seconds = st.sampled_from(
        (
            0,
            -1,
            TIMESTAMP_MIN_S,
            TIMESTAMP_MIN_S - 1,
            TIMESTAMP_MAX_S,
            TIMESTAMP_MAX_S + 1,
            2**63 - 1,
            -(2**63),
        )
    )
    far = st.just(86400 * 365 * 100).map(_from_now)
    hostile = st.fixed_dictionaries(
        {}, optional={"seconds": seconds | far, "nanos": st.sampled_from(NANOS)}
    )
    return near | hostile


def tame_durations() -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries(
        {"seconds": st.integers(1, 5)}, optional={"nanos": st.sampled_from((0, 100_000_000))}
    )


def tame_timestamps() -> st.SearchStrategy[dict[str, int]]:
    """Soon, in the future (an hour at most)."""
    return st.fixed_dictionaries({"seconds": st.integers(60, 3600).map(_from_now)})


_WELL_KNOWN = {
    "google.protobuf.Duration": (tame_durations, durations),
    "google.protobuf.Timestamp": (tame_timestamps, timestamps),
}

# How a message's fields are drawn: every field plausible ("tame": requests that
# pass validation often enough to reach the code behind it), every field hostile
# ("wild"), or each field either way ("mixed": mostly plausible, one odd field).
TAME, MIXED, WILD = "tame", "mixed", "wild"


def _enum_values(field: _descriptor.FieldDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    unknown = (max(known) + 1, -1, 2**31 - 1, -(2**31), 99)
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(unknown))


def _wild_scalar(field: _descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FD.TYPE_STRING:
        return texts()
    if kind == FD.TYPE_BYTES:
        return st.binary(max_size=40) | st.binary(min_size=32, max_size=32)
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return FLOATS
    if kind == FD.TYPE_ENUM:
        return _enum_values(field)
    if kind in _INT_BY_TYPE:
        return _INT_BY_TYPE[kind]
    raise TypeError(f"no strategy for field {field.full_name} of type {kind}")


def _tame_scalar(field: _descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    name = field.name
    if kind == FD.TYPE_STRING:
        if "address" in name:
            return st.sampled_from(("127.0.0.1:9001", "10.0.0.2:80", "db-1:5432"))
        if name.endswith("token"):
            return st.just("") | names().map(
                lambda n: base64.urlsafe_b64encode(n.encode()).decode()
            )
        return st.sampled_from(NAME_POOL)
    if kind == FD.TYPE_BYTES:
        return st.binary(max_size=8)
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return st.sampled_from((0.5, 1.0, 10.0, 50.0, 100.0))
    if kind == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from([n for n in known if n] or known)
    if kind in _INT_BY_TYPE:
        if name.endswith("revision"):  # 0: no condition, no resumption
            return st.just(0)
        return st.sampled_from((0, 1, 1, 2, 3, 5, 10))
    raise TypeError(f"no strategy for field {field.full_name} of type {kind}")


def _scalar(field: _descriptor.FieldDescriptor, mode: str) -> st.SearchStrategy[Any]:
    if mode == TAME:
        return _tame_scalar(field)
    if mode == WILD:
        return _wild_scalar(field)
    tame = _tame_scalar(field)
    return st.one_of(tame, tame, tame, _wild_scalar(field))


def _lists(
    element: st.SearchStrategy[Any], plain_element: st.SearchStrategy[Any] | None, mode: str
) -> st.SearchStrategy[list[Any]]:
    """Mostly 0-5 items; occasionally 1000-1200 copies of one item, to hit list limits.

    ``plain_element`` (the element without long lists of its own, so that sizes do
    not multiply) is what the long lists repeat; None means no long lists here."""
    short = (
        st.lists(element, min_size=1, max_size=3) if mode == TAME else st.lists(element, max_size=5)
    )
    if plain_element is None or mode == TAME:
        return short
    many = st.tuples(plain_element, st.integers(1000, 1200)).map(lambda pair: [pair[0]] * pair[1])
    return st.one_of(short, short, short, short, short, short, short, many)


def _value(
    field: _descriptor.FieldDescriptor, depth: int, many: bool, mode: str
) -> st.SearchStrategy[Any] | None:
    """Strategy for a field's value (a dict of fields for a message), or None to leave it out."""
    if field.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
        if field.message_type.full_name in _WELL_KNOWN:
            tame, wild = _WELL_KNOWN[field.message_type.full_name]
            if mode == TAME:
                return tame()
            return wild() if mode == WILD else st.one_of(tame(), tame(), wild())
        if depth <= 0:
            return None
        return _fields(field.message_type, depth - 1, many, mode)
    return _scalar(field, mode)


def _fields(
    desc: _descriptor.Descriptor, depth: int, many: bool, mode: str
) -> st.SearchStrategy[dict[str, Any]]:
    """A dict {field name: value} for ``desc``. Any subset of the fields is set,
    except that tame messages set every field that is not a list or a map, and
    mixed ones every scalar field.
    ``many``: whether lists below may be long ones."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            key = _value(message_type.fields_by_name["key"], depth, many, mode)
            value = _value(message_type.fields_by_name["value"], depth, many, mode)
            if key is None or value is None:
                continue
            optional[field.name] = st.dictionaries(key, value, max_size=2 if mode == TAME else 4)
            continue
        value = _value(field, depth, many, mode)
        if value is None:
            continue
        if field.is_repeated:
            plain = _value(field, depth, False, mode) if many else None
            optional[field.name] = _lists(value, plain, mode)
        elif mode == TAME or (mode == MIXED and message_type is None):
            required[field.name] = value
        else:
            optional[field.name] = value
    return st.fixed_dictionaries(required, optional=optional)


def _fill(msg: _message.Message, values: dict[str, Any]) -> _message.Message:
    desc = msg.DESCRIPTOR
    for name, value in values.items():
        field = desc.fields_by_name[name]
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            target = getattr(msg, name)
            value_field = message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_field.message_type is not None:
                    _fill(target[k], v)
                else:
                    target[k] = v
        elif message_type is not None:
            if field.is_repeated:
                target = getattr(msg, name)
                for item in value:
                    _fill(target.add(), item)
            else:
                sub = getattr(msg, name)
                sub.SetInParent()  # an empty nested message is still "set"
                _fill(sub, value)
        elif field.is_repeated:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)
    return msg


@st.composite
def _built(draw: st.DrawFn, cls: type[_message.Message], fields: Any) -> _message.Message:
    # Not ``fields.map(...)``: hypothesis would print a failing example as the call
    # that built it, with every drawn value; a message prints as its text format.
    return _fill(cls(), draw(fields))


@functools.cache
def messages(
    cls_or_descriptor: type[_message.Message] | _descriptor.Descriptor, max_depth: int = 3
) -> st.SearchStrategy[_message.Message]:
    """Instances of a message class (or of the class of a descriptor), nested at most
    ``max_depth`` messages deep below the top one (Duration/Timestamp do not count):
    a third plausible, a third mostly plausible, a third hostile."""
    if isinstance(cls_or_descriptor, _descriptor.Descriptor):
        cls = message_factory.GetMessageClass(cls_or_descriptor)
    else:
        cls = cls_or_descriptor
    modes = [_fields(cls.DESCRIPTOR, max_depth, True, mode) for mode in (TAME, MIXED, WILD)]
    return _built(cls, st.one_of(modes))
