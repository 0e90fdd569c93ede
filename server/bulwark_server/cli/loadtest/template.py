"""Request and metadata templates: ghz's template actions in JSON text.

A template is compiled once into literal pieces and value functions; rendering a call
joins them. Text without actions renders to itself, and a request built from it is
serialized once for the whole run. The actions (Go template syntax, the subset ghz's
data uses):

=============================  ==================================================
``{{.RequestNumber}}``         the call's number, from 0
``{{.WorkerID}}``              the worker making the call (``w0``, ``w1`` …)
``{{.UUID}}``                  a random UUID, the same wherever used in one call
``{{newUUID}}``                a new random UUID at each use
``{{randomString N}}``         N random letters and digits (N ≤ 0: 2 to 16 of them)
``{{randomInt MIN MAX}}``      a random integer, MIN ≤ n < MAX
``{{.Timestamp}}``             the call's time, RFC 3339 (also ``.TimestampUnix``,
                               ``.TimestampUnixMilli``, ``.TimestampUnixNano``)
``{{.FullyQualifiedName}}``    the method (also ``.MethodName``, ``.ServiceName``,
                               ``.InputName``, ``.OutputName``)
=============================  ==================================================

The values are letters, digits and ``-:.``, so they need no escaping inside JSON
strings; outside quotes a number action stays a JSON number.
"""

from __future__ import annotations

import datetime
import random
import re
import string
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_CHARSET = string.ascii_letters + string.digits
_random = random.Random()


class TemplateError(ValueError):
    """An action the template language does not have, or one with bad arguments."""


@dataclass(frozen=True)
class MethodNames:
    """What the method actions print (``.FullyQualifiedName`` …)."""

    full_name: str = ""
    method: str = ""
    service: str = ""
    input: str = ""
    output: str = ""


class Call:
    """The values of one call that its actions share: its number, its worker, and
    (made on first use) its UUID and time."""

    __slots__ = ("_now", "_uuid", "number", "worker")

    def __init__(self, number: int, worker: str) -> None:
        self.number = number
        self.worker = worker
        self._uuid: str | None = None
        self._now: int | None = None

    @property
    def uuid(self) -> str:
        if self._uuid is None:
            self._uuid = str(uuid.uuid4())
        return self._uuid

    @property
    def now_ns(self) -> int:
        if self._now is None:
            self._now = time.time_ns()
        return self._now


Action = Callable[[Call], str]


def _random_string(length: int) -> str:
    if length <= 0:
        length = _random.randint(2, 16)
    return "".join(_random.choices(_CHARSET, k=length))


def _timestamp(call: Call) -> str:
    moment = datetime.datetime.fromtimestamp(call.now_ns / 1e9, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _int_args(name: str, words: list[str], count: int, usage: str) -> list[int]:
    if len(words) != count:
        raise TemplateError(f"{{{{{name} ...}}}} takes {count} integer(s): {usage}")
    try:
        return [int(word) for word in words]
    except ValueError:
        raise TemplateError(f"{{{{{name} ...}}}} takes integers: {usage}") from None


def _compile_action(text: str, names: MethodNames) -> Action:
    """One action's function, or TemplateError naming what is wrong."""
    words = text.split()
    if not words:
        raise TemplateError("an empty action {{}}")
    head, args = words[0], words[1:]
    fields: Mapping[str, Action] = {
        ".RequestNumber": lambda call: str(call.number),
        ".WorkerID": lambda call: call.worker,
        ".UUID": lambda call: call.uuid,
        ".Timestamp": _timestamp,
        ".TimestampUnix": lambda call: str(call.now_ns // 1_000_000_000),
        ".TimestampUnixMilli": lambda call: str(call.now_ns // 1_000_000),
        ".TimestampUnixNano": lambda call: str(call.now_ns),
        ".FullyQualifiedName": lambda call: names.full_name,
        ".MethodName": lambda call: names.method,
        ".ServiceName": lambda call: names.service,
        ".InputName": lambda call: names.input,
        ".OutputName": lambda call: names.output,
    }
    if head in fields:
        if args:
            raise TemplateError(f"{{{{{head}}}}} takes no arguments")
        return fields[head]
    if head == "newUUID":
        if args:
            raise TemplateError("{{newUUID}} takes no arguments")
        return lambda call: str(uuid.uuid4())
    if head == "randomString":
        (length,) = _int_args(head, args, 1, "{{randomString 8}}")
        return lambda call: _random_string(length)
    if head == "randomInt":
        low, high = _int_args(head, args, 2, "{{randomInt 1 1000}} (1 <= n < 1000)")
        if high <= low:
            raise TemplateError(f"{{{{randomInt {low} {high}}}}}: MAX must be above MIN")
        return lambda call: str(_random.randrange(low, high))
    known = ", ".join([*fields, "newUUID", "randomString N", "randomInt MIN MAX"])
    raise TemplateError(f"unknown template action {{{{{text}}}}}; known: {known}")


class Template:
    """A text with actions, compiled once (``static`` when it has none)."""

    def __init__(self, text: str, names: MethodNames | None = None) -> None:
        names = names or MethodNames()
        self.text = text
        self._parts: list[str | Action] = []
        position = 0
        for match in _ACTION.finditer(text):
            if match.start() > position:
                self._parts.append(text[position : match.start()])
            self._parts.append(_compile_action(match.group(1), names))
            position = match.end()
        if position < len(text):
            self._parts.append(text[position:])
        if "{{" in "".join(p for p in self._parts if isinstance(p, str)):
            raise TemplateError("an action opened with {{ is not closed with }}")
        self.static = all(isinstance(part, str) for part in self._parts)

    def render(self, call: Call) -> str:
        """The text for one call."""
        if self.static:
            return self.text
        return "".join(part if isinstance(part, str) else part(call) for part in self._parts)
