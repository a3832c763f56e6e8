"""Sealed values (mcp_bastion.sealing): what a client may hold and hand back, but never forge, redirect or reuse."""

import pytest

from mcp_bastion.sealing import SEALED_MAX_CHARS, Sealer, SealError

NOW = 1_800_000_000.0


def test_a_sealed_payload_opens_to_itself_for_the_same_purpose_before_it_expires() -> None:
    sealer = Sealer.from_secret("x" * 32)
    sealed = sealer.seal("session", {"instance": "a1", "principal": "token:ci"}, now=NOW, ttl_s=60)
    assert sealer.open("session", sealed, now=NOW + 59.9) == {"instance": "a1", "principal": "token:ci"}


def test_another_instance_with_the_same_secret_opens_it_and_one_with_another_secret_does_not() -> None:
    sealed = Sealer.from_secret("s" * 32).seal("session", {"n": 1}, now=NOW, ttl_s=60)
    assert Sealer.from_secret("s" * 32).open("session", sealed, now=NOW) == {"n": 1}
    with pytest.raises(SealError, match="does not verify"):
        Sealer.from_secret("t" * 32).open("session", sealed, now=NOW)


def test_a_value_sealed_for_one_purpose_is_refused_for_another() -> None:
    sealer = Sealer()
    sealed = sealer.seal("request-state", {"n": 1}, now=NOW, ttl_s=60)
    with pytest.raises(SealError, match="does not verify"):
        sealer.open("session", sealed, now=NOW)


def test_an_expired_value_is_refused() -> None:
    sealer = Sealer()
    sealed = sealer.seal("session", {"n": 1}, now=NOW, ttl_s=60)
    with pytest.raises(SealError, match="expired"):
        sealer.open("session", sealed, now=NOW + 60)


def test_a_payload_changed_by_the_client_is_refused_even_with_a_valid_looking_mac() -> None:
    sealer = Sealer()
    body, mac = sealer.seal("session", {"instance": "a1"}, now=NOW, ttl_s=60).split(".")
    forged_body = sealer.seal("session", {"instance": "b2"}, now=NOW, ttl_s=60).split(".")[0]
    with pytest.raises(SealError, match="does not verify"):
        sealer.open("session", f"{forged_body}.{mac}", now=NOW)
    assert sealer.open("session", f"{body}.{mac}", now=NOW) == {"instance": "a1"}


@pytest.mark.parametrize(
    "junk",
    ["", ".", "a.b.c", "no-dot", "!!!.???", "e30.", "x" * (SEALED_MAX_CHARS + 1), "e30.AAAA"],
)
def test_malformed_values_are_refused_with_a_seal_error_never_another_exception(junk: str) -> None:
    with pytest.raises(SealError) as caught:
        Sealer().open("session", junk, now=NOW)
    assert caught.value.http_status == 400
