"""Per-session servers on 2026-07-28 (Issue 11 item 5): the child's client requests as multi-round-trip requests.

A stateless request to a per-session server gets its own child; when that child asks its client (sampling,
elicitation, roots), the gateway answers the request with an `InputRequiredResult` and keeps the call (and the child)
for the retry that carries `inputResponses` and the sealed `requestState`. Most tests run in process against the
ASGI app (its lifespan run by hand) with the conformance fixture child; the last ones drive the official SDK client.
"""

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ListRootsResult,
    Root,
    TextContent,
)

from mcp_bastion.app import BastionApp, create_app
from mcp_bastion.config import Settings
from mcp_bastion.errors import INVALID_PARAMS, QUOTA_EXCEEDED, SERVER_UNAVAILABLE
from mcp_bastion.relay.input_states import REQUEST_STATE_PURPOSE, instance_of, principal_tag
from mcp_bastion.sealing import Sealer
from mcp_bastion.security import token_hash
from mcp_bastion.store import TokenRecord
from tests.harness import FIXTURES, TOOLBOX, run_gateway, spec
from tests.interop.conftest import tool
from tests.transports.wire import modern_headers, modern_request

pytestmark = pytest.mark.anyio
CHILD = [sys.executable, str(FIXTURES / "conformance_child.py")]
CAPABILITIES = {"sampling": {}, "elicitation": {}, "roots": {}}
CLIENT_IP = ("127.0.0.1", 50000)
STEP_S = 20.0  # one test's bound: a child starts in well under a second


@contextlib.asynccontextmanager
async def running(app: BastionApp) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan, run by hand, and an httpx client speaking to it in process."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        transport = httpx.ASGITransport(app=app, client=CLIENT_IP)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=STEP_S) as http:
            yield http
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


def settings(tmp_path: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "insecure_no_auth": True,
        "store_url": "memory://",
        "audit_log": tmp_path / "logs" / "audit.jsonl",
        "security_log": tmp_path / "logs" / "audit.jsonl",
        "log_dir": tmp_path / "logs",
        **extra,
    }
    return Settings(host="127.0.0.1", port=3001, **values)


def gateway(tmp_path: Path, *names: str, sealer: Sealer | None = None, **extra: Any) -> BastionApp:
    servers = {name: spec(name, CHILD, isolation="per-session") for name in names or ("own",)}
    instance = extra.pop("instance", None)
    return create_app(settings(tmp_path, **extra), servers, sealer=sealer, instance_id=instance)


async def call(
    http: httpx.AsyncClient,
    tool: str,
    *,
    server: str = "own",
    state: str | None = None,
    responses: dict[str, Any] | None = None,
    capabilities: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    request_id: int = 1,
) -> httpx.Response:
    params: dict[str, Any] = {"name": tool, "arguments": {}}
    if state is not None:
        params["requestState"] = state
    if responses is not None:
        params["inputResponses"] = responses
    meta = {"io.modelcontextprotocol/clientCapabilities": CAPABILITIES if capabilities is None else capabilities}
    body = modern_request(request_id, "tools/call", params, **meta)
    return await http.post(
        f"/mcp/{server}", json=body, headers={**modern_headers("tools/call", tool), **(headers or {})}
    )


