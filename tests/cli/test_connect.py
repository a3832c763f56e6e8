"""`mcp-bastion connect URL` and `mcp-bastion clients NAME` (Issue 11 item 8).

A real gateway (uvicorn on loopback, authentication on) with real stdio children behind it, and `connect` launched
as a subprocess by the official SDK's stdio client. Each scenario also runs directly over stdio against the same
server in the same test, to show that connect adds no failure.
"""

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import uvicorn
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import CreateMessageRequestParams, CreateMessageResult, TextContent

from mcp_bastion.app import create_app
from mcp_bastion.config import ServerSpec, Settings
from tests.harness import START_TIMEOUT_S, TOOLBOX, RunningGateway, free_port, spec, wait_until
from tests.security.support import admin_token, secure_gateway
from tests.transports.wire import RECORDER, recorded, recorder

pytestmark = pytest.mark.anyio
SCENARIO_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 30.0


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "LANG": "C.UTF-8", **extra}


def via_connect(url: str, tmp_path: Path, *flags: str, token: str | None = None) -> StdioServerParameters:
    """`connect URL` as a client would launch it: the token in the environment, never in argv."""
    env = base_env(tmp_path, **({"MCP_BASTION_TOKEN": token} if token else {}))
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_bastion", "connect", url, *flags], env=env)


def direct(command: list[str], **env: str) -> StdioServerParameters:
    return StdioServerParameters(command=command[0], args=command[1:], env=env or None)


@contextlib.asynccontextmanager
async def client(params: StdioServerParameters, errlog: Path, **options: Any) -> Any:
    options.setdefault("mode", "legacy")
    with errlog.open("a", encoding="utf-8") as sink:
        async with Client(stdio_client(params, errlog=sink), **options) as session:
            yield session


async def tools_call_and_progress(params: StdioServerParameters, errlog: Path, **options: Any) -> dict[str, Any]:
    """List tools, call one, call one that reports progress: what a client sees."""
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with client(params, errlog, **options) as session:
            tools = sorted(tool.name for tool in (await session.list_tools()).tools)
            echoed = await session.call_tool("echo", {"text": "through the shim"})
            slow = await session.call_tool("slow", {"steps": 3, "seconds": 0.02}, progress_callback=on_progress)
    return {"tools": tools, "echo": echoed.content[0].text, "slow": slow.content[0].text, "progress": progress}


def leaves(group: BaseExceptionGroup[MCPError]) -> list[MCPError]:
    """The errors in a (possibly nested) exception group."""
    found: list[MCPError] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def refused_connect(params: StdioServerParameters, errlog: Path) -> MCPError:
    """The MCPError the SDK client raises while connecting (it may arrive inside an exception group)."""
    caught: list[MCPError] = []
    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        try:
            async with client(params, errlog):
                pass
        except* MCPError as group:
            caught.extend(leaves(group))
    assert caught, "the client connected"
    return caught[0]


@pytest.fixture
def token() -> str:
    return admin_token()


@pytest.fixture
def gateway(tmp_path: Path, token: str) -> Iterator[RunningGateway]:
    with secure_gateway([spec("tools")], tmp_path, auth_token=token) as running:
        yield running


async def test_tools_calls_and_progress_through_connect_match_direct_stdio(
    gateway: RunningGateway, tmp_path: Path, token: str
) -> None:
    """Issue 11 item 8: list tools, call a tool, get progress: the same through connect as directly over stdio."""
    through = await tools_call_and_progress(via_connect(gateway.mcp("tools"), tmp_path, token=token), tmp_path / "e")
    alone = await tools_call_and_progress(direct(TOOLBOX), tmp_path / "direct.err")
    assert through == alone
    assert through["echo"] == "through the shim"
    assert through["progress"] == [1, 2, 3]


