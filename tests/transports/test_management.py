"""Management endpoints: liveness, health with every server's state, the server list, unknown names."""

from collections.abc import Iterator

import pytest

from tests.harness import DEMO, RunningGateway, run_gateway, spec
from tests.transports.wire import http_client

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    servers = [
        spec("toolbox", env={"TOOLBOX_API_KEY": "sekrit-value-123"}),
        spec("demo", DEMO),
        spec("broken", env={"TOOLBOX_FAIL_START": "1"}, autoStart=False),
    ]
    with run_gateway(servers, tmp_path_factory.mktemp("management")) as running:
        yield running


async def test_livez_is_plain_ok(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.get(f"{gateway.url}/livez")
    assert response.status_code == 200
    assert response.text == "ok"


async def test_health_lists_every_server_with_its_state(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.get(f"{gateway.url}/health")
    assert response.status_code == 200
    body = response.json()
    servers = body["servers"]
    assert set(servers) == {"toolbox", "demo", "broken"}
    assert servers["toolbox"]["state"] == "running"
    assert servers["demo"]["state"] == "running"
    assert servers["broken"]["state"] == "stopped"
    assert isinstance(servers["toolbox"]["pid"], int)
    assert servers["toolbox"]["pending"] == 0
    assert body["status"] == "degraded"  # a shared server is not running


@pytest.mark.parametrize(
    ("verb", "path"),
    [
        ("POST", "/mcp/nope"),
        ("GET", "/mcp/nope"),
        ("GET", "/mcp/nope/sse"),
        ("POST", "/mcp/nope/messages?session_id=x"),
        ("GET", "/nowhere"),
    ],
)
async def test_an_unknown_server_or_path_is_404(gateway: RunningGateway, verb: str, path: str) -> None:
    async with http_client() as client:
        response = await client.request(
            verb,
            gateway.url + path,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 404
    assert "error" in response.json()


async def test_the_server_list_names_servers_but_never_their_command_or_env(gateway: RunningGateway) -> None:
    async with http_client() as client:
        response = await client.get(f"{gateway.url}/mcp/servers")
    assert response.status_code == 200
    servers = response.json()["servers"]
    assert [s["name"] for s in servers] == ["toolbox", "demo", "broken"]
    text = response.text
    assert "sekrit-value-123" not in text
    assert "toolbox.py" not in text
    assert "demo_server" not in text


@pytest.mark.parametrize("path", ["/livez", "/health", "/mcp/servers"])
async def test_management_endpoints_only_answer_get(gateway: RunningGateway, path: str) -> None:
    async with http_client() as client:
        response = await client.post(gateway.url + path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
