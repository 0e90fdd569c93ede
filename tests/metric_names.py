"""Metric and label names, read out of PromQL expressions and out of scrapes.

No Prometheus is needed: the dashboard test compares what its expressions read with
what a replica exports. PromQL is not parsed in full (promtool checks that it parses):
strings, label matchers and ranges are blanked out, then the names that are neither a
keyword nor followed by a call's parenthesis are metric names. Expressions are taken
with their template variables already replaced.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")  # ranges and subqueries: [5m], [1h:1m]
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_BY = re.compile(r"\bby\s*\(([^()]*)\)", re.IGNORECASE)
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
# A number (durations included: `10m` is one token, not 10 and a metric `m`), or a name
# and whether a call's parenthesis follows it.
_TOKEN = re.compile(
    r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)"
    r"|(?P<name>[a-zA-Z_:][\w:]*)(?P<call>\s*\()?"
)
# Words that are not metric names when no parenthesis follows them (PromQL's keywords
# are case-insensitive). Functions and aggregations are always followed by one.
KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
        "bool", "and", "or", "unless", "atan2", "inf", "nan",
    }
)  # fmt: skip
# Aggregations that take the labels they keep from `by`/`without` (and all of them
# with neither). topk, bottomk, limitk and limit_ratio keep every label of their input.
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
     "quantile"}
)  # fmt: skip


def _blank_strings(promql: str) -> str:
    return _STRING.sub('""', promql)


def metric_names(promql: str) -> set[str]:
    """Names of the metrics ``promql`` selects (a PromQL without template variables)."""
    names = set(_NAME_MATCHER.findall(promql))
    text = _blank_strings(promql)
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    for token in _TOKEN.finditer(text):
        name = token.group("name")
        if name and not token.group("call") and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def selectors_keeping_instance(promql: str, names: set[str]) -> set[str]:
    """Of ``names``, those ``promql`` selects with a matcher on ``instance``, or reads
    under no aggregation that drops ``instance``."""
    keeping = {
        name
        for name in names
        if re.search(rf"\b{re.escape(name)}\s*\{{[^}}]*\binstance\s*[=!]", promql)
    }
    text = _BRACKETS.sub(" ", _MATCHERS.sub(" ", _blank_strings(promql)))
    for token in _TOKEN.finditer(text):
        name = token.group("name")
        if name in names and not token.group("call") and not _drops_instance(text, token.start()):
            keeping.add(name)
    return keeping


def _drops_instance(text: str, at: int) -> bool:
    """Whether an aggregation around position ``at`` of ``text`` drops ``instance``."""
    opened: list[int] = []
    for i, char in enumerate(text[:at]):
        if char == "(":
            opened.append(i)
        elif char == ")" and opened:
            opened.pop()
    for paren in opened:
        before = re.search(
            r"\b(\w+)\s*(?:(by|without)\s*\(([^()]*)\)\s*)?$", text[:paren], re.IGNORECASE
        )
        if before is None or before.group(1).lower() not in AGGREGATIONS:
            continue
        grouping, labels = before.group(2), before.group(3)
        if grouping is None:
            # `sum(...) by (labels)`: the grouping comes after the closing parenthesis.
            after = re.match(
                r"\s*(by|without)\s*\(([^()]*)\)", text[_closing(text, paren) + 1 :], re.IGNORECASE
            )
            if after:
                grouping, labels = after.group(1), after.group(2)
        kept = {label.strip() for label in (labels or "").split(",")}
        if grouping is None or (grouping.lower() == "by") != ("instance" in kept):
            return True
    return False


def _closing(text: str, paren: int) -> int:
    depth = 0
    for i in range(paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return len(text)


def grouping_labels(promql: str) -> set[str]:
    """Labels ``promql``'s aggregations group by (``by (...)``)."""
    return {
        label.strip()
        for labels in _BY.findall(promql)
        for label in labels.split(",")
        if label.strip()
    }


# -- Scrapes (the text exposition format) ----------------------------------------------


def exported_names(body: str) -> set[str]:
    """Series names of a text-format scrape, read from its ``# TYPE`` lines too, so that
    a family without samples yet (a counter of an RPC never called) counts."""
    names = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {name, f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def exported_labels(body: str) -> dict[str, set[str]]:
    """Label names of each series name that has samples in a text-format scrape."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels
