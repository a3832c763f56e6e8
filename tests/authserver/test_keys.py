"""Signing keys (Issue 14): created 0600 on first start, rotation keeps the old key published exactly as long as a
token it signed can live, a damaged file is a clear error, and tokens of a retired key stop verifying then."""

import os
import stat
import time
from pathlib import Path

import pytest

from mcp_bastion.authserver.keys import SigningKeys
from mcp_bastion.authserver.tokens import AccessClaims, BadToken, issue, verify
from mcp_bastion.errors import ConfigError

TTL_S = 3600.0
ISSUER = "https://gw.example.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def token(keys: SigningKeys, now: float) -> str:
    claims = AccessClaims("g1", "c1", f"{ISSUER}/mcp/a", ("server:a",), now + TTL_S, "j1")
    return issue(keys, issuer=ISSUER, claims=claims, now=now)


def test_the_first_start_creates_one_private_key_file(tmp_path: Path) -> None:
    """Issue 14 item 6: the first start creates one private key file."""
    path = tmp_path / "data" / "keys.json"
    keys = SigningKeys(path, token_ttl_s=TTL_S)
    keys.ensure()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    again = SigningKeys(path, token_ttl_s=TTL_S)
    again.ensure()
    assert again.active().kid == keys.active().kid  # kept, not replaced, on the next start


def test_a_rotated_key_stays_published_until_its_last_token_expires(tmp_path: Path) -> None:
    clock = Clock()
    keys = SigningKeys(tmp_path / "keys.json", token_ttl_s=TTL_S, clock=clock)
    keys.ensure()
    old = keys.active().kid
    signed = token(keys, clock.now)
    new = keys.rotate().kid
    assert [k["kid"] for k in keys.jwks()["keys"]] == [old, new]
    clock.now += TTL_S - 1
    assert keys.verifier(old) is not None
    clock.now += 2
    assert [k["kid"] for k in keys.jwks()["keys"]] == [new]
    with pytest.raises(BadToken, match="unknown or retired signing key"):
        verify(signed, keys, issuer=ISSUER)
    keys.rotate()
    assert len(keys.published()) == 2  # the long-retired one is dropped from the file on the next rotation


def test_tokens_verify_only_with_the_right_issuer(tmp_path: Path) -> None:
    keys = SigningKeys(tmp_path / "keys.json", token_ttl_s=TTL_S)
    keys.ensure()
    signed = token(keys, time.time())
    assert verify(signed, keys, issuer=ISSUER).grant_id == "g1"
    with pytest.raises(BadToken):
        verify(signed, keys, issuer="https://other.example.test")


def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"kid": "bastion-x", "pem": "not a key", "created": 0}]}')
    with pytest.raises(ConfigError, match="cannot read the OAuth signing keys"):
        SigningKeys(path, token_ttl_s=TTL_S).ensure()
