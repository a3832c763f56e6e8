"""Issue 11's proof, items 2, 3, 4, 6, 7 and 8: real third-party clients against the real npm server-everything,
through the gateway and, in the same test, directly over stdio, so a failure is provably the gateway's.

Clients: the official Python SDK 2.x (`auto`, and `legacy`, which negotiates 2025-11-25), the TypeScript SDK 1.x and
v2 client (tests/interop/clients/matrix_client.cjs), the Inspector 2.x CLI and mcp-remote (driven by the Python SDK's
stdio client). One gateway (authentication on) serves the module; each feature gets its own child so no test sees
another's subscriptions, log level or timers.
"""

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CreateMessageRequestParams, CreateMessageResult, ElicitResult, TextContent

from tests.harness import RunningGateway, spec
from tests.interop.conftest import ROOT, tool
from tests.security.support import add_token, admin_token, secure_gateway

# resources/subscribe and logging/setLevel are legacy-era methods (removed in 2026-07-28): the SDK warns on each use.
pytestmark = [
    pytest.mark.interop,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

CLIENT_SCRIPT = Path(__file__).parent / "clients" / "matrix_client.cjs"
SCENARIO_TIMEOUT_S = (
    40.0  # one whole scenario (a Node process, two sessions, a few seconds of tool time) on 2 busy cores
)
IDLE_TIMEOUT_S = 1.0  # the long child's timeoutSeconds: every call below that runs longer lives only by its progress
MAX_TOTAL_S = 2.0  # the long child's maxTotalSeconds: a call reporting progress still ends here
LONG = "trigger-long-running-operation"
LONG_ARGS = {"duration": 1.2, "steps": 6}  # longer than the idle timeout; progress every 0.2 s (5x margin)
SILENT_ARGS = {"duration": 1.2, "steps": 1}  # no progress token asked: the idle timeout fires
URIS = [f"demo://resource/dynamic/text/{n}" for n in range(1, 5)]


@dataclass
class Matrix:
    gateway: RunningGateway
    admin: str
    alice: str
    bob: str

    def url(self, server: str) -> str:
        return self.gateway.mcp(server)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    everything = [tool("mcp-server-everything"), "stdio"]
    servers = [
        spec("long", everything, timeoutSeconds=IDLE_TIMEOUT_S, maxTotalSeconds=MAX_TOTAL_S),
        spec("subs", everything),
        spec("logs", everything),
        spec("own", everything, isolation="per-session"),
        spec("resume", everything),
    ]
    token = admin_token()
    with secure_gateway(servers, tmp_path_factory.mktemp("matrix"), auth_token=token) as gateway:
        for name in ("long", "subs", "logs", "resume"):
            assert gateway.state(name) == "running", name
        alice = add_token(gateway, "alice", "server:logs")
        bob = add_token(gateway, "bob", "server:logs")
        yield Matrix(gateway, token, alice, bob)


def everything_stdio() -> list[str]:
    return [tool("mcp-server-everything"), "stdio"]


# --- the TypeScript clients ---------------------------------------------------------------------------------------


def node(scenario: str, tmp_path: Path, matrix: Matrix | None, **config: Any) -> dict[str, Any]:
    """Run one scenario of clients/matrix_client.cjs; tokens reach it through the environment, never argv."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "NODE_PATH": str(ROOT / ".tools" / "node_modules"),
    }
    if matrix is not None:
        env |= {"MATRIX_AUTH_A": f"Bearer {matrix.alice}", "MATRIX_AUTH_B": f"Bearer {matrix.bob}"}
        env |= {"MATRIX_AUTH_ADMIN": f"Bearer {matrix.admin}", "MCP_BASTION_TOKEN": matrix.admin}
    command = [tool("node22"), str(CLIENT_SCRIPT), scenario, json.dumps(config)]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{scenario} {config}\nstdout: {done.stdout}\nstderr: {done.stderr[-4000:]}"
    return dict(json.loads(done.stdout))


def via(matrix: Matrix, server: str, **extra: Any) -> dict[str, Any]:
    return {"url": matrix.url(server), "auth": "ADMIN", **extra}


def direct_target() -> dict[str, Any]:
    return {"command": everything_stdio()}


# --- the Python SDK -------------------------------------------------------------------------------------------------


class NoGetStream(httpx2.AsyncBaseTransport):
    """A client that never opens the optional GET stream: its GETs are answered 405 (no stream) without leaving."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.refused = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            self.refused += 1
            return httpx2.Response(405, request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def py_http(url: str, token: str, mode: str, transport: NoGetStream | None = None, **options: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    # The SDK leaves an http_client it was given open: close it here so no connection outlives the test.
    async with (
        httpx2.AsyncClient(timeout=SCENARIO_TIMEOUT_S, headers=headers, transport=transport) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, **options) as session,
    ):
        yield session


@asynccontextmanager
async def py_stdio(params: StdioServerParameters, errlog: Path, mode: str = "legacy", **options: Any) -> Any:
    with errlog.open("a", encoding="utf-8") as sink:
        async with Client(stdio_client(params, errlog=sink), mode=mode, **options) as session:
            yield session


def texts(answer: Any) -> list[str]:
    return [block.text for block in answer.content if isinstance(block, TextContent)]


async def py_progress(session: Client, args: dict[str, Any]) -> dict[str, Any]:
    seen: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)

    answer = await session.call_tool(LONG, args, progress_callback=on_progress)
    return {"progress": seen, "text": texts(answer)}


async def sampling(context: object, params: CreateMessageRequestParams) -> CreateMessageResult:
    content = params.messages[0].content
    assert isinstance(content, TextContent)
    reply = TextContent(type="text", text=f"reply to {content.text}")
    return CreateMessageResult(role="assistant", content=reply, model="py")


async def elicitation(context: object, params: Any) -> ElicitResult:
    return ElicitResult(action="accept", content={"name": "Ada Lovelace"})


SERVER_REQUEST_CALLBACKS = {"sampling_callback": sampling, "elicitation_callback": elicitation}


async def py_server_requests(session: Client, prompt: str) -> dict[str, Any]:
    sampled = await session.call_tool("trigger-sampling-request", {"prompt": prompt})
    elicited = await session.call_tool("trigger-elicitation-request", {})
    return {"sampling": texts(sampled), "elicitation": texts(elicited)}


class Seen:
    """What one Python session received: resource updates (URIs) and log lines (data), in order."""

    def __init__(self) -> None:
        self.updates: list[str] = []
        self.logs: list[str] = []
        self.changed = anyio.Event()

    async def on_message(self, message: Any) -> None:
        note = getattr(message, "root", message)
        if getattr(note, "method", None) == "notifications/resources/updated":
            self.updates.append(str(note.params.uri))
            self._wake()

    async def on_log(self, params: Any) -> None:
        self.logs.append(str(params.data))
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, what: str, needle: str) -> None:
        """Wait (bounded by the caller's fail_after) until an update or log line containing `needle` arrived."""
        while not any(needle in item for item in getattr(self, what)):
            await self.changed.wait()

    def options(self) -> dict[str, Any]:
        return {"message_handler": self.on_message, "logging_callback": self.on_log}


