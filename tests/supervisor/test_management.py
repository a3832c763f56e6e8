"""POST /mcp/{name}/stop|start|restart drive the supervisor; the old child is reaped each time."""

from pathlib import Path

import anyio
import httpx
import psutil
import pytest
from mcp.shared.exceptions import MCPError

from mcp_bastion.errors import SERVER_UNAVAILABLE
from tests.harness import run_gateway, spec
from tests.supervisor.client import sdk_client, server_view, until_running

pytestmark = pytest.mark.anyio


async def test_stop_then_start_then_restart(tmp_path: Path) -> None:
    with run_gateway([spec("toolbox")], tmp_path) as gateway:
        url = gateway.mcp("toolbox")
        with anyio.fail_after(30):
            async with sdk_client(gateway, "toolbox") as client, httpx.AsyncClient(timeout=10) as http:
                first = psutil.Process((await server_view(http, gateway, "toolbox"))["pid"])

                stopped = await http.post(f"{url}/stop")
                assert stopped.status_code == 200
                assert (stopped.json()["state"], stopped.json()["pid"]) == ("stopped", None)
                assert not first.is_running(), "the stopped child is still there (or a zombie)"
                with pytest.raises(MCPError) as caught:
                    await client.call_tool("echo", {"text": "while stopped"})
                assert (caught.value.code, caught.value.message) == (
                    SERVER_UNAVAILABLE,
                    "server 'toolbox' is not running",
                )
                assert (await http.post(f"{url}/stop")).status_code == 200, "stop is idempotent"

                started = await http.post(f"{url}/start")
                assert started.status_code == 200
                assert started.json()["state"] in ("starting", "running")
                second = psutil.Process(await until_running(http, gateway, "toolbox", not_pid=first.pid))
                assert (await client.call_tool("echo", {"text": "started"})).content[0].text == "started"

                restarted = await http.post(f"{url}/restart")
                assert restarted.status_code == 200
                assert not second.is_running(), "restart left the old child behind"
                third = await until_running(http, gateway, "toolbox", not_pid=second.pid)
                assert (await client.call_tool("echo", {"text": "restarted"})).content[0].text == "restarted"
                view = await server_view(http, gateway, "toolbox")
        lifecycle = [(name, fields.get("reason")) for name, fields in gateway.events if name != "server.crash"]
        crashes = [fields for name, fields in gateway.events if name == "server.crash"]

    assert view["pid"] == third
    assert view["restarts"] == 0
    assert crashes == [], "a requested stop or restart is not a crash"
    assert lifecycle == [
        ("server.start", None),
        ("server.stop", None),
        ("server.start", None),
        ("server.stop", None),
        ("server.restart", "requested"),
        ("server.start", None),
    ]


async def test_management_endpoints_answer_only_post_for_known_servers(tmp_path: Path) -> None:
    with run_gateway([spec("toolbox")], tmp_path) as gateway:
        async with httpx.AsyncClient(timeout=10) as http:
            wrong_method = await http.get(f"{gateway.mcp('toolbox')}/restart")
            unknown = await http.post(f"{gateway.mcp('nope')}/restart")
            unknown_action = await http.post(f"{gateway.mcp('toolbox')}/explode")
        assert gateway.state("toolbox") == "running"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "unknown server 'nope'"
    assert unknown_action.status_code == 404
