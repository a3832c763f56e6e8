"""isolation: per-session gives each session its own child, reaps it with the session, and routes its requests."""

import json
from pathlib import Path

import anyio
import httpx2
import psutil
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CreateMessageRequestParams, CreateMessageResult, TextContent

from tests.harness import run_gateway, spec, wait_until
from tests.transports.wire import http_client, open_legacy, recorder, session_headers, text_of, tool_call

pytestmark = pytest.mark.anyio


def alive(pid: int) -> bool:
    """Running and not yet reaped (a zombie counts as not alive, but see `reaped`)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def reaped(pid: int) -> bool:
    """Gone from the process table: exited and waited for by its parent."""
    return not psutil.pid_exists(pid)


async def test_two_sessions_get_two_children_and_delete_reaps_only_its_own(tmp_path: Path) -> None:
    log = tmp_path / "recorder.jsonl"
    with run_gateway([recorder("own", log, isolation="per-session")], tmp_path) as gateway:
        url = gateway.mcp("own")
        async with http_client() as client:
            first = await open_legacy(client, url)
            second = await open_legacy(client, url)

            async def pid_of(session: str, request_id: int) -> int:
                answer = await client.post(url, json=tool_call(request_id, "pid"), headers=session_headers(session))
                return int(text_of(answer.json()))

            pid_1, pid_2 = await pid_of(first, 1), await pid_of(second, 1)
            assert pid_1 != pid_2
            assert alive(pid_1)
            assert alive(pid_2)
            assert gateway.health()["servers"]["own"]["sessions"] == 2

            deleted = await client.delete(url, headers={"Mcp-Session-Id": first})
            assert deleted.status_code == 200
            wait_until(lambda: reaped(pid_1), timeout=10)
            assert alive(pid_2)
            assert await pid_of(second, 2) == pid_2
            gone = await client.post(url, json=tool_call(3, "pid"), headers=session_headers(first))
            assert gone.status_code == 404
            assert gateway.health()["servers"]["own"]["sessions"] == 1


async def test_a_childs_sampling_request_reaches_the_sdk_clients_callback_and_its_answer_returns(
    tmp_path: Path,
) -> None:
    """toolbox `sample` asks sampling/createMessage; the SDK client's callback answers; the tool returns that answer."""
    prompts: list[str] = []

    async def sampling(context: object, params: CreateMessageRequestParams) -> CreateMessageResult:
        content = params.messages[0].content
        assert isinstance(content, TextContent)
        prompts.append(content.text)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=f"reply to {content.text}"), model="test-model"
        )

    with run_gateway([spec("isolated", isolation="per-session")], tmp_path) as gateway:
        with anyio.fail_after(20):
            async with (
                httpx2.AsyncClient(timeout=10) as http,
                Client(
                    streamable_http_client(gateway.mcp("isolated"), http_client=http),
                    mode="legacy",
                    sampling_callback=sampling,
                ) as client,
            ):
                answer = await client.call_tool("sample", {"prompt": "unique-prompt-41"})
        assert prompts == ["unique-prompt-41"]
        returned = json.loads(answer.content[0].text)
        assert returned["model"] == "test-model"
        assert returned["content"]["text"] == "reply to unique-prompt-41"
