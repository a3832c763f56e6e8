"""Stopping the gateway leaves no process behind: stubborn children are TERMed then KILLed, all are reaped."""

import os
import sys
import time
import uuid
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
from mcp.shared.exceptions import MCPError

from mcp_bastion.errors import SERVER_UNAVAILABLE
from tests.harness import FIXTURES, TOOLBOX, run_gateway, spec, wait_until
from tests.supervisor.client import eventually, sdk_client, server_view, until_running

STUBBORN = [sys.executable, str(FIXTURES / "stubborn.py")]
GRACE_S = 0.3
CYCLES = 100


def marker() -> str:
    """A unique argument that tells this test's fixture processes apart from everyone else's."""
    return f"--bastion-test-marker={uuid.uuid4().hex}"


def processes_with(mark: str) -> list[int]:
    """Pids of every process on the machine whose command line holds `mark`."""
    return [p.pid for p in psutil.process_iter(["cmdline"]) if mark in (p.info["cmdline"] or [])]


class Descendants:
    """This test process's descendants, minus those that existed before the test began."""

    def __init__(self) -> None:
        self.before = {p.pid for p in psutil.Process().children(recursive=True)}

    def new(self) -> list[psutil.Process]:
        return [p for p in psutil.Process().children(recursive=True) if p.pid not in self.before]

    def with_marker(self, mark: str) -> list[int]:
        return [p.pid for p in self.new() if mark in cmdline(p) or status(p) == psutil.STATUS_ZOMBIE]


def status(proc: psutil.Process) -> str:
    try:
        return str(proc.status())
    except psutil.NoSuchProcess:
        return "gone"


def cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.NoSuchProcess:  # ZombieProcess included: a zombie is reported by status()
        return []


def alive(proc: psutil.Process) -> bool:
    """Running, or dead but not reaped although it is ours to reap.

    A grandchild orphaned to init is reaped by init (some sandboxes' init never does); that zombie is outside
    the gateway's reach and is not counted.
    """
    if not proc.is_running():
        return False
    try:
        return proc.status() != psutil.STATUS_ZOMBIE or proc.ppid() == os.getpid()
    except psutil.NoSuchProcess:
        return False


async def none_alive(processes: list[psutil.Process]) -> bool:
    return not any(alive(p) for p in processes)


@pytest.fixture
def descendants() -> Descendants:
    return Descendants()


@pytest.mark.parametrize(
    ("flags", "log_lines"),
    [
        ([], ["stubborn: stdin closed, staying up", "stubborn: got SIGTERM, exiting"]),
        (["--ignore-term"], ["stubborn: stdin closed, staying up", "stubborn: got SIGTERM, ignoring it"]),
    ],
    ids=["exits-on-term", "needs-kill"],
)
def test_closing_the_gateway_terms_then_kills_a_child_that_ignores_stdin_eof(
    tmp_path: Path, descendants: Descendants, flags: list[str], log_lines: list[str]
) -> None:
    mark = marker()
    with run_gateway([spec("stubborn", [*STUBBORN, *flags, mark])], tmp_path, shutdown_grace_s=GRACE_S) as gateway:
        assert gateway.state("stubborn") == "running"
        child = psutil.Process(gateway.health()["servers"]["stubborn"]["pid"])
        assert mark in child.cmdline()
        closing = time.monotonic()
    took = time.monotonic() - closing
    assert not child.is_running(), "the child survived the gateway (or was left a zombie)"
    assert processes_with(mark) == []
    assert descendants.new() == []
    assert took < 3 * GRACE_S + 2.0, f"shutdown took {took:.1f} s"
    log = (tmp_path / "logs" / "servers" / "stubborn.log").read_text()
    assert log.splitlines() == log_lines
    assert ("server.stop", {"server": "stubborn"}) in gateway.events


def test_closing_the_gateway_kills_the_childs_grandchildren(tmp_path: Path, descendants: Descendants) -> None:
    mark = marker()
    with run_gateway([spec("toolbox", [*TOOLBOX, mark])], tmp_path, shutdown_grace_s=GRACE_S) as gateway:
        child = psutil.Process(gateway.health()["servers"]["toolbox"]["pid"])

        async def start_grandchild() -> int:
            async with sdk_client(gateway, "toolbox") as client:
                answer = await client.call_tool("grandchild", {})
                return int(answer.content[0].text)

        grandchild = psutil.Process(anyio.run(start_grandchild))
        assert grandchild.is_running()
        assert grandchild.ppid() == child.pid
    assert not child.is_running()
    wait_until(lambda: not alive(grandchild), timeout=5)  # it was sent SIGKILL; dying takes a moment
    assert processes_with(mark) == []
    assert descendants.new() == []


@pytest.mark.anyio
async def test_a_hundred_start_stop_crash_cycles_leave_no_process_behind(
    tmp_path: Path, descendants: Descendants
) -> None:
    """Each cycle starts a grandchild, then restarts (POST), crashes (tool) or stops and starts (POST) the server."""
    mark = marker()
    children: list[psutil.Process] = []
    grandchildren: list[psutil.Process] = []
    with run_gateway(
        [spec("toolbox", [*TOOLBOX, mark])],
        tmp_path,
        restart_backoff_initial_s=0.01,
        restart_backoff_max_s=0.05,
        shutdown_grace_s=1.0,
    ) as gateway:
        url = gateway.mcp("toolbox")
        with anyio.fail_after(60):
            async with sdk_client(gateway, "toolbox") as client, httpx.AsyncClient(timeout=10) as http:
                await client.list_tools()
                pid = (await server_view(http, gateway, "toolbox"))["pid"]
                for cycle in range(CYCLES):
                    children.append(psutil.Process(pid))
                    assert descendants.with_marker(mark) == [pid], f"cycle {cycle}: more than the one live child"
                    answer = await client.call_tool("grandchild", {})
                    grandchildren.append(psutil.Process(int(answer.content[0].text)))
                    if cycle % 3 == 0:
                        assert (await http.post(f"{url}/restart")).status_code == 200
                    elif cycle % 3 == 1:
                        with pytest.raises(MCPError) as caught:
                            await client.call_tool("crash", {})
                        assert caught.value.code == SERVER_UNAVAILABLE
                    else:
                        assert (await http.post(f"{url}/stop")).status_code == 200
                        assert (await http.post(f"{url}/start")).status_code == 200
                    pid = await until_running(http, gateway, "toolbox", not_pid=pid)
                    await eventually(lambda: none_alive(grandchildren), timeout=5)  # KILL is not instant
        children.append(psutil.Process(pid))
        crashes = sum(1 for name, _ in gateway.events if name == "server.crash")
        starts = sum(1 for name, _ in gateway.events if name == "server.start")

    assert crashes == len(range(1, CYCLES, 3))
    assert starts == CYCLES + 1
    assert len({p.pid for p in children}) == CYCLES + 1
    assert [p.pid for p in children if p.is_running()] == [], "children left running or unreaped"
    assert [p.pid for p in grandchildren if alive(p)] == []
    assert processes_with(mark) == []
    assert descendants.new() == [], "a child (running or zombie) is left"
