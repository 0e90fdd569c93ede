"""A load step's run as the engine sees it, and its report made to fit the record.

The run itself is a ``bulwark loadtest`` child process (``chaos_setup.LoadProcess``);
its report is its JSON, kept in the experiment's record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Protocol

MAX_REPORT_BYTES = 64 * 1024
# All of an experiment's load reports: its record, spec and timeline included, must
# stay within one etcd request (1.5 MiB by default), or its end could never be recorded.
MAX_REPORTS_BYTES = 512 * 1024


class LoadRun(Protocol):
    """A load step's process."""

    def stop(self) -> None:
        """Stop it early; its report follows."""
        ...

    async def report(self) -> str:
        """Its JSON report once it has ended ("" when it left none)."""
        ...

    def close(self) -> None:
        """End it now, its report unread (this replica no longer leads)."""
        ...


async def collect(runs: Sequence[LoadRun]) -> list[str]:
    """The runs' reports, waited for together (each may take its stop grace), each
    made to fit its share of ``MAX_REPORTS_BYTES``."""
    limit = min(MAX_REPORT_BYTES, MAX_REPORTS_BYTES // len(runs))
    reports = await asyncio.gather(*(run.report() for run in runs), return_exceptions=True)
    out = []
    for report in reports:
        if isinstance(report, BaseException):
            if not isinstance(report, Exception):
                raise report  # cancelled: leadership ended
            report = json.dumps({"error": f"no report: {report}"})
        out.append(fit(report, limit))
    return out


def fit(report: str, limit: int) -> str:
    """The report if it fits in ``limit`` bytes; else, still JSON, without its largest
    top-level fields (a per-call ``details`` list, a histogram) until it does."""
    if len(report.encode()) <= limit:
        return report
    try:
        data = json.loads(report)
    except ValueError:
        data = None
    if isinstance(data, dict):
        dropped: list[str] = []
        sizes = {key: len(json.dumps(value)) for key, value in data.items()}
        for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
            del data[key]
            dropped.append(key)
            text = json.dumps({**data, "truncated": dropped})
            if len(text.encode()) <= limit:
                return text
    return json.dumps({"error": f"the report's {len(report.encode())} bytes exceed {limit}"})
