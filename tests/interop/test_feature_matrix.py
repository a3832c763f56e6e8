"""Issue 11's proof, items 2, 3, 4, 6, 7 and 8: real third-party clients against the real npm server-everything,
through the gateway and, in the same test, directly over stdio, so a failure is provably the gateway's.

Clients: the official Python SDK 2.x (`auto`, and `legacy`, which negotiates 2025-11-25), the TypeScript SDK 1.x and
v2 client (tests/interop/clients/matrix_client.cjs), the Inspector 2.x CLI and mcp-remote (driven by the Python SDK's
stdio client). One gateway (authentication on) serves the module; each feature gets its own child so no test sees
another's subscriptions, log level or timers.

The cells (- = not possible, with why):
  item | Python auto  | Python 2025-11-25 | TS 1.x   | TS v2        | mcp-remote | Inspector CLI
  2    | yes          | yes, and over SSE | yes      | yes (auto)   | yes        | yes (progressToken metadata)
  3    | - (a)        | yes               | yes      | yes          | yes        | - (b)
  4    | - (a)        | yes               | yes      | yes          | yes        | - (b)
  6    | yes          | yes + (f)         | yes + (f)| yes + (f)    | relay (c)  | - (b)
  7    | - (d)        | yes               | yes      | yes          | yes        | - (b)
  8    | test_connect | test_connect      | yes      | yes          | - (e)      | yes
(a) auto settles on 2026-07-28, which has no resources/subscribe or logging/setLevel (subscriptions/listen is item 5).
(b) one request per process: no session outlives the call to hold a subscription, receive later log lines or resume
    a stream; and it advertises neither sampling nor elicitation (server-everything does not even list those tools).
(c) mcp-remote opens the GET stream itself, so its cell proves the relay of the child's requests, not the GET-less path.
(d) resumability belongs to the 2025 eras' SSE streams; a 2026-07-28 request has no session to resume in.
(e) mcp-remote is the other way to reach a gateway from a stdio-only client, not a client of `connect`.
(f) also the other half: a child's request outside any call (roots/list) on the GET stream. Not in auto mode: a
    2026-07-28 client has no stream outside its calls.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitResult,
    ListRootsResult,
    Root,
    TextContent,
)

from tests.harness import RunningGateway, spec
from tests.interop.conftest import ROOT, tool
from tests.interop.wire import RecordingProxy
from tests.relay.test_shared_subscriptions_and_logs import Seen
from tests.security.support import add_token, admin_token, secure_gateway

# resources/subscribe and logging/setLevel are legacy-era methods (removed in 2026-07-28): the SDK warns on each use.
pytestmark = [
    pytest.mark.interop,
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

CLIENT_SCRIPT = Path(__file__).parent / "clients" / "matrix_client.cjs"
# One whole scenario (a Node process, two sessions, a few seconds of tool time) on 2 busy cores.
SCENARIO_TIMEOUT_S = 40.0
IDLE_TIMEOUT_S = 1.0  # the long child's timeoutSeconds: every call below that runs longer lives only by its progress
MAX_TOTAL_S = 2.0  # the long child's maxTotalSeconds: a call reporting progress still ends here
LONG = "trigger-long-running-operation"
LONG_ARGS = {"duration": 1.2, "steps": 6}  # longer than the idle timeout; progress every 0.2 s (5x margin)
SILENT_ARGS = {"duration": 1.2, "steps": 1}  # no progress token asked: the idle timeout fires


@dataclass
class Matrix:
    gateway: RunningGateway
    admin: str
    alice: str
    bob: str

    def url(self, server: str) -> str:
        return self.gateway.mcp(server)


def everything_stdio() -> list[str]:
    return [tool("mcp-server-everything"), "stdio"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    everything = everything_stdio()
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


# The TypeScript clients.


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


# The Python SDK.


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
async def py_client(url: str, token: str, mode: str) -> Any:
    """The Python SDK over Streamable HTTP in `mode`, or over HTTP+SSE (2024-11-05's transport) for mode "sse"."""
    if mode != "sse":
        async with py_http(url, token, mode) as session:
            yield session
        return
    async with Client(sse_client(f"{url}/sse", headers={"Authorization": f"Bearer {token}"}), mode="legacy") as session:
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


def handlers(seen: Seen) -> dict[str, Any]:
    """The SDK client options that record resource updates and log lines into `seen`."""
    return {"message_handler": seen.on_message, "logging_callback": seen.on_log}


def remote_params(url: str, token: str, home: Path) -> StdioServerParameters:
    """mcp-remote as Claude Desktop would launch it: the header's value from its environment, not its argv."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "AUTH_HEADER": f"Bearer {token}"}
    args = [url, "--header", "Authorization:${AUTH_HEADER}"]
    return StdioServerParameters(command=tool("mcp-remote"), args=args, env=env)


# The official Python SDK over HTTP (2025-11-25), or driving mcp-remote (2025-11-25 to the gateway, its default).
# mcp-remote --protocol auto is left out: it answers resources/subscribe itself and re-opens its 2026-07-28 listen
# stream afterwards, so the child's immediate update round is missed and the test waits for the next (5 s) round;
# its subscribe is no longer a child request either, so the child's "Received Subscribe" line belongs to nobody.
CLIENTS = ["python-sdk", "mcp-remote"]


def session_via(client: str, url: str, token: str, home: Path, **options: Any) -> Any:
    """A 2025-11-25 session on the gateway's `url`, by the Python SDK itself or through mcp-remote."""
    if client == "python-sdk":
        return py_http(url, token, "legacy", **options)
    return py_stdio(remote_params(url, token, home), home / "remote.err", **options)


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


async def concurrently(*jobs: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Await jobs side by side (a scenario through the gateway and its direct twin); their results, in order."""
    results: list[Any] = [None] * len(jobs)

    async def run(index: int, job: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await job()

    async with anyio.create_task_group() as tasks:
        for index, job in enumerate(jobs):
            tasks.start_soon(run, index, job)
    return results


def direct_params() -> StdioServerParameters:
    command = everything_stdio()
    return StdioServerParameters(command=command[0], args=command[1:])


# Item 2: a long tool that reports progress outlives the idle timeout.

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


@pytest.mark.parametrize("mode", ["auto", "legacy", "sse"])
async def test_item2_python_sdk_long_tool_lives_past_the_idle_timeout_on_its_progress(
    matrix: Matrix, tmp_path: Path, mode: str
) -> None:
    """A 1.2 s tool on a server whose timeoutSeconds is 1 s completes because it reports progress; the same tool
    without a progress token is timed out, and the error names the idle limit; directly over stdio both complete.
    In each front era: 2026-07-28 (auto), 2025-11-25 sessions, and the HTTP+SSE transport."""
    found: dict[str, Any] = {}

    async def progress(session: Client, key: str) -> None:
        found[key] = await py_progress(session, LONG_ARGS)

    async def silent(session: Client) -> None:
        with pytest.raises(MCPError) as refused:
            await session.call_tool(LONG, SILENT_ARGS)
        found["silent"] = refused.value.error

    async def quiet(session: Client) -> None:
        found["quiet"] = texts(await session.call_tool(LONG, SILENT_ARGS))

    async def through() -> None:
        async with py_client(matrix.url("long"), matrix.admin, mode) as session, anyio.create_task_group() as calls:
            found["version"] = session.protocol_version
            calls.start_soon(progress, session, "through")
            calls.start_soon(silent, session)

    async def alone() -> None:
        async with (
            py_stdio(direct_params(), tmp_path / "direct.err", "legacy" if mode == "sse" else mode) as session,
            anyio.create_task_group() as calls,
        ):
            calls.start_soon(progress, session, "alone")
            calls.start_soon(quiet, session)

    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(through)
            tasks.start_soon(alone)
    assert found["version"] == ("2026-07-28" if mode == "auto" else "2025-11-25"), found["version"]
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


# The v2 client in its default 2025-era mode reports progress in items 7 and 8; here it negotiates 2026-07-28.
@pytest.mark.parametrize(("sdk", "negotiation"), [("v1", None), ("v2", "auto")], ids=["v1", "v2-auto"])
def test_item2_typescript_sdk_long_tool_lives_past_the_idle_timeout_on_its_progress(
    matrix: Matrix, tmp_path: Path, sdk: str, negotiation: str | None
) -> None:
    """The TS SDK client (1.x; v2 negotiating 2026-07-28) with onprogress: as the Python test; its silent call is
    timed out by the gateway."""
    config = {"sdk": sdk, "negotiation": negotiation, "args": LONG_ARGS, "silentArgs": SILENT_ARGS}
    through, alone = run_concurrently(
        lambda: node("progress", tmp_path, matrix, target=via(matrix, "long"), **config),
        lambda: node("progress", tmp_path, None, target=direct_target(), **config),
    )
    assert through["version"] == ("2026-07-28" if negotiation else "2025-11-25"), through
    check_long_run(through)
    check_long_run(alone)
    assert through["text"] == alone["text"]
    assert through["silent"]["code"] == -32001, through
    assert IDLE_TIMEOUT_TEXT in through["silent"]["message"]
    assert alone["silent"]["result"][0].startswith("Long running operation completed"), alone


async def test_item2_mcp_remote_long_tool_lives_past_the_idle_timeout_on_its_progress(
    matrix: Matrix, tmp_path: Path
) -> None:
    """mcp-remote (a stdio proxy to the gateway's URL, token from its environment) driven by the Python SDK's stdio
    client: the progress token and notifications cross it, so the call completes as directly over stdio."""

    async def through() -> dict[str, Any]:
        params = remote_params(matrix.url("long"), matrix.admin, tmp_path)
        async with py_stdio(params, tmp_path / "remote.err") as session:
            return await py_progress(session, LONG_ARGS)

    async def alone() -> dict[str, Any]:
        async with py_stdio(direct_params(), tmp_path / "direct.err") as session:
            return await py_progress(session, LONG_ARGS)

    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        through_seen, alone_seen = await concurrently(through, alone)
    check_long_run(through_seen)
    assert through_seen == alone_seen


def inspector(home: Path, *args: str) -> dict[str, Any]:
    """One Inspector CLI call (its catalog under `home`, not the user's); its parsed JSON result."""
    command = [tool("mcp-inspector"), "--cli", *args, "--format", "json", "--quiet"]
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8"}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr[-4000:]}"
    parsed = json.loads(done.stdout)
    assert "result" in parsed, parsed
    return dict(parsed["result"])


LONG_CALL = ["--method", "tools/call", "--tool-name", LONG, "--tool-args-json", json.dumps(LONG_ARGS)]


def test_item2_inspector_cli_long_tool_with_a_progress_token_lives_past_the_idle_timeout(
    matrix: Matrix, tmp_path: Path
) -> None:
    """The Inspector CLI asks for progress with --tool-metadata progressToken=...; the call completes."""
    url = matrix.url("long")
    auth = f"Authorization: Bearer {matrix.admin}"
    through, alone = run_concurrently(
        lambda: inspector(
            tmp_path, url, "--transport", "http", "--header", auth, *LONG_CALL, "--tool-metadata", "progressToken=p2"
        ),
        lambda: inspector(tmp_path, *everything_stdio(), *LONG_CALL, "--tool-metadata", "progressToken=p2"),
    )
    assert through == alone
    assert through["content"][0]["text"].startswith("Long running operation completed. Duration: 1.2 seconds")


def uris(tag: str) -> list[str]:
    """URIs of server-everything's dynamic template, unique per test: a session another test left behind never
    holds them, so each subscribe here reaches the child (which logs it)."""
    return [f"demo://resource/dynamic/text/{tag}-{n}" for n in range(1, 5)]


# Item 3: one client's unsubscribe leaves the other subscribed.

TOGGLE = "toggle-subscriber-updates"  # starts/stops the child's update rounds (one at once, then every 5 s)


async def updates_restart(session: Client) -> None:
    """One round of updates now, whatever state an earlier scenario left the child's one switch in."""
    if texts(await session.call_tool(TOGGLE, {}))[0].startswith("Stopped"):
        await session.call_tool(TOGGLE, {})


async def updates_stop(session: Client) -> None:
    if texts(await session.call_tool(TOGGLE, {}))[0].startswith("Started"):
        await session.call_tool(TOGGLE, {})


async def py_subscriptions_direct(seen: Seen, errlog: Path, x: str, y: str) -> None:
    """Directly over stdio (one client): subscribe x, updates; unsubscribe x and subscribe y, updates for y only."""
    async with py_stdio(direct_params(), errlog, **handlers(seen)) as session:
        await session.subscribe_resource(x)
        await updates_restart(session)
        await seen.until("updates", 1)
        await session.unsubscribe_resource(x)
        await session.subscribe_resource(y)
        await updates_restart(session)
        await seen.until("updates", 2)
        await updates_stop(session)


@pytest.mark.parametrize("client", CLIENTS)
async def test_item3_one_sessions_unsubscribe_leaves_the_other_subscribed(
    matrix: Matrix, tmp_path: Path, client: str
) -> None:
    """A and B subscribe to x on one shared child; A unsubscribes; the child's update for x reaches B; A, subscribed to
    y, gets y's update from the same round and never x's; directly over stdio the same server behaves as expected."""
    x, y = uris(f"{client}-3")[:2]
    a_seen, b_seen, d_seen = Seen(), Seen(), Seen()
    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with (
            session_via(client, matrix.url("subs"), matrix.admin, tmp_path / "a", **handlers(a_seen)) as a,
            session_via(client, matrix.url("subs"), matrix.admin, tmp_path / "b", **handlers(b_seen)) as b,
        ):
            await a.subscribe_resource(x)
            await b.subscribe_resource(x)
            await a.unsubscribe_resource(x)
            await updates_restart(b)  # one round at once: x, still held by B
            await b_seen.until("updates", 1)
            await a.subscribe_resource(y)
            await updates_restart(a)  # one more round: x (for B) and y (for A)
            await a_seen.until("updates", 1)
            await updates_stop(a)
        await py_subscriptions_direct(d_seen, tmp_path / "direct.err", x, y)
    assert set(a_seen.updates) == {y}, a_seen.updates
    assert x in b_seen.updates, b_seen.updates
    assert y not in b_seen.updates, b_seen.updates
    assert d_seen.updates == [x, y]


@pytest.mark.parametrize("sdk", ["v1", "v2"])
def test_item3_typescript_sdk_one_clients_unsubscribe_leaves_the_other_subscribed(
    matrix: Matrix, tmp_path: Path, sdk: str
) -> None:
    """The same scenario with two TS SDK clients in one Node process, and its one-client twin over stdio."""
    names = uris(f"ts3{sdk}")
    through, alone = run_concurrently(
        lambda: node("subscriptions", tmp_path, matrix, sdk=sdk, target=via(matrix, "subs"), uris=names),
        lambda: node("subscriptionsDirect", tmp_path, None, sdk=sdk, target=direct_target(), uris=names),
    )
    x, y = names[:2]
    assert set(through["a"]) == {y}, through
    assert x in through["b"], through
    assert y not in through["b"], through
    assert alone["updates"] == [x, y]


# Item 4: log lines stay with their principal; logging/setLevel is per session.


def subscribed_line(uri: str) -> str:
    """What server-everything logs (info) while it handles resources/subscribe."""
    return f"Received Subscribe Resource request for URI: {uri}"


def lines_about(logs: list[str], names: list[str]) -> list[str]:
    """Which of `names` each log line is about, in order (any other line fails the test)."""
    about = []
    for line in logs:
        matches = [name for name in names if line.strip() == subscribed_line(name)]
        assert len(matches) == 1, (line, logs)
        about.append(matches[0])
    return about


@pytest.mark.parametrize("client", CLIENTS)
async def test_item4_two_principals_on_a_shared_child_each_get_only_their_own_log_lines(
    matrix: Matrix, tmp_path: Path, client: str
) -> None:
    """alice and bob (two named tokens) on one shared child: bob's line during his only call reaches bob, never alice;
    alice's setLevel(error) silences neither bob nor the child (alice's own info line is filtered for her alone);
    directly over stdio the same server logs the same lines."""
    b1, a1, a2, b2 = names = uris(f"{client}-4")
    a_seen, b_seen, d_seen = Seen(), Seen(), Seen()
    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with (
            session_via(client, matrix.url("logs"), matrix.alice, tmp_path / "a", **handlers(a_seen)) as a,
            session_via(client, matrix.url("logs"), matrix.bob, tmp_path / "b", **handlers(b_seen)) as b,
        ):
            await b.set_logging_level("info")
            await a.set_logging_level("error")  # the last to ask: a child told directly would now drop bob's info
            await b.subscribe_resource(b1)
            await b_seen.until("logs", 1)
            await a.subscribe_resource(a1)  # logged at info: below what alice asked for
            await a.set_logging_level("info")
            await a.subscribe_resource(a2)
            await a_seen.until("logs", 1)
            await b.subscribe_resource(b2)
            await b_seen.until("logs", 2)
        async with py_stdio(direct_params(), tmp_path / "direct.err", **handlers(d_seen)) as direct:
            await direct.set_logging_level("error")
            await direct.subscribe_resource(a1)
            await direct.set_logging_level("info")
            await direct.subscribe_resource(a2)
            await d_seen.until("logs", 1)
    assert lines_about(a_seen.logs, names) == [a2]
    assert lines_about(b_seen.logs, names) == [b1, b2]
    assert lines_about(d_seen.logs, names) == [a2]


@pytest.mark.parametrize("sdk", ["v1", "v2"])
def test_item4_typescript_sdk_two_principals_on_a_shared_child_each_get_only_their_own_log_lines(
    matrix: Matrix, tmp_path: Path, sdk: str
) -> None:
    """The same scenario with two TS SDK clients (alice's and bob's tokens), and its one-client twin over stdio."""
    b1, _, a2, b2 = names = uris(f"ts4{sdk}")
    through, alone = run_concurrently(
        lambda: node("logs", tmp_path, matrix, sdk=sdk, target={"url": matrix.url("logs")}, uris=names),
        lambda: node("logsDirect", tmp_path, None, sdk=sdk, target=direct_target(), uris=names),
    )
    assert lines_about(through["a"], names) == [a2], through
    assert lines_about(through["b"], names) == [b1, b2], through
    assert lines_about(alone["logs"], names) == [a2], alone


# Item 6: a per-session child's request reaches a client that never opens the GET stream.

SAMPLED = "reply to Resource trigger-sampling-request context: "
ELICITED = "User inputs:\n- Name: Ada Lovelace"


@pytest.mark.parametrize("client", ["auto", "legacy", "mcp-remote"])
async def test_item6_python_clients_answer_a_per_session_childs_sampling_and_elicitation(
    matrix: Matrix, tmp_path: Path, client: str
) -> None:
    """The Python SDK (auto, 2025-11-25) whose GETs are refused (405) before they leave, so no GET stream exists: the
    child's sampling/createMessage and elicitation/create travel on the stream of the call that caused them.
    mcp-remote (driven by the Python SDK's stdio client) opens a GET stream itself: its cell proves the relay only."""
    refuse = NoGetStream()
    prompt = f"p6-{client}"
    mode = "legacy" if client == "mcp-remote" else client
    version: list[str | None] = []

    async def through() -> dict[str, Any]:
        if client == "mcp-remote":
            params = remote_params(matrix.url("own"), matrix.admin, tmp_path)
            opened = py_stdio(params, tmp_path / "remote.err", **SERVER_REQUEST_CALLBACKS)
        else:
            opened = py_http(matrix.url("own"), matrix.admin, mode, refuse, **SERVER_REQUEST_CALLBACKS)
        async with opened as session:
            version.append(session.protocol_version)
            return await py_server_requests(session, prompt)

    async def alone() -> dict[str, Any]:
        async with py_stdio(direct_params(), tmp_path / "direct.err", mode, **SERVER_REQUEST_CALLBACKS) as session:
            return await py_server_requests(session, prompt)

    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        through_seen, alone_seen = await concurrently(through, alone)
    if client != "mcp-remote" and version != ["2026-07-28"]:  # a session (today's fallback): the SDK wanted a GET
        assert refuse.refused >= 1, "the client never tried a GET: the test proves nothing"
    assert through_seen == alone_seen
    assert SAMPLED + prompt in through_seen["sampling"][0]
    assert ELICITED in through_seen["elicitation"]


@pytest.mark.parametrize("sdk", ["v1", "v2"])
def test_item6_typescript_sdk_without_a_get_stream_answers_sampling_and_elicitation(
    matrix: Matrix, tmp_path: Path, sdk: str
) -> None:
    """The TS SDK client (1.x, v2) whose fetch answers every GET with 405: the child's requests still reach it."""
    prompt = f"p6-{sdk}"
    through, alone = run_concurrently(
        lambda: node(
            "serverRequests", tmp_path, matrix, sdk=sdk, target=via(matrix, "own", refuseGet=True), prompt=prompt
        ),
        lambda: node("serverRequests", tmp_path, None, sdk=sdk, target=direct_target(), prompt=prompt),
    )
    assert through.pop("refusedGets") >= 1, "the client never tried a GET: the test proves nothing"
    assert alone.pop("refusedGets") == 0
    assert through == alone
    assert SAMPLED + prompt in through["sampling"][0]
    assert ELICITED in through["elicitation"]


ROOTS = [{"uri": "file:///matrix/roots", "name": "matrix"}]
ROOTS_LISTED = "Current MCP Roots (1 total):\n\n1. matrix\n   URI: file:///matrix/roots"


async def py_roots_outside_a_call(opened: Callable[..., Any]) -> dict[str, Any]:
    """server-everything asks a client that has roots for them 350 ms after the handshake, outside any call, and logs
    once it stored the answer; wait for that line (bounded by the caller), then read the roots back: the child asks
    no second time."""
    stored = anyio.Event()
    asked: list[int] = []

    async def list_roots(context: object) -> ListRootsResult:
        asked.append(1)
        return ListRootsResult(roots=[Root.model_validate(root) for root in ROOTS])

    async def on_log(params: Any) -> None:
        if str(params.data).startswith("Roots updated"):
            stored.set()

    async with opened(list_roots_callback=list_roots, logging_callback=on_log) as session:
        await stored.wait()
        listed = texts(await session.call_tool("get-roots-list", {}))
    return {"listed": listed, "asked": len(asked)}


async def test_item6_python_sdk_a_childs_request_outside_any_call_travels_on_the_get_stream(
    matrix: Matrix, tmp_path: Path
) -> None:
    """The other half of item 6: a per-session child's roots/list sent while no call is in flight reaches the client
    on its GET stream (and the child's log line after it); the roots it answered are the ones the child later
    lists, as directly over stdio."""

    def through(**options: Any) -> Any:
        return py_http(matrix.url("own"), matrix.admin, "legacy", **options)

    def alone(**options: Any) -> Any:
        return py_stdio(direct_params(), tmp_path / "direct.err", **options)

    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        seen, seen_alone = await concurrently(
            lambda: py_roots_outside_a_call(through), lambda: py_roots_outside_a_call(alone)
        )
    assert seen == seen_alone
    assert seen["asked"] == 1, seen
    assert seen["listed"][0].startswith(ROOTS_LISTED), seen


@pytest.mark.parametrize("sdk", ["v1", "v2"])
def test_item6_typescript_sdk_a_childs_request_outside_any_call_travels_on_the_get_stream(
    matrix: Matrix, tmp_path: Path, sdk: str
) -> None:
    """The same with the TS SDK client (1.x, v2) and its roots/list handler."""
    through, alone = run_concurrently(
        lambda: node("rootsOutsideACall", tmp_path, matrix, sdk=sdk, target=via(matrix, "own"), roots=ROOTS),
        lambda: node("rootsOutsideACall", tmp_path, None, sdk=sdk, target=direct_target(), roots=ROOTS),
    )
    assert through == alone
    assert through["asked"] == 1
    assert through["listed"][0].startswith(ROOTS_LISTED)


# Item 7: a Streamable client whose connection drops mid-call resumes with Last-Event-ID.


class DropAfterProgress(RecordingProxy):
    """Relays like RecordingProxy, but cuts the first connection whose answer carries a progress event right after
    relaying it: a network drop in the middle of a call, after the client has seen an event id."""

    def __init__(self, upstream_port: int) -> None:
        self.dropped = threading.Event()
        self._drop_lock = threading.Lock()
        super().__init__(upstream_port)

    def _first_progress(self, data: bytes) -> bool:
        with self._drop_lock:
            if b"notifications/progress" not in data or self.dropped.is_set():
                return False
            self.dropped.set()
            return True

    def _pump(self, source: socket.socket, target: socket.socket, record: bytearray | None) -> None:
        if record is not None:  # client -> gateway: recorded and relayed as is
            super()._pump(source, target, record)
            return
        try:
            while data := source.recv(65536):
                target.sendall(data)
                if self._first_progress(data):
                    break
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def resumed(self) -> list[str]:
        """The Last-Event-ID of each GET the client sent to resume."""
        return [
            r.headers["last-event-id"] for r in self.requests() if r.method == "GET" and "last-event-id" in r.headers
        ]


@contextmanager
def dropping_proxy(matrix: Matrix) -> Iterator[DropAfterProgress]:
    with DropAfterProgress(urlsplit(matrix.gateway.url).port or 0) as proxy:
        yield proxy
    assert proxy.dropped.is_set(), "no progress event crossed the proxy: nothing was dropped"
    assert proxy.resumed(), "the client never resumed with Last-Event-ID"


@pytest.mark.parametrize("client", CLIENTS)
async def test_item7_resumes_a_dropped_call_with_last_event_id(matrix: Matrix, tmp_path: Path, client: str) -> None:
    """The connection carrying a long call's SSE answer drops after its first progress event; the client (the Python
    SDK, or mcp-remote's own HTTP client) reconnects with GET + Last-Event-ID and gets the rest of the progress and
    the answer, as the same call over stdio."""
    found: dict[str, Any] = {}

    async def through(url: str) -> None:
        async with session_via(client, url, matrix.admin, tmp_path) as session:
            found["through"] = await py_progress(session, LONG_ARGS)

    async def alone() -> None:
        async with py_stdio(direct_params(), tmp_path / "direct.err") as session:
            found["alone"] = await py_progress(session, LONG_ARGS)

    with dropping_proxy(matrix) as proxy, anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(through, f"{proxy.url}/mcp/resume")
            tasks.start_soon(alone)
    check_long_run(found["through"])
    assert found["through"] == found["alone"]


@pytest.mark.parametrize("sdk", ["v1", "v2"])
def test_item7_typescript_sdk_resumes_a_dropped_call_with_last_event_id(
    matrix: Matrix, tmp_path: Path, sdk: str
) -> None:
    """The TS SDK client (1.x, v2) reconnects a dropped POST stream with GET + Last-Event-ID on its own."""
    with dropping_proxy(matrix) as proxy:
        target = {"url": f"{proxy.url}/mcp/resume", "auth": "ADMIN"}
        through, alone = run_concurrently(
            lambda: node("progress", tmp_path, matrix, sdk=sdk, target=target, args=LONG_ARGS),
            lambda: node("progress", tmp_path, None, sdk=sdk, target=direct_target(), args=LONG_ARGS),
        )
    check_long_run(through)
    check_long_run(alone)
    assert through["text"] == alone["text"]


# Item 8: `mcp-bastion connect URL` as the stdio server of real third-party clients.


def connect_command(matrix: Matrix, server: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "mcp_bastion", "connect", matrix.url(server), *flags]


@pytest.mark.parametrize("sdk", ["v1", "v2"])
def test_item8_typescript_sdk_stdio_client_through_connect_gets_progress_sampling_and_elicitation(
    matrix: Matrix, tmp_path: Path, sdk: str
) -> None:
    """The TS SDK's stdio client launches `connect URL` (token in its environment) for a per-session server: a long
    call reports its progress, and the child's sampling and elicitation are answered, as directly over stdio."""
    prompt = f"p8-{sdk}"
    shim = {"command": connect_command(matrix, "own"), "envFrom": ["MCP_BASTION_TOKEN"]}
    through, alone = run_concurrently(
        lambda: node(
            "progressAndServerRequests", tmp_path, matrix, sdk=sdk, target=shim, args=LONG_ARGS, prompt=prompt
        ),
        lambda: node(
            "progressAndServerRequests", tmp_path, None, sdk=sdk, target=direct_target(), args=LONG_ARGS, prompt=prompt
        ),
    )
    check_long_run(through["long"])
    check_long_run(alone["long"])
    assert through["long"]["text"] == alone["long"]["text"]
    assert through["asked"] == alone["asked"]
    assert SAMPLED + prompt in through["asked"]["sampling"][0]
    assert ELICITED in through["asked"]["elicitation"]


def test_item8_inspector_cli_launches_connect_as_its_stdio_server(matrix: Matrix, tmp_path: Path) -> None:
    """The Inspector CLI (stdio transport) runs `connect URL --token-file F` (0600): a long call with a progress token
    lives past the server's idle timeout and answers as server-everything does directly over stdio; no token on
    any command line."""
    secret = tmp_path / "gateway.token"
    secret.write_text(matrix.admin + "\n", encoding="utf-8")
    secret.chmod(0o600)
    shim = connect_command(matrix, "long", "--token-file", str(secret))
    long_call = [*LONG_CALL, "--tool-metadata", "progressToken=p8"]
    called, called_alone = run_concurrently(
        lambda: inspector(tmp_path, *shim, *long_call),
        lambda: inspector(tmp_path, *everything_stdio(), *long_call),
    )
    assert called == called_alone
    assert called["content"][0]["text"].startswith("Long running operation completed. Duration: 1.2 seconds")