async def test_an_auto_mode_client_speaks_2026_07_28_through_connect_and_gets_the_same_answers(
    gateway: RunningGateway, tmp_path: Path, token: str
) -> None:
    """Issue 11 item 8: the SDK's default mode probes server/discover; the gateway answers it (stateless era) and
    connect mirrors the routing headers from each body, so tools and answers match direct stdio."""
    params = via_connect(gateway.mcp("tools"), tmp_path, token=token)
    async with client(params, tmp_path / "e", mode="auto") as session:
        version = session.protocol_version
    assert version == "2026-07-28"
    through = await tools_call_and_progress(params, tmp_path / "e", mode="auto")
    alone = await tools_call_and_progress(direct(TOOLBOX), tmp_path / "direct.err", mode="auto")
    assert (through["tools"], through["echo"], through["slow"]) == (alone["tools"], alone["echo"], alone["slow"])


async def cancel_slow_call(params: StdioServerParameters, errlog: Path, log: Path) -> None:
    """Start a long tool call, cancel it once it has started, and wait (bounded) until the child stopped it."""
    async with client(params, errlog) as session:
        with anyio.move_on_after(SCENARIO_TIMEOUT_S) as scope:
            async with anyio.create_task_group() as tasks:

                async def slow() -> None:
                    await session.call_tool("slow", {"steps": 400, "seconds": 0.05})

                tasks.start_soon(slow)
                while not any(e.get("event") == "slow-start" for e in recorded(log)):
                    await anyio.sleep(0.02)
                tasks.cancel_scope.cancel()
            while not any(e.get("event") == "slow-stopped" for e in recorded(log)):
                await anyio.sleep(0.02)
        assert not scope.cancelled_caught, "the child never saw the cancellation"
        assert (await session.call_tool("echo", {"text": "still here"})).content[0].text == "still here"


async def test_a_cancelled_call_stops_in_the_child_through_connect_as_directly(tmp_path: Path, token: str) -> None:
    """Issue 11 item 8: the client's notifications/cancelled reaches the child, which stops the call."""
    gateway_log, direct_log = tmp_path / "gw.jsonl", tmp_path / "direct.jsonl"
    with secure_gateway([recorder("rec", gateway_log)], tmp_path, auth_token=token) as gw:
        await cancel_slow_call(via_connect(gw.mcp("rec"), tmp_path, token=token), tmp_path / "e", gateway_log)
    await cancel_slow_call(direct(RECORDER, RECORDER_LOG=str(direct_log)), tmp_path / "d", direct_log)
    assert [e["event"] for e in recorded(gateway_log) if e.get("event", "").startswith("slow-")] == [
        "slow-start",
        "slow-stopped",
    ]


async def sample_once(params: StdioServerParameters, errlog: Path) -> dict[str, Any]:
    async def sampling(context: object, params: CreateMessageRequestParams) -> CreateMessageResult:
        content = params.messages[0].content
        assert isinstance(content, TextContent)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=f"reply to {content.text}"), model="test-model"
        )

    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with client(params, errlog, sampling_callback=sampling) as session:
            answer = await session.call_tool("sample", {"prompt": "unique-prompt-88"})
    return dict(json.loads(answer.content[0].text))


async def test_a_childs_sampling_request_is_answered_by_the_client_through_connect(tmp_path: Path, token: str) -> None:
    """Issue 11 item 8: a per-session child asks sampling/createMessage; connect writes it to the client's stdout
    and POSTs the client's answer back; the tool returns what the client answered, as directly over stdio."""
    with secure_gateway([spec("own", isolation="per-session")], tmp_path, auth_token=token) as gw:
        through = await sample_once(via_connect(gw.mcp("own"), tmp_path, token=token), tmp_path / "e")
    alone = await sample_once(direct(TOOLBOX), tmp_path / "d")
    assert through == alone
    assert through["content"]["text"] == "reply to unique-prompt-88"


@contextlib.contextmanager
def gateway_on(port: int, servers: list[ServerSpec], tmp_path: Path, token: str) -> Iterator[uvicorn.Server]:
    """A gateway on a given port, so a test can stop it and start another where the first one was."""
    settings = Settings(
        host="127.0.0.1",
        port=port,
        log_dir=tmp_path / "logs",
        auth_token=token,
        store_url="memory://",
        audit_log=tmp_path / "logs" / "audit.jsonl",
        security_log=tmp_path / "logs" / "audit.jsonl",
    )
    app = create_app(settings, {s.name: s for s in servers})
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, START_TIMEOUT_S)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(30)