def input_required(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    value = response.json()["result"]
    assert value["resultType"] == "input_required", value
    assert isinstance(value["requestState"], str)
    return dict(value)


def text_of(response: httpx.Response, request_id: int = 2) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == request_id
    assert body["result"]["resultType"] == "complete", body
    return str(body["result"]["content"][0]["text"])


def refused(response: httpx.Response, reason: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    failure = response.json()["error"]
    assert failure["code"] == INVALID_PARAMS
    assert failure["message"].startswith("invalid requestState")
    assert failure["data"]["reason"] == reason
    return dict(failure)


def audited(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    path = tmp_path / "logs" / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [entry for entry in map(json.loads, lines) if entry["event"] == event]


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll with a bound (never a bare sleep to wait)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def accept(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


async def test_sampling_elicitation_and_roots_each_take_one_round_and_the_child_goes_with_the_answer(
    tmp_path: Path,
) -> None:
    app = gateway(tmp_path)
    asks = [
        ("test_input_required_result_sampling", "capital_question", "sampling/createMessage"),
        ("test_input_required_result_elicitation", "user_name", "elicitation/create"),
        ("test_input_required_result_list_roots", "client_roots", "roots/list"),
    ]
    answers = {
        "capital_question": {"role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "m"},
        "user_name": accept(name="Alice"),
        "client_roots": {"roots": [{"uri": "file:///work", "name": "work"}]},
    }
    texts = []
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            for tool, key, method in asks:
                first = input_required(await call(http, tool))
                assert list(first["inputRequests"]) == [key]
                assert first["inputRequests"][key]["method"] == method
                assert "ttlMs" not in first  # not a result to cache
                assert len(app.gateway.sessions) == 1  # the call waits on its own child
                retry = await call(http, tool, state=first["requestState"], responses={key: answers[key]}, request_id=2)
                texts.append(text_of(retry))
                await until(lambda: not app.gateway.sessions)
    assert texts == ["Sampling said: Paris", "Hello, Alice!", "Roots: file:///work"]
    calls = [line for line in audited(tmp_path, "mcp.call") if line.get("method") == "tools/call"]
    assert [line["outcome"] for line in calls] == ["ok", "ok", "ok"]


async def test_a_multi_round_call_gets_a_new_state_each_round_and_an_answered_state_is_refused_as_replayed(
    tmp_path: Path,
) -> None:
    app = gateway(tmp_path)
    tool = "test_input_required_result_multi_round"
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            first = input_required(await call(http, tool))
            second = input_required(
                await call(http, tool, state=first["requestState"], responses={"step1": accept(name="Ann")})
            )
            assert list(second["inputRequests"]) == ["step2"]
            assert second["requestState"] != first["requestState"]
            replayed = await call(http, tool, state=first["requestState"], responses={"step1": accept(name="Eve")})
            refused(replayed, "replayed")
            done = await call(
                http, tool, state=second["requestState"], responses={"step2": accept(color="blue")}, request_id=2
            )
            assert text_of(done) == "Ann likes blue"
            again = await call(http, tool, state=second["requestState"], responses={"step2": accept(color="red")})
            refused(again, "replayed")
    lines = audited(tmp_path, "session.request_state")
    assert [(line["reason"], line["outcome"], line["server"]) for line in lines] == [
        ("replayed", "denied", "own"),
        ("replayed", "denied", "own"),
    ]


async def test_a_tampered_state_is_refused_and_audited_and_the_real_one_still_works(tmp_path: Path) -> None:
    app = gateway(tmp_path)
    tool = "test_input_required_result_elicitation"
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            first = input_required(await call(http, tool))
            body, mac = first["requestState"].split(".")
            forged = await call(http, tool, state=f"{body}.{mac[::-1]}", responses={"user_name": accept(name="X")})
            refused(forged, "forged")
            garbage = await call(http, tool, state="not-a-state", responses={"user_name": accept(name="X")})
            refused(garbage, "forged")
            real = await call(
                http, tool, state=first["requestState"], responses={"user_name": accept(name="Bo")}, request_id=2
            )
            assert text_of(real) == "Hello, Bo!"
    assert [line["reason"] for line in audited(tmp_path, "session.request_state")] == ["forged", "forged"]


async def test_an_expired_state_is_refused(tmp_path: Path) -> None:
    sealer = Sealer()
    app = gateway(tmp_path, sealer=sealer, instance="i-1")
    payload = {
        "id": "x",
        "server": "own",
        "principal": principal_tag(sealer, None),
        "method": "tools/call",
        "instance": "i-1",
    }
    stale = sealer.seal(REQUEST_STATE_PURPOSE, payload, now=time.time() - 1000, ttl_s=60)
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            response = await call(http, "test_input_required_result_elicitation", state=stale, responses={})
    refused(response, "expired")
    assert [line["reason"] for line in audited(tmp_path, "session.request_state")] == ["expired"]


async def test_a_client_that_never_comes_back_leaves_no_child_after_the_state_ttl(tmp_path: Path) -> None:
    app = gateway(tmp_path)
    app.modern.states.ttl_s = 0.3
    tool = "test_input_required_result_elicitation"
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            first = input_required(await call(http, tool))
            assert len(app.gateway.sessions) == 1
            await until(lambda: not app.gateway.sessions and not app.modern.states.parked)
            late = await call(http, tool, state=first["requestState"], responses={"user_name": accept(name="Z")})
    refused(late, "expired")  # the seal expires with the state
    expired = audited(tmp_path, "session.expired")
    assert [(line["kind"], line["server"]) for line in expired] == [("input", "own")]


async def test_a_state_is_bound_to_its_server_and_its_request(tmp_path: Path) -> None:
    app = gateway(tmp_path, "own", "other")
    tool = "test_input_required_result_elicitation"
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            first = input_required(await call(http, tool))
            state = first["requestState"]
            refused(await call(http, tool, server="other", state=state, responses={}), "other-server")
            refused(await call(http, "test_input_required_result_sampling", state=state, responses={}), "other-request")
            done = await call(http, tool, state=state, responses={"user_name": accept(name="Cy")}, request_id=2)
            assert text_of(done) == "Hello, Cy!"
    assert [line["reason"] for line in audited(tmp_path, "session.request_state")] == ["other-server", "other-request"]


async def test_a_state_is_bound_to_its_principal(tmp_path: Path) -> None:
    admin = "adm-" + secrets.token_urlsafe(36)
    app = gateway(tmp_path, insecure_no_auth=False, auth_token=admin)
    other = "tok-" + secrets.token_urlsafe(32)
    await app.store.create_token(TokenRecord("ops", token_hash(other), ("admin",), time.time(), None))
    tool = "test_input_required_result_elicitation"
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            mine = {"Authorization": f"Bearer {admin}"}
            first = input_required(await call(http, tool, headers=mine))
            stolen = await call(
                http,
                tool,
                state=first["requestState"],
                responses={"user_name": accept(name="Mallory")},
                headers={"Authorization": f"Bearer {other}"},
            )
            refused(stolen, "other-principal")
            done = await call(
                http,
                tool,
                state=first["requestState"],
                responses={"user_name": accept(name="Al")},
                headers=mine,
                request_id=2,
            )
            assert text_of(done) == "Hello, Al!"
    lines = audited(tmp_path, "session.request_state")
    assert [(line["reason"], line["principal"]) for line in lines] == [("other-principal", "ops")]
    assert all(admin not in json.dumps(line) and other not in json.dumps(line) for line in lines)


async def test_a_state_from_another_instance_names_the_instance_that_holds_the_call(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(32)
    first_app = gateway(tmp_path / "a", sealer=Sealer.from_secret(secret), instance="node-a")
    second_app = gateway(tmp_path / "b", sealer=Sealer.from_secret(secret), instance="node-b")
    tool = "test_input_required_result_elicitation"
    with anyio.fail_after(STEP_S):
        async with running(first_app) as node_a, running(second_app) as node_b:
            first = input_required(await call(node_a, tool))
            elsewhere = await call(node_b, tool, state=first["requestState"], responses={"user_name": accept(name="Q")})
            failure = refused(elsewhere, "other-instance")
            assert failure["data"]["instance"] == "node-a"
            assert instance_of(Sealer.from_secret(secret), first["requestState"], now=time.time()) == "node-a"
            assert instance_of(Sealer(), first["requestState"], now=time.time()) is None  # another key: unread
            assert "node-a" in failure["message"]
            done = await call(
                node_a, tool, state=first["requestState"], responses={"user_name": accept(name="Q")}, request_id=2
            )
            assert text_of(done) == "Hello, Q!"


async def test_parked_calls_are_capped_per_principal_and_the_refused_call_leaves_no_child(tmp_path: Path) -> None:
    app = gateway(tmp_path)
    app.modern.states.per_principal = 1
    tool = "test_input_required_result_elicitation"
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            input_required(await call(http, tool))
            over = await call(http, tool)
            assert over.status_code == 200, over.text
            failure = over.json()["error"]
            assert failure["code"] == QUOTA_EXCEEDED
            assert failure["data"]["quota"] == "input_states"
            await until(lambda: len(app.gateway.sessions) == 1)  # the parked one only
    assert [line["quota"] for line in audited(tmp_path, "quota.exceeded")] == ["input_states"]


async def test_a_child_never_asks_for_what_the_client_did_not_declare(tmp_path: Path) -> None:
    """The child's elicitation reaches a client without the capability as an error at the child, not as a round."""
    app = gateway(tmp_path)
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            answer = await call(http, "test_input_required_result_elicitation", capabilities={}, request_id=2)
            assert text_of(answer) == "Hello, None!"
            await until(lambda: not app.gateway.sessions)


async def test_answers_sent_up_front_are_used_and_bad_ones_are_refused(tmp_path: Path) -> None:
    app = gateway(tmp_path)
    tool = "test_input_required_result_elicitation"
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            seeded = await call(http, tool, responses={"user_name": accept(name="Di"), "extra": {}}, request_id=2)
            assert text_of(seeded) == "Hello, Di!"
            bad = await call(http, tool, responses={"user_name": 12345})
            assert bad.status_code == 400
            assert bad.json()["error"]["code"] == INVALID_PARAMS
            await until(lambda: not app.gateway.sessions)


async def test_a_parked_call_whose_child_dies_is_answered_with_the_error_on_retry(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path), {"box": spec("box", TOOLBOX, isolation="per-session")})
    with anyio.fail_after(STEP_S):
        async with running(app) as http:
            first = input_required(await call(http, "sample", server="box"))
            (session,) = app.gateway.sessions.values()
            child = session.backend.child
            assert child is not None
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            await until(lambda: session.backend.child is None)
            (key,) = first["inputRequests"]
            retry = await call(
                http, "sample", server="box", state=first["requestState"], responses={key: {}}, request_id=2
            )
            assert retry.status_code == 200, retry.text
            assert retry.json()["id"] == 2
            assert retry.json()["error"]["code"] == SERVER_UNAVAILABLE
            await until(lambda: not app.gateway.sessions and not app.modern.states.parked)


async def test_a_client_that_disconnects_mid_call_cancels_it_and_its_child_goes(tmp_path: Path) -> None:
    """Closing the connection is cancellation on 2026-07-28, for a per-session call too; nothing is left behind."""
    with run_gateway([spec("box", TOOLBOX, isolation="per-session")], tmp_path) as running_gateway:
        body = modern_request(1, "tools/call", {"name": "slow", "arguments": {"steps": 100, "seconds": 0.1}})
        async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(running_gateway.mcp("box"), json=body, headers=modern_headers("tools/call", "slow"))
        await until(lambda: not running_gateway.app.gateway.sessions)
    cancelled = [f for e, f in running_gateway.events if e == "server.stop" and f.get("isolation") == "per-session"]
    assert len(cancelled) == 1


# --- the official SDK client (2.x) in 2026-07-28 mode, through the gateway and directly over stdio -------------


async def sampling(context: object, params: CreateMessageRequestParams) -> CreateMessageResult:
    content = params.messages[0].content
    assert isinstance(content, TextContent)
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"re {content.text}"), model="m")


async def elicitation(context: object, params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="accept", content={"name": "Sam"})


async def roots(context: object) -> ListRootsResult:
    return ListRootsResult(roots=[Root(uri="file:///work", name="work")])


async def ask_both(transport: Any, mode: str) -> tuple[list[str], str | None]:
    callbacks: dict[str, Any] = {
        "sampling_callback": sampling,
        "elicitation_callback": elicitation,
        "list_roots_callback": roots,
    }
    async with Client(transport, mode=mode, **callbacks) as client:
        texts = []
        for tool in (
            "test_input_required_result_sampling",
            "test_input_required_result_elicitation",
            "test_input_required_result_list_roots",
        ):
            result = await client.call_tool(tool, {})
            block = result.content[0]
            assert isinstance(block, TextContent)
            texts.append(block.text)
        return texts, client.session.protocol_version


async def test_the_sdk_client_pinned_to_2026_07_28_gets_sampling_elicitation_and_roots_as_over_stdio(
    tmp_path: Path,
) -> None:
    """Issue 11 item 5's proof: the same tools, the same answers, directly (handshake) and through the gateway."""
    with anyio.fail_after(60):
        params = StdioServerParameters(command=CHILD[0], args=CHILD[1:])
        with (tmp_path / "stderr.log").open("w") as sink:
            direct, _ = await ask_both(stdio_client(params, errlog=sink), "auto")
        with run_gateway([spec("own", CHILD, isolation="per-session")], tmp_path) as running_gateway:
            async with httpx2.AsyncClient() as http:  # the SDK leaves a client it was given open
                relayed, version = await ask_both(
                    streamable_http_client(running_gateway.mcp("own"), http_client=http), "2026-07-28"
                )
            await until(lambda: not running_gateway.app.gateway.sessions)
    assert (
        direct == relayed == ["Sampling said: re What is the capital of France?", "Hello, Sam!", "Roots: file:///work"]
    )
    assert version == "2026-07-28"


# --- the TypeScript v2 client in 2026-07-28 mode (version negotiation) on server-everything -------------------------

MATRIX_CLIENT = FIXTURES.parent / "interop" / "clients" / "matrix_client.cjs"


async def ts_v2_server_requests(tmp_path: Path, target: dict[str, Any]) -> dict[str, Any]:
    """The v2 client's serverRequests scenario (server-everything's sampling and elicitation tools)."""
    config = {"sdk": "v2", "negotiation": "auto", "target": target, "prompt": "p-11-5-ts"}
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    env["NODE_PATH"] = str(FIXTURES.parent.parent / ".tools" / "node_modules")
    done = await anyio.run_process(
        [tool("node22"), str(MATRIX_CLIENT), "serverRequests", json.dumps(config)], env=env, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    return dict(json.loads(done.stdout))


@pytest.mark.interop
async def test_the_typescript_v2_client_in_2026_07_28_mode_answers_a_per_session_childs_requests(
    tmp_path: Path,
) -> None:
    """Issue 11 item 5 with the TS v2 client: server-everything's sampling and elicitation through the gateway's
    InputRequiredResults equal what the same client gets directly over stdio."""
    everything = [tool("mcp-server-everything"), "stdio"]
    with anyio.fail_after(90):
        with run_gateway([spec("own", everything, isolation="per-session")], tmp_path) as running_gateway:
            target = {"url": running_gateway.mcp("own"), "auth": None, "refuseGet": False}
            through = await ts_v2_server_requests(tmp_path, target)
            await until(lambda: not running_gateway.app.gateway.sessions)
            children = [f for e, f in running_gateway.events if e == "server.start"]
        alone = await ts_v2_server_requests(tmp_path, {"command": everything})
    assert through == alone
    assert "reply to Resource trigger-sampling-request context: p-11-5-ts" in through["sampling"][0]
    assert "User inputs:\n- Name: Ada Lovelace" in through["elicitation"]
    assert len(children) >= 3  # a child per stateless request (discover, then each call): the 2026-07-28 path
