"""The OAuth resource server (Issue 13) against a loopback issuer whose keys the tests hold: metadata, challenges,
strict JWT validation (every negative case), audience binding per server, scopes, key rotation, audit."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_bastion.config import Settings
from mcp_bastion.oauth import ResourceServer, oauth_config
from mcp_bastion.oauth.jwks import JWKS_REFRESH_MIN_S
from tests.harness import RunningGateway, spec
from tests.oauth.support import (
    PREFIX,
    PUBLIC_URL,
    Issuer,
    claims_for,
    hmac_with_public_key,
    loopback_issuer,
    new_key,
    sign,
    unsigned,
)
from tests.security.support import (
    JSON_ACCEPT,
    add_token,
    admin_token,
    audit_events,
    audit_text,
    bearer,
    legacy_headers,
    modern_call,
    open_legacy_session,
    rpc,
    secure_gateway,
)

FILES = f"{PUBLIC_URL}/mcp/files"
OTHER = f"{PUBLIC_URL}/mcp/other"
PRM = f"{PUBLIC_URL}/.well-known/oauth-protected-resource"


class Monotonic:
    """A monotonic clock the test can move forward (the JWKS refresh interval without waiting it out)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def oauth_settings(issuer: Issuer, **extra: Any) -> dict[str, Any]:
    """OAuth settings of these tests; the IdP's `mcp:admin` makes an admin (opt-in; test_admin_scope: the default)."""
    values = {"public_url": PUBLIC_URL, "oauth_issuer": issuer.url, "oauth_scope_prefix": PREFIX}
    return {**values, "oauth_allow_admin_scope": True, **extra}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Issuer, Monotonic, Path]]:
    tmp_path = tmp_path_factory.mktemp("oauth")
    key = new_key("RS256")
    with loopback_issuer(key, new_key("ES256"), new_key("EdDSA")) as issuer:
        settings = oauth_settings(issuer)
        clock = Monotonic()
        config = oauth_config(Settings(**settings))
        assert config is not None
        oauth = ResourceServer(config, monotonic=clock)
        servers = [spec("files"), spec("other")]
        with secure_gateway(servers, tmp_path, auth_token=admin_token(), oauth=oauth, **settings) as gw:
            yield gw, issuer, clock, tmp_path


def token(issuer: Issuer, audience: str | list[str] = FILES, scope: str = "mcp:server:files", **extra: Any) -> str:
    return sign(claims_for(issuer.url, audience, scope, **extra), issuer.keys[0])


def call(gw: RunningGateway, value: str, server: str = "files", tool: str = "echo") -> httpx.Response:
    """One stateless (2026-07-28) tools/call."""
    arguments = {"echo": {"text": "hi"}, "add": {"a": 1, "b": 2}}.get(tool, {})
    with httpx.Client(timeout=10) as client:
        return modern_call(client, gw.mcp(server), value, "tools/call", {"name": tool, "arguments": arguments})


def test_protected_resource_metadata_names_each_resource_its_issuer_and_scopes(world: Any) -> None:
    """Issue 13 item 2: protected resource metadata names each resource its issuer and scopes."""
    gw, issuer, _, _ = world
    root = httpx.get(gw.url + "/.well-known/oauth-protected-resource", timeout=5)
    assert root.status_code == 200
    assert root.headers["cache-control"] == "public, max-age=300"
    assert root.headers["x-content-type-options"] == "nosniff"  # behind the pipeline like every route
    assert root.json() == {
        "resource": PUBLIC_URL,
        "authorization_servers": [issuer.url],
        "scopes_supported": ["mcp:admin"],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-bastion",
    }
    files = httpx.get(gw.url + "/.well-known/oauth-protected-resource/mcp/files", timeout=5).json()
    assert files["resource"] == FILES
    assert files["scopes_supported"] == ["mcp:server:files"]
    assert httpx.get(gw.url + "/.well-known/oauth-protected-resource/mcp/nope", timeout=5).status_code == 404
    assert httpx.get(gw.url + "/.well-known/oauth-authorization-server", timeout=5).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "metadata"),
    [
        ("POST", "/mcp/files", f"{PRM}/mcp/files"),
        ("GET", "/mcp/files/sse", f"{PRM}/mcp/files"),
        ("POST", "/mcp/other/messages", f"{PRM}/mcp/other"),
        ("GET", "/health", PRM),
        ("GET", "/mcp/servers", PRM),
    ],
)
def test_every_401_names_the_resource_metadata(world: Any, method: str, path: str, metadata: str) -> None:
    """Issue 13 item 3: every 401 names the resource metadata."""
    gw, _, _, _ = world
    bare = httpx.request(method, gw.url + path, json={}, headers=JSON_ACCEPT, timeout=5)
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata}"'
    bad = httpx.request(method, gw.url + path, json={}, headers={**JSON_ACCEPT, **bearer("a.b.c")}, timeout=5)
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata}", error="invalid_token"'


