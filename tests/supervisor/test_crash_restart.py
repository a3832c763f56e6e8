"""A child that dies: its pending calls fail at once, it restarts with backoff, a crash loop ends in `failed`."""

import time
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_bastion.errors import SERVER_UNAVAILABLE
from tests.harness import run_gateway, spec
from tests.supervisor.client import eventually, sdk_client, server_view, until_running

pytestmark = pytest.mark.anyio

HANGING_CALLS = 3
REQUEST_TIMEOUT_S = 30.0
FAIL_FAST_S = 1.0


async def call_expecting_error(client: Client, tool: str, ends: list[tuple[float, MCPError]]) -> None:
    try:
        await client.call_tool(tool, {})
    except MCPError as exc:
        ends.append((time.monotonic(), exc))
    else:
        raise AssertionError(f"{tool} answered; it should have failed")


async def test_a_crash_fails_every_pending_call_within_a_second_then_the_server_restarts(tmp_path: Path) -> None:
    with run_gateway(
        [spec("toolbox")], tmp_path, restart_backoff_initial_s=0.05, request_timeout_s=REQUEST_TIMEOUT_S
    ) as gateway:
        ends: list[tuple[float, MCPError]] = []
        with anyio.fail_after(20):
            async with sdk_client(gateway, "toolbox") as client, httpx.AsyncClient(timeout=5) as http:
                first_pid = (await server_view(http, gateway, "toolbox"))["pid"]
                async with anyio.create_task_group() as group:
                    for _ in range(HANGING_CALLS):
                        group.start_soon(call_expecting_error, client, "hang", ends)

                    async def all_pending() -> bool:
                        return (await server_view(http, gateway, "toolbox"))["pending"] == HANGING_CALLS

                    await eventually(all_pending)
                    crashed_at = time.monotonic()
                    group.start_soon(call_expecting_error, client, "crash", ends)
                new_pid = await until_running(http, gateway, "toolbox", not_pid=first_pid)
                view = await server_view(http, gateway, "toolbox")
                again = await client.call_tool("echo", {"text": "back"})
        events = [(name, fields) for name, fields in gateway.events if name in ("server.crash", "server.restart")]

    assert len(ends) == HANGING_CALLS + 1
    for ended_at, exc in ends:
        assert ended_at - crashed_at < FAIL_FAST_S, f"a pending call took {ended_at - crashed_at:.2f} s to fail"
        assert exc.code == SERVER_UNAVAILABLE
        assert exc.message == "server 'toolbox' stopped before answering (exited with code 3)"
    assert new_pid != first_pid
    assert (view["state"], view["restarts"], view["pending"]) == ("running", 1, 0)
    assert view["last_error"] is None  # Issue 9 item 5: cleared by the successful initialize of the new child
    assert again.content[0].text == "back"
    assert events == [
        ("server.crash", {"server": "toolbox", "reason": "exited with code 3", "attempt": 1}),
        ("server.restart", {"server": "toolbox", "reason": "crash", "attempt": 1}),
    ]


async def test_a_child_that_exits_right_after_answering_delivers_its_answer(tmp_path: Path) -> None:
    with run_gateway([spec("toolbox")], tmp_path, restart_backoff_initial_s=0.05) as gateway:
        with anyio.fail_after(20):
            async with sdk_client(gateway, "toolbox") as client, httpx.AsyncClient(timeout=5) as http:
                first_pid = (await server_view(http, gateway, "toolbox"))["pid"]
                await client.list_tools()  # the SDK validates a tool result against the listing; fetch it now
                answer = await client.call_tool("exit_after_answer", {})
                await until_running(http, gateway, "toolbox", not_pid=first_pid)
    assert answer.content[0].text == "bye"


async def test_a_crash_loop_ends_in_failed_and_calls_get_503(tmp_path: Path) -> None:
    broken = spec("broken", env={"TOOLBOX_FAIL_START": "1"})
    with run_gateway(
        [broken, spec("healthy")], tmp_path, restart_backoff_initial_s=0.01, restart_max_attempts=2
    ) as gateway:
        health = gateway.health()
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.post(
                gateway.mcp("broken"),
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}},
                },
                headers={"Accept": "application/json, text/event-stream"},
            )
        crashes = [fields for name, fields in gateway.events if name == "server.crash" and fields["server"] == "broken"]
        restarts = [fields for name, fields in gateway.events if name == "server.restart"]

    broken_view = health["servers"]["broken"]
    assert health["status"] == "degraded"
    assert health["servers"]["healthy"]["state"] == "running"
    assert (broken_view["state"], broken_view["pid"], broken_view["restarts"]) == ("failed", None, 2)
    assert broken_view["last_error"] == "exited with code 4 during initialize"
    assert [c["attempt"] for c in crashes] == [1, 2, 3]
    assert [r["attempt"] for r in restarts] == [1, 2]
    assert response.status_code == 503
    # Issue 9 item 5: a slow retry is due in FAILED_RETRY_S (default 300 s), so the refusal says when to come back.
    retry_after = int(response.headers["retry-after"])
    assert 290 <= retry_after <= 300
    assert response.json()["error"] == {
        "code": SERVER_UNAVAILABLE,
        "message": "server 'broken' is not running (state: failed)",
        "data": {"retryAfterSeconds": retry_after},
    }


async def test_a_failed_server_can_be_started_again_by_hand(tmp_path: Path) -> None:
    """POST start after `failed` resets the crash-loop history and tries again (and fails again here)."""
    broken = spec("broken", env={"TOOLBOX_FAIL_START": "1"})
    with run_gateway([broken], tmp_path, restart_backoff_initial_s=0.01, restart_max_attempts=1) as gateway:
        assert gateway.state("broken") == "failed"
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.post(f"{gateway.mcp('broken')}/start")
            assert response.status_code == 200

            async def failed_again() -> bool:
                crashes = [f for name, f in gateway.events if name == "server.crash"]
                return len(crashes) == 4 and (await server_view(http, gateway, "broken"))["state"] == "failed"

            await eventually(failed_again)
