"""A token whose signature checked out is not verified again, but its expiry and audience are, and the cache lasts
only while the key set it was checked against is fresh (a withdrawn key stops working when the set is refreshed)."""

import time
from typing import Any

import anyio
import pytest

from mcp_bastion.oauth.http import Fetched
from mcp_bastion.oauth.jwks import JWKS_DEFAULT_TTL_S, KeySource
from mcp_bastion.oauth.validator import InvalidToken, TokenValidator
from tests.oauth.support import SigningKey, claims_for, new_key, sign

ISSUER = "https://idp.example"
FILES = "https://gw.example/mcp/files"
OTHER = "https://gw.example/mcp/other"


class KeyServer:
    """The one seam: a fetcher answering the current key set, counting fetches (no network)."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0

    async def get(self, url: str, what: str) -> Fetched:
        self.fetches += 1
        return Fetched({"keys": [key.jwk for key in self.keys]}, None)

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def validator(server: KeyServer, clock: Clock) -> TokenValidator:
    keys = KeySource(server, issuer=ISSUER, jwks_url=ISSUER + "/jwks", clock=clock)  # type: ignore[arg-type]
    return TokenValidator(keys, issuer=ISSUER, leeway_s=0, clock=clock)


def check(v: TokenValidator, token: str, audience: str = FILES) -> Any:
    return anyio.run(v.claims, token, audience, "digest-of-" + token[-16:])


def test_a_cached_token_still_expires_and_stays_bound_to_its_audience() -> None:
    key, clock = new_key("ES256"), Clock()
    server = KeyServer(key)
    v = validator(server, clock)
    token = sign(claims_for(ISSUER, FILES, "s", exp=int(clock.now) + 60), key)
    assert check(v, token)["aud"] == FILES
    assert check(v, token)["aud"] == FILES
    with pytest.raises(InvalidToken, match="another resource"):
        check(v, token, OTHER)
    clock.now += 61
    with pytest.raises(InvalidToken, match="expired token"):
        check(v, token)
    assert server.fetches == 1


def test_a_withdrawn_key_stops_working_once_the_key_set_is_refreshed() -> None:
    key, clock = new_key("RS256"), Clock()
    server = KeyServer(key)
    v = validator(server, clock)
    token = sign(claims_for(ISSUER, FILES, "s", exp=int(clock.now) + 3600), key)
    check(v, token)
    server.keys = [new_key("RS256")]  # the IdP withdrew the key (compromise, rotation)
    check(v, token)  # the set it was checked against is still fresh
    clock.now += JWKS_DEFAULT_TTL_S + 1
    with pytest.raises(InvalidToken, match="does not publish"):
        check(v, token)
    assert server.fetches == 2
