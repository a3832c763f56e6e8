"""Fakes behind the gateway's seams, for fast tests: a child that lives in the event loop, and a clock advanced by hand.

    children = FakeChildren()                       # a ChildFactory
    clock = FakeClock()
    supervisor = Supervisor(settings, base_env={}, events=sink, children=children, clock=clock)
    ...
    children.last.crash(3)                          # or .hang(), or children.fail_next = 2
    await clock.advance(1.0)                        # backoff, ping intervals and slow retries elapse

A FakeChild answers initialize, ping, tools/list and tools/call (echo) at once, like a healthy MCP server.
"""

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

import orjson

from mcp_bastion.config import ServerSpec
from mcp_bastion.errors import ChildUnavailable
from mcp_bastion.supervisor import ChildListener

SETTLE_TURNS = 50  # event-loop turns `settle` gives woken tasks (chains of tasks and futures, not time)
FAKE_PID_BASE = 900_000  # fake pids, far above what a test machine hands out


async def settle(turns: int = SETTLE_TURNS) -> None:
    """Let every task that can run, run (yields to the loop; no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class FakeClock:
    """A Clock whose time moves only in `advance`; sleepers wake in deadline order."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        """The fake time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Return once the clock has been advanced past now + `seconds`."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def call_later(self, seconds: float, callback: Callable[..., None], *args: Any) -> "asyncio.Task[None]":
        """Run `callback(*args)` once the clock is advanced past now + `seconds` (cancel the task to call it off)."""

        async def later() -> None:
            await self.sleep(seconds)
            callback(*args)

        return asyncio.ensure_future(later())

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline and letting it run before the next one."""
        target = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, due)
            if not future.done():
                future.set_result(None)
                await settle()
        self._now = target
        await settle()


class FakeChild:
    """An in-loop stand-in for a ChildProcess: answers like a small healthy MCP server until told otherwise."""

    def __init__(self, spec: ServerSpec, listener: ChildListener, pid: int, *, fail_start: bool = False) -> None:
        self.spec = spec
        self.listener = listener
        self._pid = pid
        self.fail_start = fail_start  # exits with code 4 as soon as it is started (a crash loop)
        self.exited = asyncio.Event()
        self.returncode: int | None = None
        self.started = False
        self.hung = False
        self.received: list[dict[str, Any]] = []
        self._held: list[dict[str, Any]] = []  # requests read while hung, answered on resume()
        self.stopped_hung: bool | None = None  # how stop() was called: True for the hung path (TERM, then KILL)

    @property
    def pid(self) -> int | None:
        """A fake pid while it runs."""
        return self._pid if self.started else None

    @property
    def running(self) -> bool:
        """Started and not exited."""
        return self.started and self.returncode is None

    async def start(self) -> None:
        """Start; with `fail_start`, exit with code 4 right away."""
        self.started = True
        if self.fail_start:
            self.crash(4)

    async def send(self, line: bytes) -> None:
        """Take one line; answer it on the next loop turn (unless hung)."""
        if not self.running:
            raise ChildUnavailable(f"server {self.spec.name!r} is not running")
        message = orjson.loads(line)
        self.received.append(message)
        if "id" in message and "method" in message:
            if self.hung:
                self._held.append(message)
            else:
                asyncio.get_running_loop().call_soon(self._answer, message)

    def _answer(self, message: dict[str, Any]) -> None:
        if not self.running:
            return
        method, params = message["method"], message.get("params") or {}
        value: Any = {}
        if method == "initialize":
            version = params.get("protocolVersion")
            value = {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": "fake"}}
        elif method == "tools/list":
            value = {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}
        elif method == "tools/call":
            text = str((params.get("arguments") or {}).get("text", ""))
            value = {"content": [{"type": "text", "text": text}], "isError": False}
        self.listener.child_message({"jsonrpc": "2.0", "id": message["id"], "result": value})

    def progress(self, token: Any, progress: float) -> None:
        """Report progress on a call (its `params._meta.progressToken`), as a long tool does while it works."""
        params = {"progressToken": token, "progress": progress}
        self.listener.child_message({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    def crash(self, code: int = 3) -> None:
        """Exit now with `code`."""
        self.returncode = code
        self.exited.set()

    def hang(self) -> None:
        """Stop answering anything (as a SIGSTOPped process)."""
        self.hung = True

    def resume(self) -> None:
        """Answer again, starting with what arrived while hung (as after SIGCONT)."""
        self.hung = False
        held, self._held = self._held, []
        for message in held:
            asyncio.get_running_loop().call_soon(self._answer, message)

    async def stop(self, *, hung: bool = False) -> None:
        """End it (records how it was asked to)."""
        self.stopped_hung = hung
        if self.returncode is None:
            self.crash(-9 if hung else 0)


class FakeChildren:
    """A ChildFactory of FakeChild; `fail_next` children exit as soon as they start."""

    def __init__(self) -> None:
        self.spawned: list[FakeChild] = []
        self.fail_next = 0
        self._pids = itertools.count(FAKE_PID_BASE)

    def __call__(self, spec: ServerSpec, listener: ChildListener) -> FakeChild:
        fail = self.fail_next > 0
        self.fail_next -= 1 if fail else 0
        child = FakeChild(spec, listener, next(self._pids), fail_start=fail)
        self.spawned.append(child)
        return child

    @property
    def last(self) -> FakeChild:
        """The most recently spawned child."""
        return self.spawned[-1]
