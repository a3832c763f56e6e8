"""The built-in authorization server over real HTTP: discovery, registration, consent, codes, tokens, and what a
grant's token reaches (Issue 14)."""

import os
import stat

import httpx
import pytest

from mcp_bastion.authserver.pages import consent_policy
from mcp_bastion.middleware.headers import CSP
from tests.authserver.support import (
    REDIRECT,
    Browser,
    Builtin,
    authorize_params,
    hidden,
    issue_tokens,
    pkce,
    query_of,
    redeem,
    register,
)
from tests.security.support import audit_events, bearer, modern_call


def tools_list(env: Builtin, token: str, server: str = "toolbox") -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return modern_call(client, env.gw.mcp(server), token, "tools/list")


def test_metadata_names_the_gateway_and_serves_its_keys(env: Builtin) -> None:
    """Issue 14 item 1: metadata names the gateway and serves its keys."""
    meta = httpx.get(f"{env.url}/.well-known/oauth-authorization-server", timeout=10).json()
    assert meta["issuer"] == env.url
    assert meta["authorization_endpoint"] == f"{env.url}/oauth/authorize"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["client_id_metadata_document_supported"] is True
    prm = httpx.get(f"{env.url}/.well-known/oauth-protected-resource/mcp/toolbox", timeout=10).json()
    assert prm["authorization_servers"] == [env.url]
    assert prm["resource"] == env.resource()
    keys = httpx.get(f"{env.url}/oauth/jwks", timeout=10).json()["keys"]
    assert [k["alg"] for k in keys] == ["ES256"]
    assert "d" not in keys[0]  # the public half only
    key_file = env.logs / "data" / "oauth-keys.json"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_approved_grant_reaches_its_resource_with_the_narrowed_scopes(env: Builtin, browser: Browser) -> None:
    """Issue 14 items 3 and 5: consent page, narrowed scopes, state and iss, the grant listed, every step audited."""
    client_id = register(env, name="Claude")
    verifier, challenge = pkce()
    params = authorize_params(client_id, challenge, resource=env.url, scope="server:*")
    page = browser.consent_page(params)
    assert 'id="client-name">Claude<' in page.text
    assert 'id="redirect-host">127.0.0.1:33418<' in page.text
    assert 'id="first-seen"' in page.text
    assert "form-action 'self' http://127.0.0.1:33418" in page.headers["content-security-policy"]
    assert "script" not in page.text.lower()
    answer = browser.decide(page, "approve", ["server:toolbox"])  # "other" unchecked
    assert answer.status_code == 303
    back = query_of(answer.headers["location"])
    assert back["state"] == params["state"]
    assert back["iss"] == env.url
    tokens = redeem(env, client_id, back["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "server:toolbox"
    assert 3500 <= body["expires_in"] <= 3600
    assert tokens.headers["cache-control"] == "no-store"
    assert tools_list(env, body["access_token"]).status_code == 200
    refused = tools_list(env, body["access_token"], "other")
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    grants = httpx.get(f"{env.url}/api/grants", headers=bearer(env.admin), timeout=10).json()["grants"]
    assert [g["name"] for g in grants if g["client_id"] == client_id] == ["oauth:Claude"]
    steps = ("oauth.client.registered", "oauth.consent.shown", "oauth.consent.approved", "oauth.code.issued")
    for event in steps:  # this client's own lines: the module's other tests write these events too
        assert [e["client"] for e in audit_events(env.logs, event) if e.get("client") == "Claude"] == ["Claude"], event
    [redeemed] = [e for e in audit_events(env.logs, "oauth.code.redeemed") if e.get("client") == "oauth:Claude"]
    assert redeemed["scopes"] == ["server:toolbox"]
    assert body["access_token"] not in (env.logs / "logs" / "audit.jsonl").read_text()


def test_a_second_approval_of_the_same_client_is_not_flagged_new(env: Builtin, browser: Browser) -> None:
    client_id, _ = issue_tokens(env, browser)
    _, challenge = pkce()
    page = browser.consent_page(authorize_params(client_id, challenge, resource=env.resource()))
    assert 'id="first-seen"' not in page.text


def test_a_server_resource_token_does_not_reach_another_server(env: Builtin, browser: Browser) -> None:
    _, tokens = issue_tokens(env, browser, server="toolbox")
    assert tokens["scope"] == "server:toolbox"
    assert tools_list(env, tokens["access_token"], "other").status_code == 403
    assert httpx.get(f"{env.url}/api/grants", headers=bearer(tokens["access_token"]), timeout=10).status_code == 403


def test_wrong_code_verifier_is_refused_and_the_right_one_still_works(env: Builtin, browser: Browser) -> None:
    client_id = register(env)
    verifier, challenge = pkce()
    back = browser.code_for(authorize_params(client_id, challenge, resource=env.resource()))
    wrong = redeem(env, client_id, back["code"], pkce()[0])
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert redeem(env, client_id, back["code"], verifier).status_code == 200


def test_a_replayed_code_is_refused_and_revokes_what_it_issued(env: Builtin, browser: Browser) -> None:
    """Issue 14 item 4: a replayed code is refused and revokes what it issued."""
    client_id = register(env)
    verifier, challenge = pkce()
    back = browser.code_for(authorize_params(client_id, challenge, resource=env.resource()))
    first = redeem(env, client_id, back["code"], verifier)
    assert first.status_code == 200
    access = first.json()["access_token"]
    assert tools_list(env, access).status_code == 200
    again = redeem(env, client_id, back["code"], verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert tools_list(env, access).status_code == 401
    refresh = first.json()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id}
    assert httpx.post(f"{env.url}/oauth/token", data=form, timeout=10).status_code == 400
    assert audit_events(env.logs, "oauth.code.reused")


def test_refresh_rotates_and_a_replayed_refresh_token_revokes_the_family(env: Builtin, browser: Browser) -> None:
    """Issue 14 item 4: refresh rotates and a replayed refresh token revokes the family."""
    client_id, tokens = issue_tokens(env, browser)
    form = {"grant_type": "refresh_token", "client_id": client_id}
    rotated = httpx.post(f"{env.url}/oauth/token", data={**form, "refresh_token": tokens["refresh_token"]}, timeout=10)
    assert rotated.status_code == 200, rotated.text
    newer = rotated.json()
    assert newer["refresh_token"] != tokens["refresh_token"]
    assert tools_list(env, newer["access_token"]).status_code == 200
    replay = httpx.post(f"{env.url}/oauth/token", data={**form, "refresh_token": tokens["refresh_token"]}, timeout=10)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert tools_list(env, newer["access_token"]).status_code == 401  # the whole family ended
    after = httpx.post(f"{env.url}/oauth/token", data={**form, "refresh_token": newer["refresh_token"]}, timeout=10)
    assert after.status_code == 400
    assert audit_events(env.logs, "oauth.refresh.reused")
    assert audit_events(env.logs, "oauth.token.refreshed")


def test_a_redirect_uri_that_was_not_registered_is_shown_not_followed(env: Builtin, browser: Browser) -> None:
    client_id = register(env)
    _, challenge = pkce()
    params = authorize_params(client_id, challenge, resource=env.resource(), redirect_uri="https://evil.test/cb")
    answer = browser.start(params)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert "redirect_uri is not one the client registered" in answer.text


def test_a_loopback_redirect_may_use_another_port(env: Builtin, browser: Browser) -> None:
    """Issue 14 item 3: a loopback redirect may use another port."""
    client_id = register(env)
    _, challenge = pkce()
    other_port = REDIRECT.replace("33418", "40001")
    assert browser.start(
        authorize_params(client_id, challenge, resource=env.resource(), redirect_uri=other_port)
    ).is_success
    other_path = REDIRECT + "x"
    answer = browser.start(authorize_params(client_id, challenge, resource=env.resource(), redirect_uri=other_path))
    assert answer.status_code == 400


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"resource": None}, "invalid_target"),
        ({"resource": "https://elsewhere.test/mcp/toolbox"}, "invalid_target"),
        ({"resource": "RESOURCE/mcp/unknown"}, "invalid_target"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_bad_requests_go_back_to_the_client_with_the_error(
    env: Builtin, browser: Browser, extra: dict[str, str | None], error: str
) -> None:
    client_id = register(env)
    _, challenge = pkce()
    fixed = {k: v.replace("RESOURCE", env.url) if v else v for k, v in extra.items()}
    params = authorize_params(client_id, challenge, **{"resource": env.resource(), **fixed})
    answer = browser.start(params)
    assert answer.status_code == 303, answer.text
    back = query_of(answer.headers["location"])
    assert back["error"] == error
    assert back["state"] == params["state"]
    assert back["iss"] == env.url


@pytest.mark.parametrize(
    "client_id",
    ["https://10.0.0.7/client.json", "https://169.254.169.254/latest/meta-data", "https://localhost/client.json"],
)
def test_a_client_metadata_url_at_a_private_address_is_never_fetched(
    env: Builtin, browser: Browser, client_id: str
) -> None:
    """Issue 14 item 2: a client metadata URL at a private address is never fetched."""
    _, challenge = pkce()
    answer = browser.start(authorize_params(client_id, challenge, resource=env.resource()))
    assert answer.status_code == 400
    assert "private or local address" in answer.text


def test_consent_without_the_pages_csrf_token_or_login_is_refused(env: Builtin, browser: Browser) -> None:
    """Issue 14 item 3: consent without the page's CSRF token or login is refused."""
    client_id = register(env)
    _, challenge = pkce()
    page = browser.consent_page(authorize_params(client_id, challenge, resource=env.resource()))
    forged = page.text.replace('name="csrf_token" value="', 'name="csrf_token" value="x')
    assert browser.decide(httpx.Response(200, text=forged), "approve").status_code == 403
    with httpx.Client(base_url=env.url, timeout=10) as stranger:  # the right token, but no login cookie
        form = {**hidden(page.text), "decision": "approve", "scope": "server:toolbox"}
        assert stranger.post("/oauth/consent", data=form).status_code == 403
    answer = browser.decide(page, "approve")  # the real form still works
    assert answer.status_code == 303
    assert "code=" in answer.headers["location"]
    assert audit_events(env.logs, "oauth.consent.refused")


def test_a_denied_consent_sends_access_denied_and_issues_nothing(env: Builtin, browser: Browser) -> None:
    client_id = register(env)
    _, challenge = pkce()
    params = authorize_params(client_id, challenge, resource=env.resource())
    answer = browser.decide(browser.consent_page(params), "deny")
    assert answer.status_code == 303
    back = query_of(answer.headers["location"])
    assert (back["error"], back["state"], back["iss"]) == ("access_denied", params["state"], env.url)
    assert "code" not in back
    assert audit_events(env.logs, "oauth.consent.denied")


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.test/cb",  # plain http off loopback
        "https://a.test;script-src*/cb",  # would reach the consent page's CSP
        "https://user@a.test/cb",
        "https://a.test/cb#frag",
        "myapp://callback",
        "https:///cb",
    ],
)
def test_registration_refuses_redirects_that_are_not_https_or_loopback_http(env: Builtin, uri: str) -> None:
    answer = httpx.post(f"{env.url}/oauth/register", json={"redirect_uris": [uri]}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_redirect_uri"
    assert audit_events(env.logs, "oauth.client.refused")


def test_the_consent_csp_names_only_a_plain_origin() -> None:
    assert consent_policy("https://a.test;script-src */cb")[1] == CSP
    assert b"form-action 'self' https://app.test:8443;" in consent_policy("https://app.test:8443/cb")[1]


def test_unknown_grant_type_and_repeated_parameters_are_refused(env: Builtin) -> None:
    assert httpx.post(f"{env.url}/oauth/token", data={"grant_type": "password"}, timeout=10).json()["error"] == (
        "unsupported_grant_type"
    )
    twice = httpx.post(
        f"{env.url}/oauth/token",
        content="grant_type=authorization_code&code=a&code=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert twice.status_code == 400
    assert twice.json()["error"] == "invalid_request"


def test_the_login_form_refuses_an_invalid_token(env: Builtin, browser: Browser) -> None:
    client_id = register(env)
    _, challenge = pkce()
    first = browser.start(authorize_params(client_id, challenge, resource=env.resource()))
    request = first.text.split("request=")[1].split('"')[0]
    answer = browser.http.post("/oauth/login", data={"request": request, "token": "not-a-token"})
    assert answer.status_code == 401
    assert 'id="error"' in answer.text


def test_the_operator_can_narrow_a_whole_server_to_single_tools(env: Builtin, browser: Browser) -> None:
    client_id = register(env)
    verifier, challenge = pkce()
    page = browser.consent_page(authorize_params(client_id, challenge, resource=env.resource()))
    assert "Or only these tools" in page.text
    assert 'value="tool:toolbox/echo">' in page.text  # offered, unchecked
    answer = browser.decide(page, "approve", ["tool:toolbox/echo"])  # the whole server unchecked
    tokens = redeem(env, client_id, query_of(answer.headers["location"])["code"], verifier).json()
    assert tokens["scope"] == "tool:toolbox/echo"
    listed = tools_list(env, tokens["access_token"]).json()["result"]["tools"]
    assert [t["name"] for t in listed] == ["echo"]
    with httpx.Client(timeout=10) as client:
        args = {"name": "add", "arguments": {"a": 1, "b": 2}}
        refused = modern_call(client, env.gw.mcp("toolbox"), tokens["access_token"], "tools/call", args)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "this token may not call that tool"
