"""A real OpenID provider (oidc-provider on loopback, tests/oauth/provider.mjs) issues the tokens: client-credentials
grants with a resource indicator (RFC 8707), JWT for most servers, opaque (introspected, RFC 7662) for one. The
official Python SDK client reaches a tool with them on every transport, and its own OAuth client finds the provider
from the gateway's metadata and gets its token by itself; mcp-remote carries one as a header."""

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from tests.harness import RunningGateway, free_port, spec
from tests.interop.conftest import tool
from tests.oauth.real_provider import Provider, oidc_provider
from tests.oauth.support import MemoryStorage
from tests.security.support import admin_token, audit_events, audit_text, bearer, modern_call, secure_gateway

pytestmark = pytest.mark.interop

ROBOT = ("robot", "robot-secret-" + "x" * 24)
GATEWAY_CLIENT = ("gateway", "gateway-secret-" + "y" * 24)
CALL_TIMEOUT_S = 30.0


@dataclass
class World:
    gw: RunningGateway
    provider: Provider
    public: str
    tmp_path: Path

    def resource(self, server: str | None = None) -> str:
        return self.public if server is None else f"{self.public}/mcp/{server}"

    def token(self, server: str | None = None, scope: str | None = None) -> str:
        scope = scope or ("mcp:admin" if server is None else f"mcp:server:{server}")
        return str(self.provider.token(ROBOT, self.resource(server), scope)["access_token"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path = tmp_path_factory.mktemp("real-oauth")
    port = free_port()
    public = f"http://127.0.0.1:{port}"  # the gateway's own URL: the SDK's OAuth client checks it against the metadata
    resources = {
        f"{public}/mcp/files": {"scope": "mcp:server:files", "format": "jwt", "alg": "ES256"},
        f"{public}/mcp/other": {"scope": "mcp:server:other", "format": "jwt", "alg": "RS256"},
        f"{public}/mcp/vault": {"scope": "mcp:server:vault", "format": "opaque"},
        public: {"scope": "mcp:admin", "format": "jwt"},
    }
    scopes = " ".join(r["scope"] for r in resources.values())
    clients = [
        {
            "client_id": ROBOT[0],
            "client_secret": ROBOT[1],
            "grant_types": ["client_credentials"],
            "redirect_uris": [],
            "response_types": [],
            "scope": scopes,
        },
        {
            "client_id": GATEWAY_CLIENT[0],
            "client_secret": GATEWAY_CLIENT[1],
            "grant_types": ["client_credentials"],
            "redirect_uris": [],
            "response_types": [],
        },
    ]
    with oidc_provider(tmp_path, clients=clients, resources=resources, interactive=True) as provider:
        settings: dict[str, Any] = {
            "port": port,
            "public_url": public,
            "oauth_issuer": provider.issuer,
            "oauth_scope_prefix": "mcp:",
            "oauth_allow_admin_scope": True,  # the provider grants mcp:admin for the management routes
            "oauth_client_id": GATEWAY_CLIENT[0],
            "oauth_client_secret": GATEWAY_CLIENT[1],
            "oauth_introspection_url": f"{provider.issuer}/token/introspection",
        }
        servers = [spec("files"), spec("other"), spec("vault")]
        with secure_gateway(servers, tmp_path, auth_token=admin_token(), **settings) as gw:
            yield World(gw, provider, public, tmp_path)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "sse"])
async def test_a_provider_token_reaches_a_tool_through_the_sdk_client(world: World, mode: str) -> None:
    """Issue 13 items 5 and 6: a provider token reaches a tool through the SDK client on every transport, audited."""
    token = world.token("files")
    url = world.gw.mcp("files")
    with anyio.fail_after(CALL_TIMEOUT_S):
        if mode == "sse":
            async with Client(sse_client(url + "/sse", headers=bearer(token)), mode="legacy") as client:
                answer = await client.call_tool("echo", {"text": mode})
        else:
            async with (
                httpx2.AsyncClient(timeout=10, headers=bearer(token)) as http,
                Client(streamable_http_client(url, http_client=http), mode=mode) as client,
            ):
                answer = await client.call_tool("echo", {"text": mode})
    assert answer.content[0].text == mode
    port = world.provider.issuer.rsplit(":", 1)[1]
    lines = [e for e in audit_events(world.tmp_path, "auth.success") if e.get("oauth_client") == "robot"]
    assert lines, "the OAuth principal's success is audited"
    assert lines[-1]["principal_id"] == f"oauth:127.0.0.1:{port}:robot"
    assert lines[-1]["oauth_issuer"] == world.provider.issuer
    assert lines[-1]["oauth_jti"]
    assert token not in audit_text(world.tmp_path)


