"""A child inherits only the allowlisted environment plus the env its config declares."""

import json
import os
from pathlib import Path

import anyio
import pytest

from mcp_bastion.config import CHILD_ENV_ALLOWLIST
from tests.harness import run_gateway, spec
from tests.supervisor.client import sdk_client

pytestmark = pytest.mark.anyio

API_KEY = "sk-test-declared-0123456789"


async def test_a_child_sees_the_allowlist_and_its_declared_env_but_not_the_gateways_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_CANARY_SECRET", "canary-must-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-must-not-leak")
    monkeypatch.setenv("LANG", "C.UTF-8")
    declared = {"TOOLBOX_API_KEY": API_KEY, "TOOLBOX_MODE": "strict"}
    with run_gateway([spec("toolbox", env=declared)], tmp_path) as gateway:
        with anyio.fail_after(20):
            async with sdk_client(gateway, "toolbox") as client:
                answer = await client.call_tool("env", {})
    child_env: dict[str, str] = json.loads(answer.content[0].text)
    assert "BASTION_CANARY_SECRET" not in child_env
    assert "AWS_SECRET_ACCESS_KEY" not in child_env
    assert "canary-must-not-leak" not in child_env.values()
    assert child_env["TOOLBOX_API_KEY"] == API_KEY
    assert child_env["TOOLBOX_MODE"] == "strict"
    assert child_env["PATH"] == os.environ["PATH"]
    assert child_env["LANG"] == "C.UTF-8"
    assert set(child_env) <= set(CHILD_ENV_ALLOWLIST) | set(declared)


async def test_declared_env_overrides_the_inherited_allowlist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    with run_gateway([spec("toolbox", env={"TZ": "Europe/Paris"})], tmp_path) as gateway:
        with anyio.fail_after(20):
            async with sdk_client(gateway, "toolbox") as client:
                answer = await client.call_tool("env", {})
    assert json.loads(answer.content[0].text)["TZ"] == "Europe/Paris"
