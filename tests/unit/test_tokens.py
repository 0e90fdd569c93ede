"""Bearer token format and parsing (pure)."""

from __future__ import annotations

from bulwark_server.security.tokens import bearer, digest, new_token, parse


def test_a_new_token_parses_back_to_its_id_and_secret() -> None:
    token_id, secret, token = new_token()
    assert token.startswith("bwk.")
    assert parse(token) == (token_id, secret)
    assert len(digest(secret)) == 32
    assert digest(secret) != digest(secret + "x")


def test_new_tokens_differ() -> None:
    assert len({new_token()[2] for _ in range(200)}) == 200


def test_malformed_tokens_do_not_parse() -> None:
    _, secret, token = new_token()
    for bad in [
        "",
        "bwk",
        "bwk..",
        token.replace("bwk.", "xyz."),
        "bwk.0123456789abcdef",
        "bwk.0123456789ABCDEF." + secret,  # ids are lower-case hex
        f"bwk.0123.{secret}",
        "bwk.0123456789abcdef.short",
        token + ".extra",
    ]:
        assert parse(bad) is None, bad


def test_bearer_reads_the_authorization_header_only() -> None:
    assert bearer((("authorization", "Bearer abc"),)) == "abc"
    assert bearer((("authorization", b"bearer  abc "),)) == "abc"
    assert bearer((("authorization", "Basic abc"),)) is None
    assert bearer((("x-token", "Bearer abc"),)) is None
    assert bearer(None) is None
