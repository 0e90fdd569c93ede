"""Bulwark's own keys in an envoyproxy/ratelimit YAML file: ``x-bulwark-*`` inside ``rate_limit``.

They let a limit of that file count as Bulwark's token bucket instead of
envoyproxy/ratelimit's fixed window, for smooth limits::

    rate_limit:
      unit: minute
      requests_per_unit: 60              # the sustained rate: 1 a second
      x-bulwark-algorithm: token_bucket  # fixed_window (the default) | token_bucket
      x-bulwark-burst: 120               # token_bucket only; default requests_per_unit

Guarantees:

* A ``rate_limit`` without these keys is read exactly as before they existed:
  a fixed window (``LIMIT_ALGORITHM_FIXED_WINDOW``).
* ``x-bulwark-algorithm`` is ``fixed_window`` or ``token_bucket`` (any case, as
  ``unit``). A token bucket holds ``x-bulwark-burst`` tokens (default
  ``requests_per_unit``, at least that and at most ``MAX_BURST``), starts full
  and refills continuously at ``requests_per_unit`` per ``unit``; each request
  takes its hits from it, so a burst drains it and it then admits the sustained
  rate, with no reset at the start of each unit.
* ``x-bulwark-burst`` needs ``x-bulwark-algorithm: token_bucket``: a fixed
  window has no burst of its own, and a burst without the algorithm is more
  likely a mistake than a wish for a window.
* With ``unlimited: true`` neither key may be set (nothing is counted), as
  envoyproxy/ratelimit refuses a ``unit`` there.
* With ``requests_per_unit: 0`` the limit blocks every request it matches,
  whatever it counts with: ``x-bulwark-algorithm`` is accepted and kept (raising
  the rate later needs no other edit), ``x-bulwark-burst`` is refused (a burst
  admits requests, a blocking limit admits none).
* Any other key starting ``x-bulwark-`` is an error, so a misspelt key never
  silently leaves a limit a fixed window. Each problem is an ``ExtensionError``
  naming the key; the file's parser adds the YAML path.

envoyproxy/ratelimit refuses every key it does not know, so a file that uses
these keys loads only into Bulwark. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bulwark.v1 import ratelimit_pb2
from bulwark_server.ratelimits.config import FIXED_WINDOW, MAX_BURST, TOKEN_BUCKET

PREFIX = "x-bulwark-"
ALGORITHM = "x-bulwark-algorithm"
BURST = "x-bulwark-burst"
KEYS = frozenset({ALGORITHM, BURST})
ALGORITHMS: dict[str, int] = {"fixed_window": FIXED_WINDOW, "token_bucket": TOKEN_BUCKET}


class ExtensionError(ValueError):
    """One extension key is wrong: ``key`` names it, ``problem`` says why."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Extensions:
    """What the keys ask for: a ``LimitAlgorithm`` and a burst (0: the default)."""

    algorithm: int = FIXED_WINDOW
    burst: int = 0


def is_extension(key: object) -> bool:
    """True for a key in Bulwark's reserved namespace (any case, so a miscased key is caught)."""
    return isinstance(key, str) and key.lower().startswith(PREFIX)


def unknown_key_hint(key: str) -> str:
    """The hint for an ``x-bulwark-*`` key the format does not know (or a known one misplaced)."""
    if key in KEYS:
        return "it belongs in rate_limit"
    return f"Bulwark's keys are {' and '.join(sorted(KEYS))}, in rate_limit"


def read_extensions(
    spec: Mapping[str, Any], *, unlimited: bool, requests_per_unit: int
) -> Extensions:
    """The extensions of one ``rate_limit`` mapping (scalars as text, as the parser reads them).

    ``requests_per_unit`` is the limit's (ignored when ``unlimited``). Raises
    ExtensionError naming the first wrong key.
    """
    for key in spec:
        if is_extension(key) and key not in KEYS:
            raise ExtensionError(str(key), f"unknown key here; {unknown_key_hint(str(key))}")
    if unlimited:
        present = sorted(KEYS & spec.keys())
        if present:
            raise ExtensionError(present[0], "must not be set when unlimited is true")
        return Extensions()
    algorithm = FIXED_WINDOW
    if ALGORITHM in spec:
        text = _text(spec, ALGORITHM)
        algorithm = ALGORITHMS.get(text.lower(), 0)
        if not algorithm:
            raise ExtensionError(ALGORITHM, f"must be fixed_window or token_bucket, got {text!r}")
    if BURST not in spec:
        return Extensions(algorithm)
    if algorithm != TOKEN_BUCKET:
        raise ExtensionError(
            BURST, f"needs {ALGORITHM}: token_bucket (a fixed window has no burst)"
        )
    if requests_per_unit == 0:
        raise ExtensionError(
            BURST, "must not be set when requests_per_unit is 0 (the limit blocks every request)"
        )
    text = _text(spec, BURST).strip()
    digits = text.removeprefix("+")
    if not (digits.isascii() and digits.isdigit()):
        raise ExtensionError(BURST, f"must be a whole number, got {text!r}")
    burst = int(digits)
    if not requests_per_unit <= burst <= MAX_BURST:
        raise ExtensionError(
            BURST,
            f"must be at least requests_per_unit ({requests_per_unit}) and at most {MAX_BURST}, "
            f"got {burst}",
        )
    return Extensions(algorithm, burst)


def describe_algorithm(limit: ratelimit_pb2.Limit) -> str:
    """`` token_bucket(burst N)`` for a counting token-bucket limit, else empty (fixed window)."""
    if limit.algorithm != TOKEN_BUCKET or limit.unlimited or limit.blocks_all:
        return ""
    return f" token_bucket(burst {limit.burst})"


def _text(spec: Mapping[str, Any], key: str) -> str:
    # The parser's loader reads every scalar as text (an empty one as None).
    raw = spec[key]
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ExtensionError(key, "must be a single value, not a list or a mapping")
    return raw
