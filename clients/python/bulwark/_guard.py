"""The interceptors' shared policy: rule lookup, refusals, outcome classification.

I/O-free; both ``BulwarkInterceptor`` (threads) and ``AsyncBulwarkInterceptor``
(asyncio) only make the calls and feed the answers to ``GuardPolicy``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from bulwark._adaptive import Gradient2Settings, ThrottleSettings
from bulwark.errors import BulwarkError, ResourceExhaustedError

if TYPE_CHECKING:
    from bulwark._states import Decision

__all__ = [
    "DEFAULT_FAILURE_CODES",
    "REJECTED_BY_KEY",
    "Guard",
    "GuardPolicy",
    "Refusal",
    "RejectedCall",
    "slow_call_of",
    "trailing_metadata",
]

log = logging.getLogger("bulwark")

#: Downstream statuses that count as a failure of the dependency.
DEFAULT_FAILURE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

#: Trailing metadata key naming the step that refused a call.
REJECTED_BY_KEY = "bulwark-rejected-by"


@dataclass(frozen=True)
class Guard:
    """What guards the calls of one method or service; each part is optional.

    ``limit`` is ``(domain, descriptor)``, e.g. ``("outbound", {"service": "payments"})``.
    ``service`` names the downstream: each call's outcome and latency are counted in
    its signals (``Client.record_call``).

    ``adaptive`` and ``throttle`` are decided in the process, without Bulwark:
    ``adaptive`` bounds the calls in flight to the downstream by a Gradient2 limit
    (``True`` for Netflix's defaults, or ``Gradient2Settings``), ``throttle`` rejects
    calls locally while the downstream refuses work (the SRE book's adaptive
    throttling; ``True`` for K = 2 over two minutes, or ``ThrottleSettings``). Their
    state is per downstream: ``service`` if set, else the rule's key.
    """

    breaker: str | None = None
    bulkhead: str | None = None
    limit: tuple[str, Mapping[str, str]] | None = None
    service: str | None = None
    adaptive: Gradient2Settings | bool | None = None
    throttle: ThrottleSettings | bool | None = None

    def __post_init__(self) -> None:
        # Checked here, so a typo (adaptive=20) fails where the rules are written.
        if not isinstance(self.adaptive, Gradient2Settings | bool | None):
            raise TypeError(
                f"adaptive: expected Gradient2Settings, bool or None, "
                f"got {type(self.adaptive).__name__}"
            )
        if not isinstance(self.throttle, ThrottleSettings | bool | None):
            raise TypeError(
                f"throttle: expected ThrottleSettings, bool or None, "
                f"got {type(self.throttle).__name__}"
            )

    @property
    def needs_client(self) -> bool:
        """Whether a step of this guard asks Bulwark (all but ``adaptive``/``throttle``)."""
        return (
            self.breaker is not None
            or self.bulkhead is not None
            or self.limit is not None
            or self.service is not None
        )


class RejectedCall(grpc.RpcError, grpc.Call):
    """A call Bulwark refused before it reached the downstream (synchronous channels)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, rejected_by: str, retry_after: float | None
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details
        self.rejected_by = rejected_by
        self.retry_after = retry_after
        self._trailing = trailing_metadata(rejected_by, retry_after)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


def trailing_metadata(rejected_by: str, retry_after: float | None) -> tuple[tuple[str, str], ...]:
    items = [(REJECTED_BY_KEY, rejected_by)]
    if retry_after is not None:
        items.append(("retry-after-ms", str(max(0, round(retry_after * 1000)))))
    return tuple(items)


class Refusal(Exception):
    """Internal: a guard step refused the call."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        rejected_by: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.rejected_by = rejected_by
        self.retry_after = retry_after

    def as_aio_error(self) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            self.code,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*trailing_metadata(self.rejected_by, self.retry_after)),
            details=self.details,
        )

    def as_rejected_call(self) -> RejectedCall:
        return RejectedCall(self.code, self.details, self.rejected_by, self.retry_after)


class GuardPolicy:
    """Every decision of both interceptors: rules, refusals, Bulwark failures, outcomes.

    I/O-free: the interceptors make the calls and feed the answers in.
    """

    def __init__(
        self,
        rules: Mapping[str, Guard],
        failure_codes: Collection[grpc.StatusCode],
        fail_open: bool,
    ) -> None:
        exact: dict[str, Guard] = {}
        prefixes: list[tuple[str, Guard]] = []
        for key, guard in rules.items():
            if not key.startswith("/"):
                raise ValueError(f"rule {key!r}: a method starts with '/' ('/pkg.Service/Method')")
            if not isinstance(guard, Guard):
                raise TypeError(f"rule {key!r}: expected a Guard, got {type(guard).__name__}")
            if key.endswith("/"):
                prefixes.append((key, guard))
            else:
                exact[key] = guard
        self._exact = exact
        self._prefixes = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)
        self._cache: dict[str, tuple[str, Guard] | None] = {}
        self.failure_codes = frozenset(failure_codes)
        self.fail_open = fail_open
        self._warned: set[tuple[str, str, grpc.StatusCode]] = set()

    def guard_for(self, method: str | bytes) -> Guard | None:
        rule = self.rule_for(method)
        return rule[1] if rule is not None else None

    def rule_for(self, method: str | bytes) -> tuple[str, Guard] | None:
        """The rule matching ``method`` as ``(key, guard)``, or None when none does."""
        name = method.decode() if isinstance(method, bytes) else method
        if name in self._cache:
            return self._cache[name]
        guard = self._exact.get(name)
        rule = (name, guard) if guard is not None else None
        if rule is None:
            rule = next((item for item in self._prefixes if name.startswith(item[0])), None)
        if len(self._cache) < 10_000:  # method names are few; never grow without bound
            self._cache[name] = rule
        return rule

    def failed(self, code: grpc.StatusCode | None) -> bool:
        return code in self.failure_codes

    def within_limit(self, domain: str, descriptor: Mapping[str, str], answer: Any) -> None:
        """Step 1: ``answer`` is ``check``'s bool or its BulwarkError; raise to refuse."""
        if isinstance(answer, BulwarkError):
            self.bulwark_failed("rate-limit", domain, answer)
        elif not answer:
            raise self.refused_by_limit(domain, descriptor)

    def permit_failed(self, bulkhead: str, error: BulwarkError) -> None:
        """Step 3 could not get a permit: a full bulkhead refuses, else ``bulwark_failed``."""
        if isinstance(error, ResourceExhaustedError):
            raise self.refused_by_bulkhead(bulkhead, error) from None
        self.bulwark_failed("bulkhead", bulkhead, error)

    def admitted(self, breaker: str, answer: Any) -> None:
        """Step 2: ``answer`` is ``allow``'s Decision or its BulwarkError; raise to refuse."""
        if isinstance(answer, BulwarkError):
            self.bulwark_failed("breaker", breaker, answer)
        elif not answer.allowed:
            raise self.refused_by_breaker(breaker, answer)

    def outcome(
        self, code: grpc.StatusCode | None, elapsed: float, slow_call: float
    ) -> tuple[bool, bool]:
        """The downstream answered ``code`` after ``elapsed`` s: (success, slow) to record."""
        return code not in self.failure_codes, elapsed > slow_call

    def refused_by_breaker(self, name: str, decision: Decision) -> Refusal:
        when = f"; retry in {decision.retry_after:.3f}s" if decision.retry_after is not None else ""
        return Refusal(
            grpc.StatusCode.UNAVAILABLE,
            f"circuit breaker {name!r} is open ({decision.source}){when}",
            "breaker",
            decision.retry_after,
        )

    @staticmethod
    def refused_by_limit(domain: str, descriptor: Mapping[str, str]) -> Refusal:
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"over the rate limit of {domain!r}: {dict(descriptor)}",
            "rate-limit",
        )

    @staticmethod
    def refused_by_bulkhead(name: str, error: ResourceExhaustedError) -> Refusal:
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"bulkhead {name!r} is full: {error.details}",
            "bulkhead",
            getattr(error, "retry_after", None),
        )

    def bulwark_failed(self, step: str, name: str, error: BulwarkError) -> None:
        """Bulwark could not decide ``step`` for ``name``: go on (fail open) or refuse."""
        key = (step, name, error.code)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "bulwark could not decide %s %r (%s); %s",
                step,
                name,
                error,
                "calls go ahead without it" if self.fail_open else "calls fail with UNAVAILABLE",
            )
        if not self.fail_open:
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"bulwark could not decide {step} {name!r}: {error}",
                step,
            )


def slow_call_of(client: Any) -> float:
    """The client's slow-call threshold in seconds (60 when it has none)."""
    options = getattr(client, "options", None)
    return float(getattr(options, "slow_call", 60.0))
