"""mcp-remote (real, from npm) completes the whole flow against the built-in authorization server (Issue 14): it
registers itself (RFC 7591), prints the authorization URL, and Playwright drives Chromium through it as a person
would: the login form, the consent page, one of the two requested scopes unchecked, approve; the browser lands on
mcp-remote's own loopback callback, and the Python SDK client behind mcp-remote calls a tool."""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.authserver.support import Builtin
from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser
from tests.harness import free_port
from tests.interop.conftest import tool
from tests.security.support import audit_events

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

FLOW_TIMEOUT_S = 60.0  # registration, a browser login and consent, a token and a tool call, on two busy cores
STEP_TIMEOUT_MS = 15_000
AUTHORIZE_URL = re.compile(r"Please authorize this client by visiting:\s*(\S+)")


async def authorize_url(errlog: Path) -> str:
    """The URL mcp-remote asks the person to open (it cannot open a browser here: no xdg-open on its PATH)."""
    while True:
        found = AUTHORIZE_URL.search(errlog.read_text(errors="replace")) if errlog.exists() else None
        if found:
            return found.group(1)
        await anyio.sleep(0.05)


async def approve_in_browser(env: Builtin, errlog: Path, unchecked: str) -> None:
    from playwright.async_api import async_playwright

    url = await authorize_url(errlog)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            await page.goto(url)
            await page.fill("input[name=token]", env.admin)
            await page.click("button[type=submit]")
            await page.wait_for_selector("#client-name")
            await page.uncheck(f"input[name=scope][value='{unchecked}']")
            await page.click("button[name=decision][value=approve]")
            await page.wait_for_url(re.compile(r"http://localhost:\d+/oauth/callback\?.*"))
            await page.wait_for_load_state()
        finally:
            await browser.close()


async def test_mcp_remote_registers_gets_consent_in_a_browser_and_calls_a_tool(env: Builtin, tmp_path: Path) -> None:
    _require_browser()
    errlog = tmp_path / "mcp-remote.err"
    bin_dir = tmp_path / "bin"  # the launcher needs dirname; nothing here can open a browser (xdg-open, open ...)
    bin_dir.mkdir()
    (bin_dir / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    requested = {"scope": "server:toolbox tool:toolbox/echo", "client_name": "mcp-remote e2e"}
    params = StdioServerParameters(
        command=tool("mcp-remote"),
        args=[
            env.gw.mcp("toolbox"),
            str(free_port()),
            "--static-oauth-client-metadata",
            json.dumps(requested),
        ],
        env={
            "PATH": str(bin_dir),  # so mcp-remote prints the URL for the person, and Playwright is the person
            "HOME": str(tmp_path),
            "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-auth"),
        },
    )
    answer: Any = None
    with anyio.fail_after(FLOW_TIMEOUT_S), errlog.open("a", encoding="utf-8") as sink:
        async with anyio.create_task_group() as tg:
            tg.start_soon(approve_in_browser, env, errlog, "server:toolbox")
            async with Client(stdio_client(params, errlog=sink), mode="legacy") as session:
                answer = await session.call_tool("echo", {"text": "via mcp-remote and consent"})
                tools = await session.list_tools()
    assert answer.content[0].text == "via mcp-remote and consent"
    assert [t.name for t in tools.tools] == ["echo"]  # the narrowed grant: one tool, not the whole server
    approved = audit_events(env.logs, "oauth.consent.approved")
    assert approved[-1]["client"] == "mcp-remote e2e"
    assert approved[-1]["scopes"] == ["tool:toolbox/echo"]
    assert os.path.exists(tmp_path / "mcp-auth")
