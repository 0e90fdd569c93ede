"""Bearer tokens: ``bwk.<id>.<secret>``, stored as the SHA-256 of the secret only.

* The secret is 32 random bytes (``secrets.token_urlsafe``), so a plain SHA-256
  is enough: there is nothing to brute-force that a slow hash would protect.
* Tokens live under ``/bulwark/v1/tokens/<id>`` and every replica checks them
  against its watch-fed cache: no etcd round trip per call, and a revoked
  (deleted) token is refused by every replica once the deletion reaches it.
* Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from bulwark.v1 import auth_pb2
from bulwark_server import timestamps
from bulwark_server.errors import NotFound
from bulwark_server.security.roles import Role
from bulwark_server.store import EtcdStore, Page, scan_page
from bulwark_server.store.keys import TOKEN_KIND, TOKEN_REVOCATION_KIND, kind_prefix

# A revoked token leaves a tombstone, so restoring an older snapshot cannot revive it.
PREFIX = "bwk"
ID_BYTES = 8
SECRET_BYTES = 32


def new_token() -> tuple[str, str, str]:
    """(id, secret, the token string to hand out)."""
    token_id = secrets.token_hex(ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return token_id, secret, f"{PREFIX}.{token_id}.{secret}"


def parse(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    token_id, secret = parts[1], parts[2]
    if len(token_id) != 2 * ID_BYTES or not all(c in "0123456789abcdef" for c in token_id):
        return None
    if not 16 <= len(secret) <= 128:
        return None
    return token_id, secret


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def bearer(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, credentials = text.partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    return None


class TokenStore:
    """Create, list, revoke and verify tokens kept in etcd."""

    def __init__(self, store: EtcdStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._store = store
        self._clock = clock
        self._decoded: dict[str, tuple[int, auth_pb2.Token]] = {}

    async def create(
        self,
        name: str,
        role: Role,
        created_by: str,
        ttl: float | None = None,
        *,
        lease: int = 0,
        max_priority: int = auth_pb2.CALL_PRIORITY_UNSPECIFIED,
    ) -> tuple[str, auth_pb2.Token]:
        """Store a new token; return the token string (its only copy) and its public record."""
        token_id, secret, token = new_token()
        now = self._clock()
        record = auth_pb2.Token(
            id=token_id,
            name=name,
            role=role.value,
            created_at=timestamps.at(now),
            created_by=created_by,
            secret_sha256=digest(secret),
            max_priority=max_priority,  # type: ignore[arg-type]
        )
        if ttl is not None:
            record.expires_at.CopyFrom(timestamps.at(now + ttl))
        await self._store.create(TOKEN_KIND, token_id, record.SerializeToString(), lease=lease)
        return token, _public(record)

    def list(self, size: int, start_after: str) -> Page[auth_pb2.Token]:
        """One page of tokens (without secrets) in id order, and the next page's token."""
        page = scan_page(self._store.cache, kind_prefix(TOKEN_KIND), size, start_after)
        return page.map(lambda e: _public(auth_pb2.Token.FromString(e.value)))

    async def revoke(self, token_id: str, revoked_by: str = "") -> int:
        entry = self._store.get(TOKEN_KIND, token_id) or await self._store.read(
            TOKEN_KIND, token_id
        )
        if entry is None:
            raise NotFound(f"token {token_id!r} does not exist (or was revoked)")
        record = _public(auth_pb2.Token.FromString(entry.value))
        record.created_by = f"{record.created_by}; revoked by {revoked_by or 'anonymous'}"
        # The tombstone first: a token must never be deleted without one.
        await self._store.put(TOKEN_REVOCATION_KIND, token_id, record.SerializeToString())
        try:
            return await self._store.delete(TOKEN_KIND, token_id)
        except NotFound:
            raise NotFound(f"token {token_id!r} does not exist (or was revoked)") from None

    def revoked(self) -> set[str]:
        """Ids of every revoked token."""
        start = len(kind_prefix(TOKEN_REVOCATION_KIND))
        return {e.key[start:].decode() for e in self._store.scan(TOKEN_REVOCATION_KIND)}

    def verify(self, token: str) -> auth_pb2.Token | None:
        """The record of a valid token (known, secret matching, not expired), else None."""
        parsed = parse(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        entry = self._store.get(TOKEN_KIND, token_id)
        if entry is None:
            return None
        held = self._decoded.get(token_id)
        if held is None or held[0] != entry.mod_revision:
            held = (entry.mod_revision, auth_pb2.Token.FromString(entry.value))
            self._decoded[token_id] = held
            if len(self._decoded) > 2 * len(self._store.scan(TOKEN_KIND)) + 16:
                self._decoded = {token_id: held}  # forget revoked ones
        record = held[1]
        if not hmac.compare_digest(record.secret_sha256, digest(secret)):
            return None
        if record.HasField("expires_at") and timestamps.unix(record.expires_at) <= self._clock():
            return None
        return record


def _public(record: auth_pb2.Token) -> auth_pb2.Token:
    out = auth_pb2.Token()
    out.CopyFrom(record)
    out.ClearField("secret_sha256")
    return out
