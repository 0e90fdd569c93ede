"""The limits file (``BULWARK_LIMITS_FILE``): its limits stored as a replica starts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bulwark_server.errors import NotFound
from bulwark_server.ratelimits.envoy_config import (
    EnvoyConfigError,
    describe,
    load_file,
    same_limit,
)
from bulwark_server.ratelimits.manager import RateLimitManager

log = logging.getLogger(__name__)


async def load_limits_file(limiter: RateLimitManager, path: Path | None) -> None:
    """Create or update every limit of the limits file ``path``; log each one.

    A limit already stored exactly as in the file is left alone, so replicas
    restarting with the same file do not rewrite it. Raises RuntimeError when
    the file became unreadable or invalid since the settings were checked.
    """
    if path is None:
        return
    try:
        entries = await asyncio.to_thread(load_file, path)
    except EnvoyConfigError as exc:
        raise RuntimeError(f"limits_file: {exc}") from None
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for entry in entries:
        limit = entry.limit
        try:
            stored = limiter.get(limit.domain, limit.name)
        except NotFound:
            stored = None
        if stored is not None and same_limit(stored, limit):
            action = "unchanged"
        else:
            _, created = await limiter.put(limit)
            action = "created" if created else "updated"
        counts[action] += 1
        log.info(
            "limit %s from %s: %s",
            action,
            path,
            describe(limit),
            extra={
                "event": "limits_file.limit",
                "action": action,
                # Not "name": LogRecord has that attribute and refuses it as an extra.
                "limit": f"{limit.domain}/{limit.name}",
            },
        )
    log.info(
        "loaded %d limits from %s (%d created, %d updated, %d unchanged)",
        len(entries),
        path,
        counts["created"],
        counts["updated"],
        counts["unchanged"],
        # Prefixed: "created" is a LogRecord attribute and cannot be an extra.
        extra={
            "event": "limits_file.loaded",
            "path": str(path),
            **{f"limits_{action}": n for action, n in counts.items()},
        },
    )