def run_concurrently(*jobs: Any) -> list[Any]:
    """Run blocking jobs (Node or CLI processes) side by side: the gateway run and its direct twin together."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job: Any) -> None:
        try:
            results[index] = job()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job), daemon=True) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SCENARIO_TIMEOUT_S + 5)
    if errors:
        raise errors[0]
    return results


def direct_params() -> StdioServerParameters:
    command = everything_stdio()
    return StdioServerParameters(command=command[0], args=command[1:])


# --- Item 2: a long tool that reports progress outlives the idle timeout ---------------------------------------------

IDLE_TIMEOUT_TEXT = f"did not answer tools/call within {IDLE_TIMEOUT_S:g} s (idle timeout"


def check_long_run(seen: dict[str, Any], args: dict[str, Any] = LONG_ARGS) -> None:
    steps = args["steps"]
    assert seen["text"] == [
        f"Long running operation completed. Duration: {args['duration']:g} seconds, Steps: {steps}."
    ]
    progress = seen["progress"]
    # The TS v2 client may hand the last progress notification over after the answer: seen directly over stdio too.
    assert progress == list(range(1, len(progress) + 1)), seen
    assert len(progress) >= steps - 1, seen


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_item2_python_sdk_long_tool_lives_past_the_idle_timeout_on_its_progress(
    matrix: Matrix, tmp_path: Path, mode: str
) -> None:
    """A 1.2 s tool on a server whose timeoutSeconds is 1 s completes because it reports progress; the same tool
    without a progress token is timed out, and the error names the idle limit; directly over stdio both complete."""
    found: dict[str, Any] = {}

    async def through() -> None:
        async with py_http(matrix.url("long"), matrix.admin, mode) as session:
            found["version"] = session.protocol_version
            found["through"] = await py_progress(session, LONG_ARGS)
            with pytest.raises(MCPError) as silent:
                await session.call_tool(LONG, SILENT_ARGS)
            found["silent"] = silent.value.error

    async def alone() -> None:
        async with py_stdio(direct_params(), tmp_path / "direct.err", mode) as session:
            found["alone"] = await py_progress(session, LONG_ARGS)
            found["quiet"] = texts(await session.call_tool(LONG, SILENT_ARGS))

    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(through)
            tasks.start_soon(alone)
    assert found["version"] == ("2026-07-28" if mode == "auto" else "2025-11-25")
    check_long_run(found["through"])
    assert found["through"] == found["alone"]
    assert found["silent"].code == -32001
    assert IDLE_TIMEOUT_TEXT in found["silent"].message
    assert found["quiet"][0].startswith("Long running operation completed")


async def test_item2_python_sdk_a_call_reporting_progress_still_ends_at_the_maximum_total(
    matrix: Matrix, tmp_path: Path
) -> None:
    """maxTotalSeconds (2 s) bounds a call that keeps reporting progress; the error says which limit fired."""
    args = {"duration": 5, "steps": 20}
    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with py_http(matrix.url("long"), matrix.admin, "legacy") as session:
            seen: list[float] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                seen.append(value)

            with pytest.raises(MCPError) as ended:
                await session.call_tool(LONG, args, progress_callback=on_progress)
    assert ended.value.error.code == -32001
    assert f"within {MAX_TOTAL_S:g} s, its maximum total time" in ended.value.error.message
    assert len(seen) >= 4, seen  # it did report progress (one every 0.25 s, the first at 0.25 s) until the limit


@pytest.mark.parametrize("sdk", ["v1", "v2"])
def test_item2_typescript_sdk_long_tool_lives_past_the_idle_timeout_on_its_progress(
    matrix: Matrix, tmp_path: Path, sdk: str
) -> None:
    """The TS SDK client (1.x, v2) with onprogress: as the Python test; its silent call is timed out by the gateway."""
    through, alone = run_concurrently(
        lambda: node(
            "progress", tmp_path, matrix, sdk=sdk, target=via(matrix, "long"), args=LONG_ARGS, silentArgs=SILENT_ARGS
        ),
        lambda: node(
            "progress", tmp_path, None, sdk=sdk, target=direct_target(), args=LONG_ARGS, silentArgs=SILENT_ARGS
        ),
    )
    check_long_run(through)
    check_long_run(alone)
    assert through["silent"]["code"] == -32001, through
    assert IDLE_TIMEOUT_TEXT in through["silent"]["message"]
    assert alone["silent"]["result"][0].startswith("Long running operation completed"), alone


async def test_item2_mcp_remote_long_tool_lives_past_the_idle_timeout_on_its_progress(
    matrix: Matrix, tmp_path: Path
) -> None:
    """mcp-remote (a stdio proxy to the gateway's URL, token from its environment) driven by the Python SDK's stdio
    client: the progress token and notifications cross it, so the call completes as directly over stdio."""
    params = StdioServerParameters(
        command=tool("mcp-remote"),
        args=[matrix.url("long"), "--header", "Authorization:${AUTH_HEADER}"],
        env={
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(tmp_path),
            "AUTH_HEADER": f"Bearer {matrix.admin}",
        },
    )
    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with py_stdio(params, tmp_path / "remote.err") as session:
            through = await py_progress(session, LONG_ARGS)
        async with py_stdio(direct_params(), tmp_path / "direct.err") as session:
            alone = await py_progress(session, LONG_ARGS)
    check_long_run(through)
    assert through == alone


def inspector(*args: str) -> dict[str, Any]:
    command = [tool("mcp-inspector"), "--cli", *args, "--format", "json", "--quiet"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr[-4000:]}"
    parsed = json.loads(done.stdout)
    assert "result" in parsed, parsed
    return dict(parsed["result"])


LONG_CALL = ["--method", "tools/call", "--tool-name", LONG, "--tool-args-json", json.dumps(LONG_ARGS)]


def test_item2_inspector_cli_long_tool_with_a_progress_token_lives_past_the_idle_timeout(matrix: Matrix) -> None:
    """The Inspector CLI asks for progress with --tool-metadata progressToken=...; the call completes."""
    url = matrix.url("long")
    auth = f"Authorization: Bearer {matrix.admin}"
    through, alone = run_concurrently(
        lambda: inspector(
            url, "--transport", "http", "--header", auth, *LONG_CALL, "--tool-metadata", "progressToken=p2"
        ),
        lambda: inspector(*everything_stdio(), *LONG_CALL, "--tool-metadata", "progressToken=p2"),
    )
    assert through == alone
    assert through["content"][0]["text"].startswith("Long running operation completed. Duration: 1.2 seconds")
