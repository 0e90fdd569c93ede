"""Envelope encryption (pure): sealing, tamper detection, KEK rewrapping, key rings."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bulwark.v1 import keybackup_pb2
from bulwark_server.backups.envelope import (
    Corrupt,
    KeyRing,
    UnknownKek,
    open_sealed,
    rewrap,
    seal,
    sha256_hex,
)

AAD = b"key:signing-1/version:3"
PLAINTEXT = b"-----BEGIN PRIVATE KEY----- not really -----END PRIVATE KEY-----"
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


def ring(**keys: bytes) -> KeyRing:
    return KeyRing(keys or {"a": KEY_A}, active=next(iter(keys or {"a": KEY_A})))


def both() -> KeyRing:
    return KeyRing({"a": KEY_A, "b": KEY_B}, active="a")


def flipped(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


def sample_positions(length: int) -> list[int]:
    # First, last, and a spread between: a flip anywhere must be caught, and these
    # include the tag bytes at the end of the GCM outputs.
    return sorted({0, 1, length // 3, length // 2, length - 17, length - 2, length - 1})


def copy(sealed: keybackup_pb2.SealedData, **changes: object) -> keybackup_pb2.SealedData:
    out = keybackup_pb2.SealedData()
    out.CopyFrom(sealed)
    for name, value in changes.items():
        setattr(out, name, value)
    return out


def test_a_sealed_plaintext_opens_back() -> None:
    r = ring()
    sealed = seal(r, PLAINTEXT, AAD)
    assert sealed.kek_id == "a"
    assert len(sealed.nonce) == len(sealed.wrap_nonce) == 12
    assert len(sealed.wrapped_key) == 48
    assert len(sealed.ciphertext) == len(PLAINTEXT) + 16
    assert PLAINTEXT not in sealed.SerializeToString()
    assert open_sealed(r, sealed, AAD) == PLAINTEXT
    # It survives the trip through bytes (etcd, a backup directory).
    again = keybackup_pb2.SealedData.FromString(sealed.SerializeToString())
    assert open_sealed(r, again, AAD) == PLAINTEXT


def test_empty_and_large_plaintexts_round_trip() -> None:
    r = ring()
    for plaintext in [b"", b"\x00", os.urandom(64 * 1024)]:
        assert open_sealed(r, seal(r, plaintext, AAD), AAD) == plaintext


def test_seal_uses_the_active_kek_unless_told_otherwise() -> None:
    r = both()
    assert seal(r, PLAINTEXT, AAD).kek_id == "a"
    sealed = seal(r, PLAINTEXT, AAD, kek_id="b")
    assert sealed.kek_id == "b"
    assert open_sealed(r, sealed, AAD) == PLAINTEXT
    with pytest.raises(UnknownKek, match="'zz'"):
        seal(r, PLAINTEXT, AAD, kek_id="zz")


def test_two_seals_of_the_same_plaintext_differ() -> None:
    r = ring()
    first, second = seal(r, PLAINTEXT, AAD), seal(r, PLAINTEXT, AAD)
    assert first.nonce != second.nonce
    assert first.wrap_nonce != second.wrap_nonce
    assert first.wrapped_key != second.wrapped_key
    assert first.ciphertext != second.ciphertext


@pytest.mark.parametrize("field", ["ciphertext", "wrapped_key", "nonce", "wrap_nonce"])
def test_a_single_flipped_byte_anywhere_is_corrupt(field: str) -> None:
    r = ring()
    sealed = seal(r, PLAINTEXT, AAD)
    original: bytes = getattr(sealed, field)
    for position in sample_positions(len(original)):
        with pytest.raises(Corrupt):
            open_sealed(r, copy(sealed, **{field: flipped(original, position)}), AAD)


@pytest.mark.parametrize("field", ["ciphertext", "wrapped_key", "nonce", "wrap_nonce"])
def test_truncated_or_extended_fields_are_corrupt(field: str) -> None:
    r = ring()
    sealed = seal(r, PLAINTEXT, AAD)
    original: bytes = getattr(sealed, field)
    for damaged in [
        original[:-1],
        original[1:],
        original[: len(original) // 2],
        b"",
        original + b"\x00",
    ]:
        with pytest.raises(Corrupt):
            open_sealed(r, copy(sealed, **{field: damaged}), AAD)


def test_a_ciphertext_shorter_than_its_tag_is_corrupt() -> None:
    r = ring()
    sealed = seal(r, PLAINTEXT, AAD)
    for length in [0, 1, 15]:
        with pytest.raises(Corrupt, match="shorter than its 16-byte tag"):
            open_sealed(r, copy(sealed, ciphertext=sealed.ciphertext[:length]), AAD)
    # Exactly a tag is well-formed (an empty plaintext): it fails on verification instead.
    with pytest.raises(Corrupt, match="does not verify"):
        open_sealed(r, copy(sealed, ciphertext=sealed.ciphertext[:16]), AAD)
    assert open_sealed(r, seal(r, b"", AAD), AAD) == b""


def test_a_truncated_record_is_corrupt_not_unknown() -> None:
    r = ring()
    sealed = seal(r, PLAINTEXT, AAD)
    with pytest.raises(Corrupt):
        open_sealed(r, keybackup_pb2.SealedData(), AAD)
    raw = sealed.SerializeToString()
    for cut in [len(raw) // 2, len(raw) - 1]:
        try:
            partial = keybackup_pb2.SealedData.FromString(raw[:cut])
        except Exception:  # a cut mid-field does not even parse; fine too
            continue
        with pytest.raises(Corrupt):
            open_sealed(r, partial, AAD)


def test_other_associated_data_is_corrupt() -> None:
    r = ring()
    sealed = seal(r, PLAINTEXT, AAD)
    for aad in [b"", AAD + b"x", AAD[:-1], b"key:signing-1/version:4"]:
        with pytest.raises(Corrupt):
            open_sealed(r, sealed, aad)


def test_a_wrapped_key_copied_from_another_record_does_not_unwrap() -> None:
    r = ring()
    mine = seal(r, PLAINTEXT, AAD)
    theirs = seal(r, b"other material", b"key:other/version:1")
    moved = copy(mine, wrapped_key=theirs.wrapped_key, wrap_nonce=theirs.wrap_nonce)
    # The wrap itself refuses (its associated data binds the record), before any decryption.
    with pytest.raises(Corrupt, match="data key"):
        open_sealed(r, moved, AAD)
    with pytest.raises(Corrupt, match="data key"):
        rewrap(both(), moved, AAD, "b")


def test_a_relabelled_kek_id_is_corrupt_even_with_the_same_key_bytes() -> None:
    sealed = seal(both(), PLAINTEXT, AAD, kek_id="a")
    with pytest.raises(Corrupt, match="data key"):
        open_sealed(both(), copy(sealed, kek_id="b"), AAD)
    # Two ids for the same bytes: the id is bound too, not just the key.
    twins = KeyRing({"a": KEY_A, "a2": KEY_A}, active="a")
    with pytest.raises(Corrupt, match="data key"):
        open_sealed(twins, copy(sealed, kek_id="a2"), AAD)


def test_an_unknown_kek_is_named() -> None:
    sealed = seal(both(), PLAINTEXT, AAD, kek_id="b")
    with pytest.raises(UnknownKek, match="'b'"):
        open_sealed(ring(a=KEY_A), sealed, AAD)
    with pytest.raises(UnknownKek, match="'b'"):
        rewrap(ring(a=KEY_A), sealed, AAD, "a")
    with pytest.raises(UnknownKek, match="'c'"):
        rewrap(both(), sealed, AAD, "c")


def test_rewrap_changes_only_the_wrapping() -> None:
    sealed = seal(both(), PLAINTEXT, AAD, kek_id="a")
    moved = rewrap(both(), sealed, AAD, "b")
    assert moved.kek_id == "b"
    assert moved.nonce == sealed.nonce
    assert moved.ciphertext == sealed.ciphertext
    assert sha256_hex(moved.ciphertext) == sha256_hex(sealed.ciphertext)
    assert moved.wrapped_key != sealed.wrapped_key
    assert moved.wrap_nonce != sealed.wrap_nonce
    assert sealed.kek_id == "a"  # the input is left alone
    # The old KEK can be retired once every record is rewrapped.
    assert open_sealed(ring(b=KEY_B), moved, AAD) == PLAINTEXT
    with pytest.raises(UnknownKek):
        open_sealed(ring(b=KEY_B), sealed, AAD)


def test_rewrap_is_idempotent_in_effect() -> None:
    r = both()
    sealed = seal(r, PLAINTEXT, AAD, kek_id="a")
    once = rewrap(r, sealed, AAD, "b")
    twice = rewrap(r, once, AAD, "b")
    assert twice == once
    assert twice is not once
    back = rewrap(r, twice, AAD, "a")
    assert back.ciphertext == sealed.ciphertext
    assert open_sealed(ring(a=KEY_A), back, AAD) == PLAINTEXT


def test_rewrap_refuses_a_damaged_wrapping_but_does_not_read_the_ciphertext() -> None:
    r = both()
    sealed = seal(r, PLAINTEXT, AAD)
    with pytest.raises(Corrupt):
        rewrap(r, copy(sealed, wrapped_key=flipped(sealed.wrapped_key, 0)), AAD, "b")
    with pytest.raises(Corrupt):
        rewrap(r, sealed, AAD + b"x", "b")
    # A flipped ciphertext byte is only found when opening: rotation never decrypts.
    damaged = copy(sealed, ciphertext=flipped(sealed.ciphertext, 0))
    moved = rewrap(r, damaged, AAD, "b")
    assert moved.ciphertext == damaged.ciphertext
    with pytest.raises(Corrupt, match="ciphertext"):
        open_sealed(r, moved, AAD)


def test_sha256_hex() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# KeyRing


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def b64_urlsafe_unpadded(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def test_parse_reads_commas_newlines_and_comments() -> None:
    for text in [
        f"a={b64(KEY_A)},b={b64(KEY_B)}",
        f"a={b64(KEY_A)}\nb={b64(KEY_B)}\n",
        f"# KEKs, oldest first\n\n a = {b64(KEY_A)} \n# retired: x=...\n\nb={b64(KEY_B)}\n",
        f"a={b64(KEY_A)}, ,\r\nb={b64(KEY_B)},",
    ]:
        r = KeyRing.parse(text)
        assert r.ids() == ["a", "b"], text
        assert r.active_id == "b"
        assert "a" in r and "b" in r and "c" not in r
        assert open_sealed(both(), seal(r, PLAINTEXT, AAD, kek_id="a"), AAD) == PLAINTEXT


def test_parse_accepts_standard_or_urlsafe_base64_with_or_without_padding() -> None:
    # This key's base64 contains '+' and '/' (standard) or '-' and '_' (URL-safe).
    key = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFE, 0xFF])
    assert "+" in b64(key) and "/" in b64(key) and b64(key).endswith("=")
    for encoded in [
        b64(key),
        b64(key).rstrip("="),
        base64.urlsafe_b64encode(key).decode(),
        b64_urlsafe_unpadded(key),
    ]:
        r = KeyRing.parse(f"k={encoded}")
        sealed = seal(r, PLAINTEXT, AAD)
        assert open_sealed(KeyRing({"k": key}, "k"), sealed, AAD) == PLAINTEXT, encoded


def test_the_active_kek_defaults_to_the_last_entry() -> None:
    text = f"a={b64(KEY_A)}\nb={b64(KEY_B)}"
    assert KeyRing.parse(text).active_id == "b"
    assert KeyRing.parse(text, active="a").active_id == "a"
    with pytest.raises(ValueError, match="'c'"):
        KeyRing.parse(text, active="c")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"a={b64(KEY_A)}\na={b64(KEY_B)}", "duplicate KEK id 'a'"),
        (f"a={b64(KEY_A[:16])}", "16 bytes"),
        (f"a={b64(KEY_A + b'x')}", "33 bytes"),
        (f"a b={b64(KEY_A)}", "the id must be"),
        (f"{'x' * 65}={b64(KEY_A)}", "the id must be"),
        (f"a/b={b64(KEY_A)}", "the id must be"),
        (f"={b64(KEY_A)}", "empty id"),
        (f"a={b64(KEY_A)[:-2]}!!", "not valid base64"),
        ("a=", "no key"),
        (b64(KEY_A).rstrip("="), "no '='"),
        ("# only a comment\n\n", "no KEK entries"),
        ("", "no KEK entries"),
    ],
)
def test_parse_refuses_bad_entries(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        KeyRing.parse(text)


def test_the_constructor_checks_ids_lengths_and_the_active_id() -> None:
    with pytest.raises(ValueError, match="'bad id'"):
        KeyRing({"bad id": KEY_A}, "bad id")
    with pytest.raises(ValueError, match="'a' is 31 bytes"):
        KeyRing({"a": KEY_A[:31]}, "a")
    with pytest.raises(ValueError, match="'b'"):
        KeyRing({"a": KEY_A}, "b")
    with pytest.raises(ValueError, match="at least one"):
        KeyRing({}, "")
    with pytest.raises(TypeError):
        KeyRing({"a": b64(KEY_A)}, "a")  # type: ignore[dict-item]
    assert KeyRing({"a.1_-Z": KEY_A}, "a.1_-Z").ids() == ["a.1_-Z"]


def test_generate_entry_makes_a_parseable_random_kek() -> None:
    first, second = KeyRing.generate_entry("k-2026"), KeyRing.generate_entry("k-2026")
    assert first.startswith("k-2026=") and first != second
    r = KeyRing.parse(first)
    assert r.ids() == ["k-2026"]
    with pytest.raises(ValueError):
        KeyRing.generate_entry("no spaces")


def test_load_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "keks"
    path.write_text(f"a={b64(KEY_A)}\n")
    for mode in [0o644, 0o640, 0o604, 0o620]:
        path.chmod(mode)
        with pytest.raises(ValueError, match="chmod 600"):
            KeyRing.load(path)
    path.chmod(0o600)
    r = KeyRing.load(path)
    assert r.ids() == ["a"] and r.active_id == "a"
    path.chmod(0o400)
    assert KeyRing.load(path, active="a").active_id == "a"


def test_load_names_the_file_in_parse_errors(tmp_path: Path) -> None:
    path = tmp_path / "keks"
    path.write_text(f"a={b64(KEY_A[:8])}\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="keks"):
        KeyRing.load(path)


def key_texts(key: bytes) -> list[str]:
    padded = b64(key)
    urlsafe = base64.urlsafe_b64encode(key).decode()
    # Any long run of the key's text would be a leak, not just all of it.
    return [padded, padded.rstrip("="), urlsafe, urlsafe.rstrip("="), padded[:16], urlsafe[-16:]]


def raised(action: Callable[[], object]) -> Exception:
    try:
        action()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


def test_errors_and_reprs_never_show_key_material(tmp_path: Path) -> None:
    short = KEY_A[:31]
    sealed = seal(both(), PLAINTEXT, AAD, kek_id="a")
    path = tmp_path / "keks"
    path.write_text(f"a={b64(KEY_A)}\nb={b64(KEY_B)}\n")
    path.chmod(0o644)
    errors = [
        raised(lambda: KeyRing.parse(f"a={b64(short)}")),
        raised(lambda: KeyRing.parse(f"a={b64(KEY_A)}\na={b64(KEY_A)}")),
        raised(lambda: KeyRing.parse(f"a b={b64(KEY_A)}")),
        raised(lambda: KeyRing.parse(b64(KEY_A))),  # a bare key, '=' padding and all
        raised(lambda: KeyRing.parse(b64_urlsafe_unpadded(KEY_A) + "=")),
        raised(lambda: KeyRing.parse(f"a={b64(KEY_A)}!")),
        raised(lambda: KeyRing.parse(f"a={b64(KEY_A)}", active="b")),
        raised(lambda: KeyRing({"a": short}, "a")),
        raised(lambda: KeyRing.load(path)),
        raised(lambda: open_sealed(both(), copy(sealed, kek_id="b"), AAD)),
        raised(lambda: open_sealed(both(), sealed, b"other")),
        raised(lambda: open_sealed(ring(b=KEY_B), sealed, AAD)),
    ]
    texts = [str(exc) for exc in errors] + [repr(both()), repr(KeyRing.parse(path.read_text()))]
    for text in texts:
        for key in [KEY_A, KEY_B, short]:
            for leaked in key_texts(key):
                assert leaked not in text, text
            assert repr(key) not in text and key.hex() not in text, text
