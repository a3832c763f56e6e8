"""A child's stderr goes to `<log_dir>/servers/<name>.log`, its own secret env values masked."""

from pathlib import Path

import anyio
import pytest

from tests.harness import run_gateway, spec, wait_until
from tests.supervisor.client import sdk_client

pytestmark = pytest.mark.anyio

API_KEY = "sk-live-9f8e7d6c5b4a3210"


async def test_stderr_is_logged_per_server_with_the_childs_secrets_masked(tmp_path: Path) -> None:
    with run_gateway([spec("toolbox", env={"TOOLBOX_API_KEY": API_KEY})], tmp_path) as gateway:
        log = tmp_path / "logs" / "servers" / "toolbox.log"
        with anyio.fail_after(20):
            async with sdk_client(gateway, "toolbox") as client:
                answer = await client.call_tool("secret", {})
        assert answer.content[0].text == "logged"
        wait_until(lambda: log.exists() and "my key is" in log.read_text())
    text = log.read_text()
    assert "my key is ****\n" in text
    assert API_KEY not in text
    assert API_KEY[:12] not in text


async def test_each_server_has_its_own_stderr_log(tmp_path: Path) -> None:
    servers = [spec("alpha", env={"TOOLBOX_API_KEY": "alpha-key-123456"}), spec("beta")]
    with run_gateway(servers, tmp_path) as gateway:
        with anyio.fail_after(20):
            async with sdk_client(gateway, "alpha") as client:
                await client.call_tool("secret", {})
        alpha = tmp_path / "logs" / "servers" / "alpha.log"
        wait_until(lambda: alpha.exists() and "my key is" in alpha.read_text())
    beta = tmp_path / "logs" / "servers" / "beta.log"
    assert "my key is" not in (beta.read_text() if beta.exists() else "")
