"""A child's list_changed reaches every connected client of that server, and no client of another server."""

import json
from pathlib import Path

import anyio
import pytest

from tests.harness import run_gateway, spec
from tests.transports.wire import (
    SseReader,
    http_client,
    open_legacy,
    recorder,
    session_headers,
    sse_initialize,
    sse_session,
    text_of,
    tool_call,
)

pytestmark = pytest.mark.anyio

LIST_CHANGED = "notifications/tools/list_changed"


def method_of(message: dict[str, object]) -> object:
    return message.get("method")


async def test_list_changed_reaches_every_client_of_the_server_and_none_of_another(tmp_path: Path) -> None:
    """toolbox: two SSE sessions and one Streamable GET stream all get it; other: its SSE and GET streams do not.

    For `other`, a marker log message sent after toolbox's notification must be the first thing its streams see
    (`other` shares its logs with every session, Issue 11 item 4: by default a line goes to its caller only).
    """
    other = recorder("other", tmp_path / "other.jsonl", shareLogs=True)
    with run_gateway([spec("toolbox"), other], tmp_path) as gateway:
        async with (
            http_client() as client,
            sse_session(client, gateway.url, "toolbox") as (sse_1, messages_1),
            sse_session(client, gateway.url, "toolbox") as (sse_2, messages_2),
            sse_session(client, gateway.url, "other") as (other_sse, other_messages),
        ):
            for reader, messages in ((sse_1, messages_1), (sse_2, messages_2), (other_sse, other_messages)):
                await sse_initialize(client, reader, messages)
            toolbox_session = await open_legacy(client, gateway.mcp("toolbox"))
            other_session = await open_legacy(client, gateway.mcp("other"))
            get_headers = {"Accept": "text/event-stream"}
            async with (
                client.stream(
                    "GET", gateway.mcp("toolbox"), headers={**get_headers, "Mcp-Session-Id": toolbox_session}
                ) as toolbox_get,
                client.stream(
                    "GET", gateway.mcp("other"), headers={**get_headers, "Mcp-Session-Id": other_session}
                ) as other_get,
            ):
                assert toolbox_get.status_code == 200
                assert other_get.status_code == 200
                call = await client.post(
                    gateway.mcp("toolbox"), json=tool_call(1, "notify"), headers=session_headers(toolbox_session)
                )
                assert text_of(call.json()) == "notified"

                with anyio.fail_after(10):
                    for reader in (sse_1, sse_2, SseReader(toolbox_get)):
                        note = await reader.message()
                        assert method_of(note) == LIST_CHANGED

                marker = {"marker": "after-toolbox-notified"}
                call = await client.post(
                    gateway.mcp("other"), json=tool_call(1, "log", marker), headers=session_headers(other_session)
                )
                assert text_of(call.json()) == "logged"
                with anyio.fail_after(10):
                    for reader in (other_sse, SseReader(other_get)):
                        first = await reader.message()
                        assert method_of(first) == "notifications/message", json.dumps(first)
                        assert first["params"]["data"] == marker  # type: ignore[index]
