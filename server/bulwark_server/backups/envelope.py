"""Envelope encryption with AES-256-GCM: a fresh data key per record, wrapped by a KEK.

* Each ``seal`` draws a new 32-byte data key and new 12-byte random nonces, so two
  seals of the same plaintext share nothing but their lengths.
* The data is encrypted under the data key with the caller's associated data
  (``aad``: e.g. the key id and version), so a ciphertext cannot be replayed as
  another record.
* The data key is wrapped under a key-encryption key (KEK) with associated data
  binding both ``aad`` and the KEK id: a wrapped key cannot be moved to another
  record, nor relabelled with another KEK id (even one holding the same bytes).
* ``rewrap`` changes only the wrapping, so rotating a KEK rewrites 48 bytes per
  record and leaves every ciphertext (and its SHA-256) byte-identical.
* Anything altered, truncated or opened with other associated data raises
  ``Corrupt``; a KEK id the ring does not hold raises ``UnknownKek``. No error
  message, ``repr`` or log line ever carries key material.

Everything here is pure except ``KeyRing.load``, which reads one file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
import struct
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bulwark.v1 import keybackup_pb2

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce; random nonces are safe at this volume
TAG_BYTES = 16
WRAPPED_KEY_BYTES = KEY_BYTES + TAG_BYTES

# Domain separation: a wrap's associated data can never equal any data's.
_WRAP_CONTEXT = b"bulwark.keybackup.wrap.v1\x00"
_KEK_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


class Corrupt(Exception):
    """Sealed data that does not decrypt or verify (altered, truncated, other associated data)."""


class UnknownKek(Exception):
    """Data sealed under a KEK id the key ring does not hold."""


class KeyRing:
    """Key-encryption keys by id, one of them active (the one ``seal`` uses by default)."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one KEK")
        held: dict[str, bytes] = {}
        for kek_id, key in keys.items():
            _check_id(kek_id)
            if not isinstance(key, bytes | bytearray | memoryview):
                raise TypeError(f"KEK {kek_id!r} is a {type(key).__name__}, not bytes")
            if len(key) != KEY_BYTES:
                raise ValueError(
                    f"KEK {kek_id!r} is {len(key)} bytes; it must be exactly {KEY_BYTES} (AES-256)"
                )
            held[kek_id] = bytes(key)
        if active not in held:
            raise ValueError(f"active KEK {active!r} is not in the key ring")
        self._keys = held
        self._active = active

    @classmethod
    def parse(cls, text: str, active: str = "") -> KeyRing:
        """Parse ``id=base64key`` entries separated by commas or newlines.

        Blank lines and lines starting with ``#`` are ignored. Keys may be standard
        or URL-safe base64, with or without padding. The active KEK defaults to the
        last entry, so appending a new key and restarting makes it the active one.
        """
        keys: dict[str, bytes] = {}
        number = 0
        for line_number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            for piece in stripped.split(","):
                entry = piece.strip()
                if not entry:
                    continue
                number += 1
                # Errors name the position, not the text: a malformed entry may be a bare key.
                where = f"KEK entry #{number} (line {line_number})"
                kek_id, sep, encoded = entry.partition("=")
                kek_id, encoded = kek_id.strip(), encoded.strip()
                if not sep:
                    raise ValueError(f"{where} has no '=': expected id=base64key")
                if not kek_id:
                    raise ValueError(f"{where} has an empty id: expected id=base64key")
                if not encoded:
                    raise ValueError(f"{where} has no key after '=': expected id=base64key")
                if not _KEK_ID.fullmatch(kek_id):
                    raise ValueError(
                        f"{where}: the id must be 1-64 letters, digits, '.', '_' or '-'"
                    )
                if kek_id in keys:
                    raise ValueError(f"{where}: duplicate KEK id {kek_id!r}")
                key = _decode_key(encoded)
                if key is None:
                    raise ValueError(f"{where} ({kek_id!r}): the key is not valid base64")
                if len(key) != KEY_BYTES:
                    raise ValueError(
                        f"{where} ({kek_id!r}): the key is {len(key)} bytes; "
                        f"it must be exactly {KEY_BYTES} (AES-256)"
                    )
                keys[kek_id] = key
        if not keys:
            raise ValueError("no KEK entries found (expected id=base64key, one per line)")
        return cls(keys, active or next(reversed(keys)))

    @classmethod
    def load(cls, path: Path, active: str = "") -> KeyRing:
        """Parse a KEK file, refusing one that group or others may access."""
        # Check the mode of the file actually opened, not of whatever the path names later.
        fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, encoding="utf-8") as file:
            mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
            if mode & 0o077:
                raise ValueError(
                    f"KEK file {str(path)!r} is accessible by group or others "
                    f"(mode {mode:04o}); run: chmod 600 {path}"
                )
            text = file.read()
        try:
            return cls.parse(text, active)
        except ValueError as exc:
            raise ValueError(f"KEK file {str(path)!r}: {exc}") from None

    @staticmethod
    def generate_entry(kek_id: str) -> str:
        """A new ``id=base64key`` line with 32 random bytes, for a KEK file."""
        _check_id(kek_id)
        return f"{kek_id}={base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"

    @property
    def active_id(self) -> str:
        return self._active

    def ids(self) -> list[str]:
        """KEK ids in the order given (for a parsed ring: file order)."""
        return list(self._keys)

    def __contains__(self, kek_id: object) -> bool:
        return kek_id in self._keys

    def __repr__(self) -> str:
        # Ids only: a ring must be safe to log.
        return f"KeyRing(ids={self.ids()!r}, active={self._active!r})"

    def _key(self, kek_id: str) -> bytes:
        key = self._keys.get(kek_id)
        if key is None:
            raise UnknownKek(f"no KEK {kek_id!r} in the key ring (it holds {self.ids()!r})")
        return key


