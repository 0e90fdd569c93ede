"""The Prometheus scrape endpoint: ``GET /metrics`` over plain HTTP/1.1, on the event loop.

Served by the replica's own event loop rather than prometheus_client's threaded
server: the collectors read state the loop owns (the cache, the capabilities'
tables) and must not see it half-changed. A scrape renders in one go, between two
of the loop's steps. The format follows the scraper's ``Accept`` header (the text
format, or OpenMetrics when asked for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 10.0
MAX_HEAD = 16 * 1024
_INDEX = b"Bulwark: metrics at /metrics\n"


class MetricsEndpoint:
    """Serves ``registry`` on ``host:port`` (port 0 picks a free one: ``port`` after start)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self.port, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            try:
                status, content_type, body = self._answer(head)
            except Exception:  # a collector's bug: say so, and keep serving
                log.exception("metrics: a scrape failed", extra={"event": "metrics.failed"})
                status, content_type, body = "500 Internal Server Error", "text/plain", b"failed\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a scraper that went away or sent no request: nothing to answer
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", "text/plain", b"bad request line\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if target == "/":
            return "200 OK", "text/plain; charset=utf-8", _INDEX
        if target != "/metrics":
            return "404 Not Found", "text/plain", b"not found; metrics are at /metrics\n"
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        encode, content_type = choose_encoder(accept)
        return "200 OK", content_type, encode(self._registry)