async def calls_across_a_restart(params: StdioServerParameters, errlog: Path, restart: Any) -> list[str]:
    with anyio.fail_after(SCENARIO_TIMEOUT_S * 2):
        async with client(params, errlog) as session:
            first = await session.call_tool("echo", {"text": "before"})
            await anyio.to_thread.run_sync(restart)
            second = await session.call_tool("echo", {"text": "after"})
            tools = await session.list_tools()
    return [first.content[0].text, second.content[0].text, str(len(tools.tools))]


async def test_a_gateway_restart_mid_session_is_invisible_to_the_client(tmp_path: Path, token: str) -> None:
    """Issue 11 item 8: after a restart the old session 404s; connect re-initializes with the client's own
    handshake and sends the call again, so the next call works; stderr says so in one line each."""
    port = free_port()
    stack = contextlib.ExitStack()
    stack.enter_context(gateway_on(port, [spec("tools")], tmp_path, token))

    def restart() -> None:
        stack.close()
        stack.enter_context(gateway_on(port, [spec("tools")], tmp_path, token))

    errlog = tmp_path / "connect.err"
    with stack:
        url = f"http://127.0.0.1:{port}/mcp/tools"
        through = await calls_across_a_restart(via_connect(url, tmp_path, token=token), errlog, restart)
    alone = await calls_across_a_restart(direct(TOOLBOX), tmp_path / "d", lambda: None)
    assert through == alone == ["before", "after", alone[2]]
    said = errlog.read_text(encoding="utf-8")
    assert "no longer knows this session" in said
    assert "new session ready" in said
    assert "Traceback" not in said


async def test_the_token_is_never_in_connects_argv_or_stderr(
    gateway: RunningGateway, tmp_path: Path, token: str
) -> None:
    """Issue 11 item 8: /proc/PID/cmdline of the running connect holds no token, and nothing it prints does."""
    errlog = tmp_path / "connect.err"
    async with client(via_connect(gateway.mcp("tools"), tmp_path, token=token), errlog) as session:
        await session.call_tool("echo", {"text": "x"})
        shims = [p for p in psutil.Process().children(recursive=True) if "connect" in p.cmdline()]
        assert len(shims) == 1
        cmdline = Path(f"/proc/{shims[0].pid}/cmdline").read_bytes()
    assert b"connect" in cmdline
    assert token.encode() not in cmdline
    said = errlog.read_text(encoding="utf-8")
    assert "forwarding stdio to" in said
    assert "$MCP_BASTION_TOKEN" in said
    assert token not in said


