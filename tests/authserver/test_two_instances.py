"""Two gateway instances behind one PUBLIC_URL, sharing a Redis store and the signing key file (Issue 14): a code
issued by one is redeemed at the other, each accepts the other's tokens, a refresh replayed at the other instance
still revokes the family, and a revocation on one is refused at once on the other."""

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from tests.authserver.support import REDIRECT, Browser, Builtin, authorize_params, builtin_gateway, pkce, register
from tests.redis_server import redis_server
from tests.security.support import bearer, modern_call


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Builtin, Builtin]]:
    tmp = tmp_path_factory.mktemp("two-instances")
    with redis_server(tmp) as url, contextlib.ExitStack() as stack:
        shared = {"store_url": url, "oauth_signing_key_file": tmp / "data" / "oauth-keys.json"}
        first = stack.enter_context(builtin_gateway(tmp / "a", **shared))
        second = stack.enter_context(builtin_gateway(tmp / "b", public_url=first.url, **shared))
        yield first, second


def status(env: Builtin, token: str) -> int:
    with httpx.Client(timeout=10) as client:
        return modern_call(client, env.gw.mcp("toolbox"), token, "tools/list").status_code


def token_at(env: Builtin, **form: str) -> httpx.Response:
    return httpx.post(f"{env.url}/oauth/token", data=form, timeout=10)


def approved_at(env: Builtin, redeemed_at: Builtin) -> tuple[str, dict[str, str]]:
    """A client registered and approved at `env`, its code redeemed at `redeemed_at`: (client id, token answer)."""
    client_id = register(env)
    verifier, challenge = pkce()
    browser = Browser(env)
    try:
        back = browser.code_for(authorize_params(client_id, challenge, resource=env.resource()))
    finally:
        browser.close()
    form = {"grant_type": "authorization_code", "code": back["code"], "code_verifier": verifier}
    answer = token_at(redeemed_at, client_id=client_id, redirect_uri=REDIRECT, **form)
    assert answer.status_code == 200, answer.text
    return client_id, answer.json()


def test_codes_tokens_and_revocations_cross_instances(pair: tuple[Builtin, Builtin]) -> None:
    first, second = pair
    client_id, tokens = approved_at(first, redeemed_at=second)
    assert status(first, tokens["access_token"]) == 200
    assert status(second, tokens["access_token"]) == 200
    refresh = {"grant_type": "refresh_token", "client_id": client_id}
    newer = token_at(first, refresh_token=tokens["refresh_token"], **refresh).json()
    assert status(second, newer["access_token"]) == 200
    replay = token_at(second, refresh_token=tokens["refresh_token"], **refresh)
    assert replay.json()["error"] == "invalid_grant"
    assert status(first, newer["access_token"]) == 401  # the family ended everywhere


def test_a_grant_revoked_on_one_instance_is_refused_on_the_other(pair: tuple[Builtin, Builtin]) -> None:
    first, second = pair
    client_id, tokens = approved_at(first, redeemed_at=first)
    assert status(second, tokens["access_token"]) == 200
    grants = httpx.get(f"{second.url}/api/grants", headers=bearer(second.admin), timeout=10).json()["grants"]
    [grant] = [g for g in grants if g["client_id"] == client_id]
    revoked = httpx.delete(f"{first.url}/api/grants/{grant['id']}", headers=bearer(first.admin), timeout=10)
    assert revoked.status_code == 200, revoked.text
    assert status(second, tokens["access_token"]) == 401
