"""The MCP Inspector CLI (npm @modelcontextprotocol/inspector) against the gateway serving the demo server,
over Streamable HTTP in the legacy and 2026-07-28 eras and over HTTP+SSE."""

import json
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.harness import RunningGateway
from tests.interop.conftest import tool
from tests.interop.wire import RecordingProxy

pytestmark = pytest.mark.interop
MODERN = "2026-07-28"


def inspector(url: str, transport: str, era: str, *args: str) -> dict[str, Any]:
    """Run one Inspector CLI call; return its parsed JSON result, failing with its output if it did not succeed."""
    command = [tool("mcp-inspector"), "--cli", url, "--transport", transport, "--protocol-era", era]
    command += ["--format", "json", "--quiet", "--connect-timeout", "15000", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=45, check=False)
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    parsed = json.loads(done.stdout)
    assert "result" in parsed, parsed
    return dict(parsed["result"])


def check_tools(url: str, transport: str, era: str) -> None:
    listed = inspector(url, transport, era, "--method", "tools/list")
    assert [t["name"] for t in listed["tools"]] == ["echo", "add", "now"]
    assert listed["tools"][0]["inputSchema"]["required"] == ["text"]
    called = inspector(url, transport, era, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=hi")
    assert called["content"] == [{"type": "text", "text": "hi"}]
    assert called.get("isError") is False
    added = inspector(
        url, transport, era, "--method", "tools/call", "--tool-name", "add", "--tool-args-json", '{"a": 2, "b": 40}'
    )
    assert added["content"][0]["text"] == "42"


def test_inspector_streamable_http_legacy(interop_gateway: RunningGateway) -> None:
    """--protocol-era legacy: initialize, then a session id on every request."""
    with RecordingProxy(urlsplit(interop_gateway.url).port or 0) as proxy:
        check_tools(f"{proxy.url}/mcp/demo", "http", "legacy")
        seen = proxy.requests()
    posts = [r for r in seen if r.method == "POST"]
    assert posts, seen
    assert '"method":"initialize"' in proxy.body_text()
    assert any("mcp-session-id" in r.headers for r in posts), "legacy client never sent a session id"
    assert all(r.headers.get("mcp-protocol-version") != MODERN for r in posts)


@pytest.mark.parametrize("era", ["modern", "auto"])
def test_inspector_streamable_http_modern(interop_gateway: RunningGateway, era: str) -> None:
    """--protocol-era modern (and auto, which must settle on 2026-07-28 here): stateless, no initialize, no session."""
    with RecordingProxy(urlsplit(interop_gateway.url).port or 0) as proxy:
        check_tools(f"{proxy.url}/mcp/demo", "http", era)
        seen = proxy.requests()
    calls = [r for r in seen if r.method == "POST" and r.headers.get("mcp-method") == "tools/call"]
    assert len(calls) == 2, [(r.method, r.headers) for r in seen]
    for request in calls:
        assert request.headers.get("mcp-protocol-version") == MODERN
        assert request.headers.get("mcp-name") in ("echo", "add")
        assert "mcp-session-id" not in request.headers
    assert '"method":"initialize"' not in proxy.body_text()


def test_inspector_sse(interop_gateway: RunningGateway) -> None:
    """The 2024-11-05 HTTP+SSE transport: GET /sse, then POSTs to the endpoint it announces."""
    check_tools(interop_gateway.mcp("demo") + "/sse", "sse", "legacy")


def test_inspector_reports_a_tool_error(interop_gateway: RunningGateway) -> None:
    """An unknown tool comes back as a tool error, which the Inspector reports with exit code 5."""
    command = [tool("mcp-inspector"), "--cli", interop_gateway.mcp("demo"), "--transport", "http"]
    command += ["--format", "json", "--quiet", "--method", "tools/call", "--tool-name", "nope"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=45, check=False)
    assert done.returncode == 5, (done.returncode, done.stdout, done.stderr)
    assert "nope" in done.stdout + done.stderr
