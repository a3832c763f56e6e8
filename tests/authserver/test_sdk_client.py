"""The official Python SDK's OAuth client completes the whole flow against the built-in authorization server and
calls a tool: 401 -> Protected Resource Metadata -> RFC 8414 metadata -> Dynamic Client Registration -> the consent
page (driven over HTTP by its redirect handler, as a browser would) -> code + PKCE -> token -> tools/call; then it
refreshes once its access token expires, without a second consent (Issue 14)."""

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from tests.authserver.support import REDIRECT, Browser, Builtin
from tests.oauth.support import MemoryStorage
from tests.security.support import audit_events, audit_text

CALL_TIMEOUT_S = 30.0
pytestmark = pytest.mark.anyio


class Operator:
    """The redirect and callback handlers: the operator's browser opens the URL, logs in and approves."""

    def __init__(self, env: Builtin) -> None:
        self.env = env
        self.answer: dict[str, str] = {}
        self.opened: list[str] = []

    async def redirect(self, url: str) -> None:
        self.opened.append(url)
        assert url.startswith(f"{self.env.url}/oauth/authorize?")

        def approve() -> dict[str, str]:
            browser = Browser(self.env)
            try:
                return browser.code_for(url)
            finally:
                browser.close()

        self.answer = await anyio.to_thread.run_sync(approve)

    async def callback(self) -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=self.answer["code"], state=self.answer["state"], iss=self.answer["iss"])


def provider(env: Builtin, storage: MemoryStorage, operator: Operator) -> OAuthClientProvider:
    metadata = OAuthClientMetadata(
        client_name="sdk-e2e",
        redirect_uris=[REDIRECT],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    return OAuthClientProvider(
        env.gw.mcp("toolbox"), metadata, storage, redirect_handler=operator.redirect, callback_handler=operator.callback
    )


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_sdk_oauth_client_logs_in_gets_consent_and_calls_a_tool(env: Builtin, mode: str) -> None:
    storage, operator = MemoryStorage(), Operator(env)
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with (
            httpx2.AsyncClient(timeout=10, auth=provider(env, storage, operator)) as http,
            Client(streamable_http_client(env.gw.mcp("toolbox"), http_client=http), mode=mode) as client,
        ):
            answer = await client.call_tool("echo", {"text": f"via oauth {mode}"})
    assert answer.content[0].text == f"via oauth {mode}"
    assert len(operator.opened) == 1
    assert "resource=" in operator.opened[0]
    assert storage.tokens is not None
    assert storage.tokens.scope == "server:toolbox"
    assert storage.client is not None
    assert storage.client.client_id.startswith("mcpc_")
    assert storage.tokens.access_token not in audit_text(env.logs)
    assert any(e.get("client") == "oauth:sdk-e2e" for e in audit_events(env.logs, "oauth.code.redeemed"))


async def test_the_sdk_client_refreshes_an_expired_token_without_a_second_consent(env: Builtin) -> None:
    storage, operator = MemoryStorage(), Operator(env)
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with (
            httpx2.AsyncClient(timeout=10, auth=provider(env, storage, operator)) as http,
            Client(streamable_http_client(env.gw.mcp("toolbox"), http_client=http), mode="2026-07-28") as client,
        ):
            await client.call_tool("echo", {"text": "first"})
            assert storage.tokens is not None
            first_refresh = storage.tokens.refresh_token
            storage.tokens.expires_in = 0  # the client now thinks its token expired: it must refresh, not re-consent
            auth = http.auth
            assert isinstance(auth, OAuthClientProvider)
            auth.context.update_token_expiry(storage.tokens)
            answer = await client.call_tool("echo", {"text": "second"})
    assert answer.content[0].text == "second"
    assert len(operator.opened) == 1  # no second consent
    assert storage.tokens.refresh_token != first_refresh
    assert audit_events(env.logs, "oauth.token.refreshed")
