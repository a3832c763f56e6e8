"""mcp.json's `rateLimit` extension per server and per tool (Issue 10 item 1): accepted, and refused with one line
naming the file, the server and the key."""

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_bastion.config import load_servers
from mcp_bastion.errors import ConfigError
from tests.harness import FIXTURES

TOOLBOX = {"command": sys.executable, "args": [str(FIXTURES / "toolbox.py")]}


def servers_file(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"toolbox": {**TOOLBOX, **extra}}}), encoding="utf-8")
    return path


def refusal(tmp_path: Path, **extra: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_servers(servers_file(tmp_path, **extra), {})
    return str(caught.value)


def test_a_server_and_tool_rate_limit_is_read_from_the_file(tmp_path: Path) -> None:
    """Issue 10 item 1: `perMinute` for the server, `tools.NAME.perMinute` per tool; no rateLimit means none."""
    limit = {"perMinute": 60, "tools": {"expensive_tool": {"perMinute": 5}}}
    spec = load_servers(servers_file(tmp_path, rateLimit=limit), {})["toolbox"]
    assert spec.rate_limit is not None
    assert spec.rate_limit.per_minute == 60
    assert spec.rate_limit.tools["expensive_tool"].per_minute == 5
    only_tools = load_servers(servers_file(tmp_path, rateLimit={"tools": {"echo": {"perMinute": 1}}}), {})
    assert only_tools["toolbox"].rate_limit is not None
    assert only_tools["toolbox"].rate_limit.per_minute is None
    assert load_servers(servers_file(tmp_path), {})["toolbox"].rate_limit is None


@pytest.mark.parametrize(
    ("limit", "key", "reason"),
    [
        ({"perMinute": 0}, "rateLimit.perMinute", "greater than or equal to 1"),
        ({"perMinute": "many"}, "rateLimit.perMinute", "valid integer"),
        ({"tools": {"echo": {"perMinute": -5}}}, "rateLimit.tools.echo.perMinute", "greater than or equal to 1"),
        ({"tools": {"echo": {}}}, "rateLimit.tools.echo.perMinute", "Field required"),
        ({"tools": {"echo": {"perMinute": 5, "perHour": 5}}}, "rateLimit.tools.echo.perHour", "unknown key"),
        ({"burst": 5}, "rateLimit.burst", "unknown key"),
        ({}, "rateLimit", 'set "perMinute" or "tools"'),
        ({"tools": {"": {"perMinute": 1}}}, "rateLimit", "empty"),
    ],
)
def test_a_bad_rate_limit_names_the_server_and_the_key(tmp_path: Path, limit: Any, key: str, reason: str) -> None:
    """Issue 10 item 1: every mistake is one line naming the file, the server and the dotted key."""
    message = refusal(tmp_path, rateLimit=limit)
    assert message.startswith(f"{tmp_path / 'mcp.json'}: server 'toolbox': key '{key}': "), message
    assert reason in message
    assert "\n" not in message


def test_a_limited_tool_outside_allowed_tools_is_refused(tmp_path: Path) -> None:
    """Issue 10 item 1: a rate limit on a tool that allowedTools closes can never apply: a typo, said at start-up."""
    message = refusal(tmp_path, allowedTools=["echo"], rateLimit={"tools": {"ecko": {"perMinute": 5}}})
    assert "key 'rateLimit'" in message
    assert "'ecko' is not in allowedTools" in message
