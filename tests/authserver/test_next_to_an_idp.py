"""The built-in authorization server next to a team's identity provider (Issue 13's OAUTH_ISSUER): the Protected
Resource Metadata names the gateway first, then the provider; the gateway's own tokens are judged by it alone (by
their key id), whatever the provider is doing."""

from pathlib import Path

import httpx

from tests.authserver.support import Browser, builtin_gateway, issue_tokens
from tests.harness import free_port
from tests.security.support import modern_call


def test_the_gateway_is_named_first_and_its_tokens_never_reach_the_provider(tmp_path: Path) -> None:
    provider = f"http://127.0.0.1:{free_port()}"  # nothing listens: a call to it would fail the request
    with builtin_gateway(tmp_path, oauth_issuer=provider) as env:
        prm = httpx.get(f"{env.url}/.well-known/oauth-protected-resource/mcp/toolbox", timeout=10).json()
        assert prm["authorization_servers"] == [env.url, provider]
        browser = Browser(env)
        try:
            _, tokens = issue_tokens(env, browser)
        finally:
            browser.close()
        with httpx.Client(timeout=10) as client:
            answer = modern_call(client, env.gw.mcp("toolbox"), tokens["access_token"], "tools/list")
        assert answer.status_code == 200, answer.text