def test_a_provider_token_for_one_server_is_refused_on_another(world: World) -> None:
    token = world.token("files")
    with httpx.Client(timeout=10) as client:
        answer = modern_call(client, world.gw.mcp("other"), token, "tools/list")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{world.public}/.well-known/oauth-protected-resource/mcp/other", '
        'error="invalid_token"'
    )


def test_an_opaque_provider_token_is_introspected_once_then_cached(world: World) -> None:
    token = world.token("vault")
    assert token.count(".") != 2  # opaque, not a JWT
    introspector = world.gw.app.oauth.introspector
    before = introspector.calls
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            answer = modern_call(
                client, world.gw.mcp("vault"), token, "tools/call", {"name": "echo", "arguments": {"text": "v"}}
            )
            assert answer.status_code == 200, answer.text
        assert introspector.calls == before + 1
        refused = modern_call(client, world.gw.mcp("files"), token, "tools/list")
        assert refused.status_code == 401  # its audience is the vault (the cached answer is re-checked per resource)
        forged = modern_call(client, world.gw.mcp("vault"), "opaque-" + token[::-1], "tools/list")
        assert forged.status_code == 401


def test_a_provider_token_for_the_gateway_reaches_the_management_routes(world: World) -> None:
    """Issue 13 item 6: a provider token for the gateway reaches the management routes."""
    token = world.token(None)
    health = httpx.get(world.gw.url + "/health", headers=bearer(token), timeout=10)
    assert health.status_code == 200
    assert set(health.json()["servers"]) == {"files", "other", "vault"}
    assert httpx.get(world.gw.url + "/health", headers=bearer(world.token("files")), timeout=10).status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_sdk_oauth_client_discovers_the_provider_and_gets_its_own_token(world: World, mode: str) -> None:
    """401 -> resource_metadata -> the provider's metadata -> a client-credentials token for this server's resource
    (RFC 8707) with the scope the metadata offers (none was configured)."""
    storage = MemoryStorage()
    auth = ClientCredentialsOAuthProvider(
        world.gw.mcp("other"), storage, ROBOT[0], ROBOT[1], issuer=world.provider.issuer
    )
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with (
            httpx2.AsyncClient(timeout=10, auth=auth) as http,
            Client(streamable_http_client(world.gw.mcp("other"), http_client=http), mode=mode) as client,
        ):
            answer = await client.call_tool("echo", {"text": "self-served"})
    assert answer.content[0].text == "self-served"
    assert storage.tokens is not None
    assert storage.tokens.scope == "mcp:server:other"


@pytest.mark.anyio
async def test_mcp_remote_carries_a_provider_token_to_a_tool(world: World, tmp_path: Path) -> None:
    token = world.token("files")
    params = StdioServerParameters(
        command=tool("mcp-remote"),
        args=[world.gw.mcp("files"), "--header", "Authorization:${AUTH_HEADER}"],
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "AUTH_HEADER": f"Bearer {token}"},
    )
    with anyio.fail_after(CALL_TIMEOUT_S), (tmp_path / "remote.err").open("a", encoding="utf-8") as sink:
        async with Client(stdio_client(params, errlog=sink), mode="legacy") as session:
            answer = await session.call_tool("echo", {"text": "via mcp-remote"})
    assert answer.content[0].text == "via mcp-remote"


