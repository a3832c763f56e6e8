"""Every refusal of the token endpoint (Issue 14): a code or refresh token presented with anything that differs
from what it was issued for is refused with the RFC 6749 error, burns nothing, and is audited; and the endpoints'
malformed requests."""

from typing import Any

import httpx
import jwt
import pytest

from mcp_bastion.authserver.tokens import AccessClaims, issue
from tests.authserver.support import (
    REDIRECT,
    Browser,
    Builtin,
    authorize_params,
    issue_tokens,
    pkce,
    redeem,
    register,
    token_request,
)
from tests.security.support import audit_events, modern_call

OTHER = "http://127.0.0.1:33418/other"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code": "mcpa_not-a-code"}, "invalid_grant"),
        ({"client_id": "mcpc_someone-else"}, "invalid_grant"),
        ({"redirect_uri": OTHER}, "invalid_grant"),
        ({"resource": "RESOURCE/mcp/other"}, "invalid_target"),
        ({"code_verifier": ""}, "invalid_grant"),
        ({"code_verifier": "short"}, "invalid_grant"),
    ],
)
def test_a_code_presented_differently_is_refused_and_not_burnt(
    env: Builtin, browser: Browser, change: dict[str, str], error: str
) -> None:
    client_id = register(env)
    verifier, challenge = pkce()
    back = browser.code_for(authorize_params(client_id, challenge, resource=env.resource()))
    form: dict[str, Any] = {
        "grant_type": "authorization_code",
        "code": back["code"],
        "code_verifier": verifier,
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "resource": env.resource(),
    }
    changed = {k: v.replace("RESOURCE", env.url) for k, v in change.items()}
    refused = token_request(env, **{**form, **changed})
    assert refused.status_code == 400
    assert refused.json()["error"] == error
    assert refused.headers["cache-control"] == "no-store"
    assert audit_events(env.logs, "oauth.token.refused")[-1]["error"] == error
    assert redeem(env, client_id, back["code"], verifier).status_code == 200  # the real client still can


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"refresh_token": "mcpr_not-a-token"}, "invalid_grant"),
        ({"client_id": "mcpc_someone-else"}, "invalid_grant"),
        ({"resource": "RESOURCE/mcp/other"}, "invalid_target"),
    ],
)
def test_a_refresh_token_presented_differently_is_refused_and_not_burnt(
    env: Builtin, browser: Browser, change: dict[str, str], error: str
) -> None:
    client_id, tokens = issue_tokens(env, browser)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
    changed = {k: v.replace("RESOURCE", env.url) for k, v in change.items()}
    refused = token_request(env, **{**form, **changed})
    assert refused.status_code == 400
    assert refused.json()["error"] == error
    assert token_request(env, **form).status_code == 200  # not used up by the refusal


def test_a_token_whose_claims_do_not_match_its_grant_is_refused(env: Builtin, browser: Browser) -> None:
    """A token signed with the gateway's key naming a live grant but another client (what a leaked key would let
    someone make) is refused: the grant's own record decides, not the token's claims."""
    _, tokens = issue_tokens(env, browser)
    routes = env.gw.app.authserver
    assert routes is not None
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    other = AccessClaims(claims["gid"], "mcpc_forged", claims["aud"], ("server:toolbox",), claims["exp"], "forged")
    forged = issue(routes.keys, issuer=env.url, claims=other, now=claims["iat"])
    with httpx.Client(timeout=10) as client:
        assert modern_call(client, env.gw.mcp("toolbox"), forged, "tools/list").status_code == 401
    assert "token does not match its grant" in [e["reason"] for e in audit_events(env.logs, "auth.failure")]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/oauth/register", b"not json", 400),
        ("/oauth/register", b"[]", 400),
        ("/oauth/revoke", b"token=a&token=b", 400),
        ("/oauth/consent", b"\xff\xfe", 400),
        ("/oauth/login", b"request=a&request=b", 400),
    ],
)
def test_malformed_bodies_are_refused(env: Builtin, path: str, body: bytes, status: int) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert httpx.post(f"{env.url}{path}", content=body, headers=headers, timeout=10).status_code == status


def test_expired_or_unknown_requests_show_a_page(env: Builtin) -> None:
    consent = httpx.get(f"{env.url}/oauth/consent?request=nope", timeout=10)
    assert consent.status_code == 400
    assert "Request expired" in consent.text
    login = httpx.post(f"{env.url}/oauth/login", data={"request": "nope", "token": "x"}, timeout=10)
    assert login.status_code == 400
    repeated = httpx.get(f"{env.url}/oauth/authorize?client_id=a&client_id=b", timeout=10)
    assert repeated.status_code == 400
    assert "client_id is given more than once" in repeated.text
