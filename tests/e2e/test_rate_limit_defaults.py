"""The Proof of Issue 10 item 1: with the shipped rate-limit defaults, an agent is not locked out and the dashboard
stays open alongside it."""

import threading
import time
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_bastion.config import Settings
from tests.harness import spec
from tests.security.support import admin_token, audit_events, bearer, secure_gateway

CALLS = 1_000
POLL_EVERY_S = 0.1
POLLS_MAX = 3_000  # the dashboard poller's bound (300 s at 0.1 s), whatever happens to the SDK client
SDK_TIMEOUT_S = 240.0
DEFAULTS = {
    name: Settings.model_fields[name].default
    for name in (
        "rate_limit_max_requests",
        "rate_limit_window_ms",
        "rate_limit_token_max_requests",
        "auth_failure_limit",
    )
}


def poll_dashboard(url: str, cookie: dict[str, str], stop: threading.Event, statuses: list[int]) -> None:
    """What the dashboard's Servers and Audit tabs do, ten times faster than the browser does it."""
    with httpx.Client(timeout=10, headers=cookie) as client:
        for _ in range(POLLS_MAX):
            if stop.is_set():
                return
            for path in ("/api/overview", "/api/audit"):
                statuses.append(client.get(url + path).status_code)
            stop.wait(POLL_EVERY_S)


async def call_tools(url: str, token: str) -> list[str]:
    texts = []
    async with (
        httpx2.AsyncClient(timeout=30, headers=bearer(token)) as http,  # the SDK leaves a client it was given open
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        for i in range(CALLS):
            answer = await client.call_tool("echo", {"text": str(i)})
            assert not answer.is_error, answer
            texts.append(answer.content[0].text)
    return texts


@pytest.mark.anyio
async def test_an_sdk_client_makes_1000_tool_calls_with_defaults_while_the_dashboard_polls(tmp_path: Path) -> None:
    """Issue 10 item 1 (Proof): default rate-limit settings (not raised); the official SDK client makes 1,000
    tool calls as fast as it can over one legacy Streamable HTTP session while a logged-in dashboard polls
    /api/overview and /api/audit every 0.1 s: zero 429s, zero errors on either side, and the page still loads."""
    assert DEFAULTS["rate_limit_max_requests"] == 100  # the Express server's figure, kept
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, **DEFAULTS) as gw:
        login = httpx.post(f"{gw.url}/auth/login", json={"token": admin}, timeout=10)
        assert login.status_code == 200, login.text
        cookie = {"Cookie": f"bastion_session={login.cookies['bastion_session']}"}
        stop, polled = threading.Event(), []
        poller = threading.Thread(target=poll_dashboard, args=(gw.url, cookie, stop, polled), daemon=True)
        poller.start()
        started = time.monotonic()
        try:
            with anyio.fail_after(SDK_TIMEOUT_S):
                texts = await call_tools(gw.mcp("toolbox"), admin)
        finally:
            stop.set()
            poller.join(30)
        elapsed = time.monotonic() - started
        assert not poller.is_alive()
        page = httpx.get(f"{gw.url}/", timeout=10)
        after = httpx.get(f"{gw.url}/api/overview", headers=cookie, timeout=10)
    assert texts == [str(i) for i in range(CALLS)]
    assert len(polled) >= 10, (len(polled), elapsed)  # the dashboard really polled alongside the calls
    assert set(polled) == {200}, sorted(set(polled))
    assert (page.status_code, after.status_code) == (200, 200)
    assert audit_events(tmp_path, "ratelimit.exceeded") == []
    calls = [e for e in audit_events(tmp_path, "mcp.call") if e.get("tool") == "echo"]
    assert len(calls) == CALLS
    assert {e["outcome"] for e in calls} == {"ok"}