@pytest.mark.anyio
async def test_the_sdk_oauth_client_logs_a_person_in_through_the_browser_and_calls_a_tool(world: World) -> None:
    """The authorization-code flow with PKCE as a desktop client runs it: dynamic registration at the provider, the
    provider's login and consent pages driven in Chromium, the code exchanged for a token bound to the server."""
    from playwright.async_api import async_playwright

    from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS

    callback = f"http://127.0.0.1:{free_port()}/callback"  # nothing listens: the browser's request is caught
    arrived = anyio.Event()
    seen: dict[str, str] = {}
    storage = MemoryStorage()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:

            async def catch(route: Any) -> None:
                seen["url"] = route.request.url
                await route.fulfill(status=200, body="You may close this window.")
                arrived.set()

            async def log_in(url: str) -> None:
                page = await browser.new_page()
                await page.route(lambda target: target.startswith(callback), catch)
                await page.goto(url)
                await page.fill("input[name=login]", "alice")
                await page.fill("input[name=password]", "any")
                await page.click("button[type=submit]")
                await page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
                await page.click("button[type=submit]")
                await arrived.wait()

            async def code() -> AuthorizationCodeResult:
                query = parse_qs(urlsplit(seen["url"]).query)
                first = lambda key: query[key][0] if key in query else None  # noqa: E731
                return AuthorizationCodeResult(code=query["code"][0], state=first("state"), iss=first("iss"))

            metadata = OAuthClientMetadata(
                redirect_uris=[callback],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
                client_name="bastion browser test",
            )
            auth = OAuthClientProvider(world.gw.mcp("files"), metadata, storage, log_in, code)
            with anyio.fail_after(CALL_TIMEOUT_S * 2):
                async with (
                    httpx2.AsyncClient(timeout=10, auth=auth) as http,
                    Client(streamable_http_client(world.gw.mcp("files"), http_client=http)) as client,
                ):
                    answer = await client.call_tool("echo", {"text": "logged in"})
        finally:
            await browser.close()
    assert answer.content[0].text == "logged in"
    assert storage.tokens is not None
    assert storage.tokens.scope == "mcp:server:files"
    port = world.provider.issuer.rsplit(":", 1)[1]
    people = [e for e in audit_events(world.tmp_path, "auth.success") if e.get("oauth_subject") == "alice"]
    assert people[-1]["principal_id"] == f"oauth:127.0.0.1:{port}:alice"


AUTHORIZE_URL = re.compile(r"Please authorize this client by visiting:\s*(\S+)")


@pytest.mark.anyio
async def test_mcp_remote_logs_a_person_in_through_the_browser_and_calls_a_tool(world: World, tmp_path: Path) -> None:
    """mcp-remote registers itself at the provider, prints the authorization URL (no desktop to open a browser
    on), the provider's pages are driven in Chromium, and its callback server receives the code."""
    from playwright.async_api import async_playwright

    from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS

    callback_port = free_port()
    errlog = tmp_path / "remote.err"
    params = StdioServerParameters(
        command=tool("mcp-remote"),
        args=[world.gw.mcp("other"), str(callback_port), "--host", "127.0.0.1"],
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path)},
    )

    async def authorization_url() -> str:
        while True:
            found = AUTHORIZE_URL.search(errlog.read_text(errors="replace")) if errlog.exists() else None
            if found:
                return found.group(1)
            await anyio.sleep(0.1)

    async def log_in(browser: Any) -> None:
        page = await browser.new_page()
        await page.goto(await authorization_url())
        await page.fill("input[name=login]", "bob")
        await page.fill("input[name=password]", "any")
        await page.click("button[type=submit]")
        await page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
        await page.click("button[type=submit]")
        await page.wait_for_url(f"http://127.0.0.1:{callback_port}/**")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            with anyio.fail_after(CALL_TIMEOUT_S * 2), errlog.open("a", encoding="utf-8") as sink:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(log_in, browser)
                    async with Client(stdio_client(params, errlog=sink), mode="legacy") as session:
                        answer = await session.call_tool("echo", {"text": "via mcp-remote and a browser"})
        finally:
            await browser.close()
    assert answer.content[0].text == "via mcp-remote and a browser"
    people = [e for e in audit_events(world.tmp_path, "auth.success") if e.get("oauth_subject") == "bob"]
    assert people, errlog.read_text(errors="replace")[-2000:]