def test_a_token_of_the_issuer_reaches_a_tool_on_streamable_and_2026_07_28(world: Any) -> None:
    """Issue 13 items 5 and 6: a token of the issuer reaches a tool on Streamable HTTP and 2026-07-28."""
    gw, issuer, _, tmp_path = world
    value = token(issuer)
    answer = call(gw, value)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["content"][0]["text"] == "hi"
    with httpx.Client(timeout=10) as client:
        session = open_legacy_session(client, gw.mcp("files"), value)
        called = client.post(
            gw.mcp("files"),
            json=rpc(2, "tools/call", {"name": "echo", "arguments": {"text": "s"}}),
            headers=legacy_headers(value, session),
        )
        assert called.status_code == 200
        assert called.json()["result"]["content"][0]["text"] == "s"
    success = [e for e in audit_events(tmp_path, "auth.success") if e.get("oauth_jti")]
    assert success, "an OAuth success is audited with its token id"
    line = success[-1]
    assert line["principal_id"] == "oauth:127.0.0.1:" + issuer.url.rsplit(":", 1)[1] + ":svc-robot"
    assert line["oauth_issuer"] == issuer.url
    assert line["oauth_subject"] == "svc-robot"
    assert line["oauth_client"] == "robot-client"
    assert value not in audit_text(tmp_path)
    assert value.split(".")[2] not in audit_text(tmp_path)


@pytest.mark.parametrize("alg_index", [1, 2])
def test_es256_and_eddsa_tokens_are_accepted(world: Any, alg_index: int) -> None:
    gw, issuer, _, _ = world
    value = sign(claims_for(issuer.url, FILES, "mcp:server:files"), issuer.keys[alg_index])
    assert call(gw, value).status_code == 200


def test_management_routes_take_a_token_for_the_gateway_itself(world: Any) -> None:
    gw, issuer, _, _ = world
    admin = token(issuer, PUBLIC_URL, "mcp:admin")
    health = httpx.get(gw.url + "/health", headers=bearer(admin), timeout=5)
    assert health.status_code == 200
    assert set(health.json()["servers"]) == {"files", "other"}
    narrow = token(issuer, PUBLIC_URL, "mcp:server:files")
    listed = httpx.get(gw.url + "/mcp/servers", headers=bearer(narrow), timeout=5)
    assert listed.status_code == 200, listed.text
    assert [server["name"] for server in listed.json()["servers"]] == ["files"]  # only what its scope reaches
    sessions = httpx.get(gw.url + "/admin/sessions", headers=bearer(narrow), timeout=5)
    assert sessions.status_code == 403
    assert sessions.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{PRM}", error="insufficient_scope", scope="mcp:admin"'
    )
    assert call(gw, admin).status_code == 401  # a token for the gateway is not one for its servers (RFC 8707)


ID_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash")


def _negative(issuer: Issuer, case: str) -> str:
    key = issuer.keys[0]
    now = int(time.time())
    if case == "wrong audience":
        return token(issuer, "https://elsewhere.example/mcp/files")
    if case == "another server of this gateway":
        return token(issuer, OTHER, "mcp:server:files")
    if case == "wrong issuer":
        return sign(claims_for("https://evil.example", FILES, "mcp:server:files"), key)
    if case == "expired":
        return token(issuer, exp=now - 120, iat=now - 600)
    if case == "not yet valid":
        return token(issuer, nbf=now + 600)
    if case == "issued in the future":
        return token(issuer, iat=now + 600, exp=now + 900)
    if case == "no exp":
        claims = claims_for(issuer.url, FILES, "mcp:server:files")
        del claims["exp"]
        return sign(claims, key)
    if case == "alg none":
        return unsigned(claims_for(issuer.url, FILES, "mcp:server:files"))
    if case == "HS256 with the public key":
        return hmac_with_public_key(claims_for(issuer.url, FILES, "mcp:server:files"), key)
    if case == "an id token":
        return sign(claims_for(issuer.url, FILES, "mcp:server:files"), key, typ="id_token+jwt")
    for claim in ID_TOKEN_CLAIMS:  # an OpenID ID token typed plain `JWT`: its claims give it away
        if case == f"an id token with {claim}":
            return sign(claims_for(issuer.url, FILES, "mcp:server:files", **{claim: "x"}), key, typ="JWT")
    if case == "tampered":
        head, _, sig = token(issuer).split(".")
        other_body = token(issuer, scope="mcp:admin").split(".")[1]
        return f"{head}.{other_body}.{sig}"
    if case == "kid of another algorithm":
        return sign(claims_for(issuer.url, FILES, "mcp:server:files"), key, kid=issuer.keys[1].kid)
    raise AssertionError(case)


