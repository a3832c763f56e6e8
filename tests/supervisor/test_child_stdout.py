"""What a child writes on stdout: non-JSON lines are skipped, an over-long line fails only its own call."""

import time
from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from mcp_bastion.errors import INTERNAL_ERROR
from tests.harness import run_gateway, spec
from tests.supervisor.client import sdk_client

pytestmark = pytest.mark.anyio

LINE_CAP = 16 * 1024 * 1024  # the smallest child_line_max_bytes Settings accept
OVERSIZE_ANSWER_BYTES = 17_000_000


async def test_non_json_stdout_lines_are_skipped_and_the_call_still_answers(tmp_path: Path) -> None:
    with run_gateway([spec("toolbox")], tmp_path, request_timeout_s=30) as gateway:
        with anyio.fail_after(20):
            async with sdk_client(gateway, "toolbox") as client:
                answer = await client.call_tool("garbage", {})
                after = await client.call_tool("echo", {"text": "still here"})
        assert gateway.state("toolbox") == "running"
        assert gateway.health()["servers"]["toolbox"]["restarts"] == 0
    assert answer.is_error is False
    assert answer.content[0].text == "after garbage"
    assert after.content[0].text == "still here"


async def test_an_answer_over_the_line_cap_fails_that_call_quickly_and_the_next_call_works(tmp_path: Path) -> None:
    with run_gateway([spec("toolbox")], tmp_path, child_line_max_bytes=LINE_CAP, request_timeout_s=30) as gateway:
        with anyio.fail_after(25):
            async with sdk_client(gateway, "toolbox") as client:
                began = time.monotonic()
                with pytest.raises(MCPError) as caught:
                    await client.call_tool("big", {"size": OVERSIZE_ANSWER_BYTES})
                elapsed = time.monotonic() - began
                fits = await client.call_tool("big", {"size": 1_000_000})
                after = await client.call_tool("echo", {"text": "next"})
        view = gateway.health()["servers"]["toolbox"]
    assert caught.value.code == INTERNAL_ERROR
    assert "too large to relay" in caught.value.message
    assert elapsed < 10, f"the oversize call took {elapsed:.1f} s; it must not wait for the 30 s request timeout"
    assert len(fits.content[0].text) == 1_000_000
    assert after.content[0].text == "next"
    assert (view["state"], view["restarts"], view["pending"]) == ("running", 0, 0)