async def test_a_private_token_file_works_and_a_readable_one_is_refused_with_the_fix(
    gateway: RunningGateway, tmp_path: Path, token: str
) -> None:
    """Issue 11 item 8: --token-file must be 0600; a group/world-readable one is refused, naming chmod 600."""
    secret = tmp_path / "gw.token"
    secret.write_text(token + "\n", encoding="utf-8")
    secret.chmod(0o644)
    refused = subprocess.run(
        [sys.executable, "-m", "mcp_bastion", "connect", gateway.mcp("tools"), "--token-file", str(secret)],
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode == 2
    assert f"chmod 600 {secret}" in refused.stderr
    assert token not in refused.stderr
    secret.chmod(0o600)
    params = via_connect(gateway.mcp("tools"), tmp_path, "--token-file", str(secret))
    async with client(params, tmp_path / "e") as session:
        assert (await session.call_tool("add", {"a": 2, "b": 3})).content[0].text == "5"


async def test_a_wrong_token_is_a_clear_error_for_the_client_and_on_stderr(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """Issue 11 item 8: the gateway's 401 becomes the client's error and a stderr line naming the token flags."""
    errlog = tmp_path / "connect.err"
    error = await refused_connect(via_connect(gateway.mcp("tools"), tmp_path, token="not-the-token"), errlog)
    assert "credentials" in error.error.message
    said = errlog.read_text(encoding="utf-8")
    assert "HTTP 401" in said
    assert "--token-env or --token-file" in said


async def test_an_unreachable_gateway_answers_the_request_with_an_error_after_the_retry_budget(tmp_path: Path) -> None:
    """Issue 11 item 8: nothing listens; connect retries with backoff for --retry-for, then answers with an error."""
    url = f"http://127.0.0.1:{free_port()}/mcp/tools"
    errlog = tmp_path / "connect.err"
    started = time.monotonic()
    error = await refused_connect(via_connect(url, tmp_path, "--retry-for", "1.5", token="t"), errlog)
    elapsed = time.monotonic() - started
    assert "unreachable" in error.error.message
    assert 1.5 <= elapsed < 15
    said = errlog.read_text(encoding="utf-8").splitlines()
    assert any("unreachable (ConnectError); retrying with backoff" in line for line in said)
    assert any("gave up on initialize after 1.5 s" in line for line in said)
    assert not any("Traceback" in line for line in said)


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_bastion", *args],
        env=base_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_connect_refuses_plain_http_off_this_machine(tmp_path: Path) -> None:
    """Issue 11 item 8: a token never travels in clear text: http:// is for loopback only (as doctor --live)."""
    done = run_cli(tmp_path, "connect", "http://gateway.example/mcp/tools", MCP_BASTION_TOKEN="t")
    assert done.returncode == 2
    assert "refusing to send a token in clear text" in done.stderr


def sections(output: str) -> dict[str, tuple[str, str]]:
    """`clients` output as {client: (where-comment, snippet)}."""
    found: dict[str, tuple[str, str]] = {}
    for block in output.strip().split("\n\n"):
        head, _, body = block.partition("\n")
        assert head.startswith("# "), block
        client_name, _, where = head[2:].partition(": ")
        found[client_name] = (where, body)
    return found


def test_clients_prints_a_parseable_snippet_with_its_file_for_each_client(tmp_path: Path) -> None:
    """Issue 11 item 8: one snippet per client, JSON that parses (a shell line for `claude mcp add`), each under a
    comment naming its file, the URL in each, and never a token value even when one is in the environment."""
    canary = admin_token()
    done = run_cli(
        tmp_path, "clients", "files", "--url", "https://gw.example", "--token-env", "GW_TOKEN", GW_TOKEN=canary
    )
    assert done.returncode == 0, done.stderr
    assert canary not in done.stdout
    found = sections(done.stdout)
    assert set(found) == {
        "Claude Desktop (through mcp-bastion connect)",
        "Claude Desktop (through mcp-remote, needs Node.js)",
        "Claude Code",
        "Claude Code (.mcp.json)",
        "Cursor",
        "VS Code",
        "Windsurf",
    }
    url = "https://gw.example/mcp/files"
    parsed = {name: json.loads(body) for name, (_, body) in found.items() if name != "Claude Code"}
    desktop = parsed["Claude Desktop (through mcp-bastion connect)"]["mcpServers"]["files"]
    assert desktop["args"][-4:-2] == ["connect", url]
    assert desktop["args"][-2] == "--token-file"
    assert parsed["Claude Desktop (through mcp-remote, needs Node.js)"]["mcpServers"]["files"]["args"][2] == url
    assert parsed["Claude Code (.mcp.json)"]["mcpServers"]["files"]["headers"]["Authorization"] == "Bearer ${GW_TOKEN}"
    assert parsed["Cursor"]["mcpServers"]["files"]["headers"]["Authorization"] == "Bearer ${env:GW_TOKEN}"
    assert parsed["Windsurf"]["mcpServers"]["files"]["serverUrl"] == url
    vscode = parsed["VS Code"]
    assert vscode["servers"]["files"]["url"] == url
    assert vscode["inputs"][0]["password"] is True
    assert found["Claude Code"][1].startswith(f"claude mcp add --scope project --transport http files {url} ")
    assert "claude_desktop_config.json" in found["Claude Desktop (through mcp-bastion connect)"][0]
    assert "mcp_config.json" in found["Windsurf"][0]
    assert ".vscode/mcp.json" in found["VS Code"][0]


def test_clients_refuses_a_plain_http_gateway_off_this_machine(tmp_path: Path) -> None:
    """Issue 11 item 8: the snippets would send the token in clear text."""
    done = run_cli(tmp_path, "clients", "files", "--url", "http://gw.example")
    assert done.returncode == 2
    assert "clear text" in done.stderr
