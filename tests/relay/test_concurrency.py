"""Many clients numbering their requests 1, 2, 3 ... at once each get exactly their own answers."""

from pathlib import Path

import anyio
import httpx
import pytest

from tests.harness import run_gateway, spec
from tests.transports.wire import (
    http_client,
    open_legacy,
    session_headers,
    sse_initialize,
    sse_session,
    text_of,
    tool_call,
)

pytestmark = pytest.mark.anyio

CLIENTS = 50
REQUESTS_EACH = 5


async def test_fifty_streamable_clients_with_the_same_ids_each_get_their_own_answers(tmp_path: Path) -> None:
    """50 sessions each send ids 1..5 concurrently; every answer carries the client's id and the client's text."""
    with run_gateway([spec("toolbox")], tmp_path) as gateway:
        url = gateway.mcp("toolbox")
        answers: dict[tuple[int, int], dict[str, object]] = {}

        async def one_request(client: httpx.AsyncClient, session: str, c: int, i: int) -> None:
            body = tool_call(i, "echo", {"text": f"client-{c}-request-{i}"})
            response = await client.post(url, json=body, headers=session_headers(session))
            assert response.status_code == 200, response.text
            answers[(c, i)] = response.json()

        async def one_client(c: int) -> None:
            async with http_client() as client:
                session = await open_legacy(client, url)
                async with anyio.create_task_group() as group:
                    for i in range(1, REQUESTS_EACH + 1):
                        group.start_soon(one_request, client, session, c, i)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for c in range(CLIENTS):
                    group.start_soon(one_client, c)

        assert len(answers) == CLIENTS * REQUESTS_EACH
        for (c, i), answer in answers.items():
            assert answer["id"] == i
            assert text_of(answer) == f"client-{c}-request-{i}"
        assert gateway.health()["servers"]["toolbox"]["pending"] == 0


async def test_twenty_sse_clients_with_the_same_ids_each_get_their_own_answers_on_their_own_stream(
    tmp_path: Path,
) -> None:
    """On HTTP+SSE the answers travel on each client's stream: each stream carries exactly its client's answers."""
    sse_clients = 20
    with run_gateway([spec("toolbox")], tmp_path) as gateway:
        seen: dict[int, list[dict[str, object]]] = {}

        async def one_client(c: int) -> None:
            async with (
                http_client() as client,
                sse_session(client, gateway.url, "toolbox") as (
                    reader,
                    messages,
                ),
            ):
                await sse_initialize(client, reader, messages)
                async with anyio.create_task_group() as group:
                    for i in range(1, REQUESTS_EACH + 1):
                        body = tool_call(i, "echo", {"text": f"sse-{c}-request-{i}"})
                        group.start_soon(post_accepted, client, messages, body)
                seen[c] = [await reader.message() for _ in range(REQUESTS_EACH)]

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for c in range(sse_clients):
                    group.start_soon(one_client, c)

        assert len(seen) == sse_clients
        for c, answers in seen.items():
            by_id = {answer["id"]: answer for answer in answers}
            assert sorted(by_id) == list(range(1, REQUESTS_EACH + 1))
            for i, answer in by_id.items():
                assert text_of(answer) == f"sse-{c}-request-{i}"


async def post_accepted(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> None:
    response = await client.post(url, json=body)
    assert response.status_code == 202, response.text
