"""The `mcpServers` file: Claude Desktop's format as-is, `${VAR}` from the environment and `.env`."""

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_bastion.config import load_servers, variables
from mcp_bastion.errors import ConfigError
from tests.harness import FIXTURES, run_gateway

TOOLBOX_PATH = str(FIXTURES / "toolbox.py")


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def claude_desktop_file(path: Path) -> Path:
    """What Claude Desktop's own `claude_desktop_config.json` holds: command, args, env (and maybe type)."""
    return write(
        path,
        {
            "mcpServers": {
                "toolbox": {
                    "command": sys.executable,
                    "args": [TOOLBOX_PATH],
                    "env": {
                        "TOOLBOX_API_KEY": "${TEST_API_KEY}",
                        "TOOLBOX_REGION": "${TEST_REGION:-eu-west-1}",
                        "TOOLBOX_FROM_DOTENV": "${ONLY_IN_DOTENV}",
                        "TOOLBOX_BOTH": "${IN_BOTH}",
                    },
                },
                "typed": {"type": "stdio", "command": sys.executable, "args": [TOOLBOX_PATH]},
            }
        },
    )


@pytest.fixture
def dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `.env` and an environment that disagree on IN_BOTH (the environment must win)."""
    for name in ("TEST_API_KEY", "TEST_REGION", "ONLY_IN_DOTENV", "IN_BOTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEST_API_KEY", "key-from-environment")
    monkeypatch.setenv("IN_BOTH", "from-environment")
    path = tmp_path / ".env"
    path.write_text("ONLY_IN_DOTENV=from-dotenv\nIN_BOTH=from-dotenv\nTEST_API_KEY=key-from-dotenv\n")
    return path


def test_a_claude_desktop_file_is_accepted_as_is(tmp_path: Path, dotenv: Path) -> None:
    servers = load_servers(claude_desktop_file(tmp_path / "mcp.json"), variables(dotenv))
    assert list(servers) == ["toolbox", "typed"]
    toolbox = servers["toolbox"]
    assert (toolbox.command, toolbox.args) == (sys.executable, (TOOLBOX_PATH,))
    assert servers["typed"].type == "stdio"


def test_variables_come_from_the_environment_then_dotenv_then_the_default(tmp_path: Path, dotenv: Path) -> None:
    env = load_servers(claude_desktop_file(tmp_path / "mcp.json"), variables(dotenv))["toolbox"].env
    assert env == {
        "TOOLBOX_API_KEY": "key-from-environment",
        "TOOLBOX_REGION": "eu-west-1",
        "TOOLBOX_FROM_DOTENV": "from-dotenv",
        "TOOLBOX_BOTH": "from-environment",
    }


def test_a_default_is_ignored_when_the_variable_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REGION", "us-east-2")
    path = write(
        tmp_path / "mcp.json",
        {
            "mcpServers": {
                "s": {"command": sys.executable, "env": {"R": "${TEST_REGION:-eu-west-1}", "E": "${NOPE_X:-}"}}
            }
        },
    )
    assert load_servers(path, variables(None))["s"].env == {"R": "us-east-2", "E": ""}


def test_variables_are_substituted_in_command_and_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PYTHON", sys.executable)
    monkeypatch.setenv("TEST_FIXTURE", TOOLBOX_PATH)
    path = write(
        tmp_path / "mcp.json",
        {"mcpServers": {"s": {"command": "${TEST_PYTHON}", "args": ["${TEST_FIXTURE}", "--mode=${NOPE_Y:-fast}"]}}},
    )
    spec = load_servers(path, variables(None))["s"]
    assert (spec.command, spec.args) == (sys.executable, (TOOLBOX_PATH, "--mode=fast"))


def test_a_missing_variable_names_the_file_the_server_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "mcp.json", {"mcpServers": {"s": {"command": sys.executable, "env": {"K": "${NOPE_Z}"}}}})
    with pytest.raises(ConfigError) as caught:
        load_servers(path, variables(None))
    assert caught.value.message == (
        f"{path}: server 's': key 'env': variable ${{NOPE_Z}} is not set in the environment or .env"
    )


def test_disabled_servers_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mcp.json",
        {"mcpServers": {"on": {"command": sys.executable}, "off": {"command": "no-such-cmd-x", "disabled": True}}},
    )
    assert list(load_servers(path, variables(None))) == ["on"]


@pytest.mark.anyio
async def test_the_child_of_a_claude_desktop_file_sees_the_substituted_env(tmp_path: Path, dotenv: Path) -> None:
    """End to end: file → gateway → real child → SDK client over Streamable HTTP."""
    servers = load_servers(claude_desktop_file(tmp_path / "mcp.json"), variables(dotenv))
    with run_gateway(list(servers.values()), tmp_path) as gateway:
        assert gateway.state("toolbox") == "running"
        assert gateway.state("typed") == "running"
        with anyio.fail_after(20):
            async with httpx2.AsyncClient(timeout=10) as http:
                transport = streamable_http_client(gateway.mcp("toolbox"), http_client=http)
                async with Client(transport, mode="legacy") as client:
                    answer = await client.call_tool("env", {})
    child_env = json.loads(answer.content[0].text)
    assert child_env["TOOLBOX_API_KEY"] == "key-from-environment"
    assert child_env["TOOLBOX_REGION"] == "eu-west-1"
    assert child_env["TOOLBOX_FROM_DOTENV"] == "from-dotenv"
    assert child_env["TOOLBOX_BOTH"] == "from-environment"