NEGATIVE = {
    "wrong audience": "token for another resource (aud)",
    "another server of this gateway": "token for another resource (aud)",
    "wrong issuer": "token from another issuer (iss)",
    "expired": "expired token",
    "not yet valid": "token not yet valid (nbf or iat in the future)",
    "issued in the future": "token not yet valid (nbf or iat in the future)",
    "no exp": "token lacks the exp claim",
    "alg none": "algorithm not allowed (none)",
    "HS256 with the public key": "algorithm not allowed (HS256)",
    "an id token": "not an access token (typ)",
    "tampered": "bad signature",
    **{f"an id token with {claim}": "not an access token (an ID token's claims)" for claim in ID_TOKEN_CLAIMS},
    "kid of another algorithm": "the key named by kid is not for this algorithm",
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_a_token_that_is_not_valid_for_this_resource_is_refused(world: Any, case: str) -> None:
    """Issue 13 item 4: a token that is not valid for this resource is refused."""
    gw, issuer, _, tmp_path = world
    answer = call(gw, _negative(issuer, case))
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == -32001
    assert answer.headers["www-authenticate"] == f'Bearer resource_metadata="{PRM}/mcp/files", error="invalid_token"'
    assert any(e.get("reason") == NEGATIVE[case] for e in audit_events(tmp_path, "auth.failure")), NEGATIVE[case]


def test_a_token_for_another_server_works_there_and_only_there(world: Any) -> None:
    gw, issuer, _, _ = world
    other = token(issuer, OTHER, "mcp:server:other")
    assert call(gw, other, "other").status_code == 200
    assert call(gw, other, "files").status_code == 401


def test_missing_scope_is_403_with_the_step_up_challenge(world: Any) -> None:
    """Issue 13 item 3: missing scope is 403 with the step-up challenge."""
    gw, issuer, _, _ = world
    for scope in ("", "server:files", "mcp:server:other", "openid profile"):  # unprefixed scopes are not ours
        answer = call(gw, token(issuer, scope=scope))
        assert answer.status_code == 403, (scope, answer.text)
        assert answer.json()["error"]["code"] == -32003
        assert answer.headers["www-authenticate"] == (
            f'Bearer resource_metadata="{PRM}/mcp/files", error="insufficient_scope", scope="mcp:server:files"'
        )
    narrow = token(issuer, scope="mcp:tool:files/echo")
    assert call(gw, narrow).status_code == 200
    denied = call(gw, narrow, tool="add")
    assert denied.json()["error"]["code"] == -32003  # the JSON-RPC refusal for a tool, as for named tokens


def test_scp_list_claims_are_read_like_scope(world: Any) -> None:
    gw, issuer, _, _ = world
    claims = claims_for(issuer.url, FILES, "")
    del claims["scope"]
    claims["scp"] = ["mcp:server:files"]
    assert call(gw, sign(claims, issuer.keys[0])).status_code == 200


def test_unknown_kid_refreshes_the_key_set_once_then_a_rotated_key_works(world: Any) -> None:
    """Issue 13 item 4: unknown kid refreshes the key set once then a rotated key works."""
    gw, issuer, clock, tmp_path = world
    assert call(gw, token(issuer)).status_code == 200  # the set is cached
    rotated = new_key("RS256", kid="rotated-1")
    value = sign(claims_for(issuer.url, FILES, "mcp:server:files"), rotated)
    before = issuer.jwks_fetches
    clock.offset += JWKS_REFRESH_MIN_S + 1
    assert call(gw, value).status_code == 401  # not published yet: one refresh, then refused
    assert issuer.jwks_fetches == before + 1
    issuer.keys.append(rotated)
    assert call(gw, value).status_code == 401  # within the refresh interval: no second fetch for an unknown kid
    assert issuer.jwks_fetches == before + 1
    clock.offset += JWKS_REFRESH_MIN_S + 1
    assert call(gw, value).status_code == 200  # next interval: refreshed, the rotated key is known
    assert issuer.jwks_fetches == before + 2
    forged = [sign(claims_for(issuer.url, FILES, "mcp:server:files"), new_key()) for _ in range(5)]
    assert {call(gw, f).status_code for f in forged} == {401}
    assert issuer.jwks_fetches == before + 2  # forged kids cannot make the gateway hammer the IdP
    assert "signed with a key the issuer does not publish (kid)" in audit_text(tmp_path)


def test_named_tokens_keep_working_next_to_oauth(world: Any) -> None:
    gw, _, _, _ = world
    named = add_token(gw, "ci", "server:files")
    assert call(gw, named).status_code == 200
    assert call(gw, named, "other").status_code == 403


def test_the_clients_token_never_reaches_the_child(world: Any) -> None:
    """Issue 13 item 5: the client's token never reaches the child."""
    gw, issuer, _, _ = world
    value = token(issuer)
    answer = call(gw, value, tool="env")
    assert answer.status_code == 200
    seen = answer.json()["result"]["content"][0]["text"]
    assert "PATH" in seen  # the child's environment, as it sees it
    assert value not in seen
    assert value.split(".")[2] not in seen


def test_the_dashboard_login_takes_no_oauth_token(world: Any) -> None:
    gw, issuer, _, _ = world
    answer = httpx.post(gw.url + "/auth/login", json={"token": token(issuer, PUBLIC_URL, "mcp:admin")}, timeout=5)
    assert answer.status_code == 401
    assert "bastion_session" not in answer.headers.get("set-cookie", "")
