"""Issue 11 item 1 with real software: npm @modelcontextprotocol/server-filesystem reads a 10 MiB text file.

Its answer carries the text twice (`content` and `structuredContent`), written by the TypeScript SDK with the id last:
a ~21 MB stdout line. The official Python SDK client (Streamable HTTP, legacy and 2026-07-28) and the TypeScript SDK
1.x client each read it through the gateway and directly over stdio in the same test, and get the file byte for byte;
with the line cap below the answer, the call fails at once saying it was too large while other calls go on.
"""

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_bastion.errors import INTERNAL_ERROR
from tests.harness import RunningGateway, run_gateway, spec
from tests.interop.conftest import ROOT, tool

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

MIB = 1024 * 1024
FILE_BYTES = 10 * MIB
SMALLEST_CAP = 16 * MIB  # the smallest CHILD_LINE_MAX_BYTES Settings accept: under the ~21 MB answer
SCENARIO_S = 90.0  # each scenario reads the file a few times (well under a second each on a quiet machine)
NODE_SCRIPT = Path(__file__).parent / "large_read.cjs"
# Every character JSON escapes or a naive relay could mangle: quotes, backslashes, CR LF, tabs, non-ASCII, U+2028.
BLOCK = "line: \"quoted\" back\\slash\ttab é € 😀 <tag> & 'single' \u2028 end\r\n".encode()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The served root, its 10 MiB text file and a small one."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp("served")))
    body = BLOCK * (FILE_BYTES // len(BLOCK))
    big = root / "big.txt"
    big.write_bytes(body + b"x" * (FILE_BYTES - len(body)))
    small = root / "small.txt"
    small.write_text("a small file\n")
    return root, big, small


def filesystem(root: Path) -> list[str]:
    return [tool("mcp-server-filesystem"), str(root)]


@pytest.fixture(scope="module")
def gateway(files: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """The default line cap (CHILD_LINE_MAX_BYTES, 64 MiB)."""
    with run_gateway([spec("fs", filesystem(files[0]))], tmp_path_factory.mktemp("gateway")) as running:
        assert running.state("fs") == "running", running.health()
        yield running


@asynccontextmanager
async def python_client(target: RunningGateway | Path, mode: str = "legacy") -> AsyncIterator[Client]:
    """The official Python SDK client through the gateway, or over stdio on the served root."""
    if isinstance(target, Path):
        params = StdioServerParameters(command=filesystem(target)[0], args=[str(target)])
        with open(os.devnull, "w") as quiet:
            async with Client(stdio_client(params, errlog=quiet), mode="legacy") as client:
                yield client
        return
    async with (  # the SDK leaves a given http_client open: closed here
        httpx2.AsyncClient(timeout=SCENARIO_S) as http,
        Client(streamable_http_client(target.mcp("fs"), http_client=http), mode=mode) as client,
    ):
        yield client


async def python_read(target: RunningGateway | Path, path: Path, mode: str = "legacy") -> Any:
    async with python_client(target, mode) as client:
        return await client.call_tool("read_text_file", {"path": str(path)})


def node_read(target: dict[str, Any], path: Path, out: Path) -> dict[str, Any]:
    """The TypeScript SDK 1.x client (tests/interop/large_read.cjs) reads `path`; its text lands in `out`."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(out.parent), "LANG": "C.UTF-8"}
    env["NODE_PATH"] = str(ROOT / ".tools" / "node_modules")
    config = {"target": target, "path": str(path), "out": str(out)}
    done = subprocess.run(
        [tool("node22"), str(NODE_SCRIPT), json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SCENARIO_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-4000:]}"
    return dict(json.loads(done.stdout))


def audited_reads(gateway: RunningGateway) -> list[dict[str, Any]]:
    log = gateway.app.gateway.settings.audit_log
    assert log is not None
    lines = Path(log).read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == "mcp.call" and e.get("tool") == "read_text_file"]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_python_sdk_reads_a_10_mib_file_through_the_gateway_byte_for_byte_as_over_stdio(
    files: tuple[Path, Path, Path], gateway: RunningGateway, mode: str
) -> None:
    root, big, _ = files
    with anyio.fail_after(SCENARIO_S):
        alone = await python_read(root, big)
        through = await python_read(gateway, big, mode)
    expected = big.read_bytes()
    assert alone.content[0].text.encode() == expected  # the server and the client agree without the gateway
    assert through.content[0].text.encode() == expected
    assert through.structured_content == alone.structured_content == {"content": alone.content[0].text}
    assert through.is_error is not True
    assert audited_reads(gateway)[-1]["outcome"] == "ok"


async def test_the_typescript_sdk_reads_a_10_mib_file_through_the_gateway_byte_for_byte_as_over_stdio(
    files: tuple[Path, Path, Path], gateway: RunningGateway, tmp_path: Path
) -> None:
    root, big, _ = files
    alone = node_read({"command": filesystem(root)}, big, tmp_path / "alone.txt")
    through = node_read({"url": gateway.mcp("fs")}, big, tmp_path / "through.txt")
    expected = big.read_bytes()
    utf16_units = len(expected.decode().encode("utf-16-le")) // 2  # what a JavaScript string's length counts
    assert alone == through == {"ok": True, "chars": utf16_units, "structuredSame": True}
    assert (tmp_path / "alone.txt").read_bytes() == expected
    assert (tmp_path / "through.txt").read_bytes() == expected


async def test_a_read_over_the_line_cap_fails_at_once_saying_too_large_while_other_calls_go_on(
    files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The ~21 MB answer with its id last, under a 16 MiB cap: that call fails within seconds (not at the 60 s
    timeout) with "too large", naming the limit; a small read in flight at the same time and the next ones are
    answered by the same child. (Over stdio and under the default cap the same read succeeds: the tests above.)"""
    root, big, small = files
    outcomes: dict[str, Any] = {}

    async def read(client: Client, path: Path, key: str) -> None:
        try:
            outcomes[key] = (await client.call_tool("read_text_file", {"path": str(path)})).content[0].text
        except MCPError as exc:
            outcomes[key] = exc

    with anyio.fail_after(SCENARIO_S):
        with run_gateway([spec("fs", filesystem(root))], tmp_path, child_line_max_bytes=SMALLEST_CAP) as capped:
            pid = capped.app.gateway.server_view("fs")["pid"]
            async with python_client(capped) as client:
                with anyio.fail_after(10):  # far under REQUEST_TIMEOUT_S: the refusal does not wait for a timeout
                    async with anyio.create_task_group() as group:
                        group.start_soon(read, client, big, "big")
                        group.start_soon(read, client, small, "small")
                await read(client, small, "after")
            node = node_read({"url": capped.mcp("fs")}, big, tmp_path / "refused.txt")
            assert capped.app.gateway.server_view("fs")["pid"] == pid  # the same child served everything
            audited = audited_reads(capped)
    refused = outcomes["big"]
    assert isinstance(refused, MCPError)
    assert refused.code == INTERNAL_ERROR
    assert "too large to relay" in refused.message
    assert f"over {SMALLEST_CAP} bytes" in refused.message
    assert "CHILD_LINE_MAX_BYTES" in refused.message
    assert outcomes["small"] == outcomes["after"] == "a small file\n"
    assert node["ok"] is False
    assert "too large to relay" in node["message"]
    assert [e["outcome"] for e in audited].count("error") == 2
    assert {e["code"] for e in audited if e["outcome"] == "error"} == {INTERNAL_ERROR}
