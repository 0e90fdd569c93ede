"""A Check's response, written as bytes and read once.

A decision's result was a ``DescriptorResult`` made in the response and filled
field by field: for a Check of 100 descriptors, a hundred messages made, copied
into and set four to six fields each, every step a call into the protobuf
runtime. ``Answers`` keeps, per descriptor, the serialized head of its result (the
code, limit name, effective rate and flags, which a stored limit's ``facts``
serialize once) and the ``Outcome`` its counter gave, and writes the whole
``CheckResponse`` as bytes that are parsed once (``response``).

Encoding: a field repeated in the bytes takes its last value, so an OVER_LIMIT
outcome's code follows the head's OK. The response parsed is the message the
fields would have made (the runtime serializes it in field order either way).
The bytes of an outcome are kept (``_TAILS``): many counters charged alike answer
alike (a bucket charged one hit from full reports the same remaining and reset).
"""

from __future__ import annotations

import math

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.counters import Outcome
from bulwark_server.ratelimits.tallies import NEAR, OVER, SHADOW, WITHIN, Tally

_NANOS = 1_000_000_000
_U64 = (1 << 64) - 1
OK_HEAD = b"\x08\x01"  # code (1): CHECK_CODE_OK
_OVER = b"\x08\x02"  # code (1): CHECK_CODE_OVER_LIMIT
_OVERALL = (b"\x08\x01", b"\x08\x02")  # overall_code (1): OK, OVER_LIMIT
_LOCAL = b"\x18\x01"  # local_fallback (3): true
_RESULT = 0x12  # results (2), length-delimited
_REMAINING = b"\x20"  # remaining (4), varint
_RESET = 0x2A  # reset_after (5), length-delimited
_RETRY = 0x32  # retry_after (6), length-delimited
_TAILS_KEPT = 4096

_TAILS: dict[Outcome, bytes] = {}
# A result's tag and length, for the lengths of one byte.
_RESULT_OF = [bytes((_RESULT, size)) for size in range(0x80)]


def varint(n: int) -> bytes:
    """``n`` (a negative one as its 64-bit two's complement) as a protobuf varint."""
    n &= _U64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _duration(tag: int, seconds: float) -> bytes:
    """A ``Duration`` field of ``seconds`` (at least 0): present even when 0, as setting
    its fields marks it."""
    whole, nanos = divmod(int(max(0.0, seconds) * 1e9), _NANOS)
    body = (b"\x08" + varint(whole) if whole else b"") + (b"\x10" + varint(nanos) if nanos else b"")
    return bytes((tag, len(body))) + body


def _tail(outcome: Outcome) -> bytes:
    """The fields an outcome sets on a result: remaining, reset_after, and when refused
    retry_after (when finite) and the code."""
    tail = _REMAINING + varint(outcome.remaining) if outcome.remaining else b""
    tail += _duration(_RESET, outcome.reset_after)
    if not outcome.allowed:
        if math.isfinite(outcome.retry_after):
            tail += _duration(_RETRY, outcome.retry_after)
        tail += _OVER
    if len(_TAILS) >= _TAILS_KEPT:
        _TAILS.clear()
    _TAILS[outcome] = tail
    return tail


class Answers:
    """The results of one Check so far: see the module docstring.

    ``heads[i]`` is descriptor i's result before its counter is charged;
    ``outcomes[i]`` what its counter gave (None: answered by its head alone);
    ``shadows[i]`` whether its limit is in shadow mode (never refuses the request);
    ``tallies[i]`` where its decision is counted (None: no limit applied).
    """

    __slots__ = ("heads", "local_fallback", "outcomes", "shadows", "tallies")

    def __init__(self, local_fallback: bool = False) -> None:
        self.heads: list[bytes] = []
        self.outcomes: list[Outcome | None] = []
        self.shadows: list[bool] = []
        self.tallies: list[Tally | None] = []
        self.local_fallback = local_fallback

    def add(self, head: bytes, shadow: bool = False, tally: Tally | None = None) -> int:
        """A descriptor's result, answered by ``head`` until ``settle``; its index."""
        self.heads.append(head)
        self.outcomes.append(None)
        self.shadows.append(shadow)
        self.tallies.append(tally)
        return len(self.heads) - 1

    def settle(self, index: int, outcome: Outcome) -> None:
        """What descriptor ``index``'s counter gave."""
        self.outcomes[index] = outcome

    def response(self) -> ratelimit_pb2.CheckResponse:
        """The ``CheckResponse``: overall OVER_LIMIT iff a result not in shadow mode is.
        Each decision is counted in its tally (``tallies.count`` written out)."""
        out = [b""]
        append = out.append
        tails = _TAILS
        prefixes = _RESULT_OF
        over = False
        for head, outcome, shadow, tally in zip(
            self.heads, self.outcomes, self.shadows, self.tallies, strict=True
        ):
            if outcome is None:
                body = head
                if tally is not None:
                    tally.counts[WITHIN] += 1
            else:
                tail = tails.get(outcome)
                body = head + (tail if tail is not None else _tail(outcome))
                if outcome.allowed:
                    if tally is not None:
                        tally.counts[NEAR if outcome.remaining < tally.near_below else WITHIN] += 1
                elif shadow:
                    if tally is not None:
                        tally.counts[SHADOW] += 1
                else:
                    over = True
                    if tally is not None:
                        tally.counts[OVER] += 1
            size = len(body)
            append(prefixes[size] if size < 0x80 else bytes((_RESULT,)) + varint(size))
            append(body)
        out[0] = _OVERALL[over]
        if self.local_fallback:
            append(_LOCAL)
        return ratelimit_pb2.CheckResponse.FromString(b"".join(out))