def seal(ring: KeyRing, plaintext: bytes, aad: bytes, kek_id: str = "") -> keybackup_pb2.SealedData:
    """Encrypt under a fresh data key, wrapped by ``kek_id`` (default: the ring's active KEK)."""
    kek_id = kek_id or ring.active_id
    kek = ring._key(kek_id)
    data_key = AESGCM.generate_key(bit_length=8 * KEY_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    wrap_nonce = os.urandom(NONCE_BYTES)
    return keybackup_pb2.SealedData(
        kek_id=kek_id,
        wrapped_key=AESGCM(kek).encrypt(wrap_nonce, data_key, _wrap_aad(aad, kek_id)),
        wrap_nonce=wrap_nonce,
        nonce=nonce,
        ciphertext=AESGCM(data_key).encrypt(nonce, plaintext, aad),
    )


def open_sealed(ring: KeyRing, sealed: keybackup_pb2.SealedData, aad: bytes) -> bytes:
    """The plaintext of ``sealed``, after verifying both the wrapping and the data."""
    data_key = _unwrap(ring, sealed, aad)
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag:
        raise Corrupt(
            "the ciphertext does not verify (altered, or sealed for other associated data)"
        ) from None


def rewrap(
    ring: KeyRing, sealed: keybackup_pb2.SealedData, aad: bytes, target_kek_id: str
) -> keybackup_pb2.SealedData:
    """The same nonce and ciphertext, with the data key re-wrapped under ``target_kek_id``.

    Only the wrapping is verified (the ciphertext is not decrypted), so rotation
    never holds plaintext. Already under the target: an equal copy.
    """
    target = ring._key(target_kek_id)
    data_key = _unwrap(ring, sealed, aad)
    out = keybackup_pb2.SealedData()
    out.CopyFrom(sealed)
    if sealed.kek_id != target_kek_id:
        wrap_nonce = os.urandom(NONCE_BYTES)
        out.kek_id = target_kek_id
        out.wrap_nonce = wrap_nonce
        out.wrapped_key = AESGCM(target).encrypt(
            wrap_nonce, data_key, _wrap_aad(aad, target_kek_id)
        )
    return out


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wrap_aad(aad: bytes, kek_id: str) -> bytes:
    # Length-prefixing the id keeps (id, aad) pairs unambiguous: ("a", b"bc") != ("ab", b"c").
    encoded = kek_id.encode()
    return _WRAP_CONTEXT + struct.pack(">H", len(encoded)) + encoded + aad


def _unwrap(ring: KeyRing, sealed: keybackup_pb2.SealedData, aad: bytes) -> bytes:
    # Shape first: a damaged record is Corrupt whichever KEK it names.
    if len(sealed.nonce) != NONCE_BYTES:
        raise Corrupt(f"the nonce is {len(sealed.nonce)} bytes, not {NONCE_BYTES}")
    if len(sealed.wrap_nonce) != NONCE_BYTES:
        raise Corrupt(f"the wrap nonce is {len(sealed.wrap_nonce)} bytes, not {NONCE_BYTES}")
    if len(sealed.wrapped_key) != WRAPPED_KEY_BYTES:
        raise Corrupt(
            f"the wrapped data key is {len(sealed.wrapped_key)} bytes, not {WRAPPED_KEY_BYTES}"
        )
    if len(sealed.ciphertext) < TAG_BYTES:
        raise Corrupt(
            f"the ciphertext is {len(sealed.ciphertext)} bytes, shorter than its "
            f"{TAG_BYTES}-byte tag"
        )
    kek = ring._key(sealed.kek_id)
    try:
        return AESGCM(kek).decrypt(
            sealed.wrap_nonce, sealed.wrapped_key, _wrap_aad(aad, sealed.kek_id)
        )
    except InvalidTag:
        raise Corrupt(
            f"the data key does not unwrap under KEK {sealed.kek_id!r} (altered, relabelled, "
            "or wrapped for other associated data)"
        ) from None


def _check_id(kek_id: str) -> None:
    if not isinstance(kek_id, str) or not _KEK_ID.fullmatch(kek_id):
        raise ValueError(f"KEK id {kek_id!r} must be 1-64 letters, digits, '.', '_' or '-'")


def _decode_key(text: str) -> bytes | None:
    """Standard or URL-safe base64, padded or not; None if it is neither."""
    unpadded = text.translate(_URLSAFE_TO_STANDARD).rstrip("=")
    if len(unpadded) % 4 == 1:
        return None
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error:
        return None
