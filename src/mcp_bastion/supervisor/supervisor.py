"""All children: start, stop, restart with exponential backoff and jitter, crash-loop detection, liveness, health.

The relay plugs in as a ChildListener; this module never looks inside a message. Children come from a
ChildFactory and time from a Clock, both injected: tests use `mcp_bastion.testing.FakeChildren` and `FakeClock`.
"""

import asyncio
import contextlib
import enum
import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from mcp_bastion.config import ServerSpec, Settings
from mcp_bastion.jsonrpc import Message, RawResponse
from mcp_bastion.supervisor.clock import Clock, SystemClock, within
from mcp_bastion.supervisor.liveness import Liveness
from mcp_bastion.supervisor.process import Child, ChildProcess

log = logging.getLogger("mcp_bastion.supervisor")

JITTER = 0.2  # ±20 % so that children crashing together do not restart in lockstep

EventSink = Callable[..., None]


class ServerState(enum.StrEnum):
    """Where a supervised server is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    UNRESPONSIVE = "unresponsive"  # stopped answering (pings, calls); being killed to restart it (Issue 9 item 3)
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"


RECOVERING = frozenset({ServerState.STARTING, ServerState.RUNNING, ServerState.UNRESPONSIVE, ServerState.RESTARTING})


class ChildListener(Protocol):
    """What the relay provides to talk to a child the supervisor started."""

    def child_message(self, message: Message | RawResponse) -> None:
        """A parsed stdout message, or a large result as the child wrote it (Issue 11 item 1)."""

    def child_oversize(self, request_id: Any, limit_bytes: int) -> None:
        """A stdout line over the cap (`limit_bytes`) was dropped; `request_id` is the top-level id it carried."""

    async def child_started(self, child: Child) -> None:
        """The child runs; do the MCP handshake or raise."""

    async def child_ping(self) -> None:
        """Send the child an MCP ping; return when it answers (the caller bounds the wait)."""

    def child_exited(self, reason: str) -> None:
        """The child is gone: fail everything pending on it."""


class ChildFactory(Protocol):
    """Makes a Child for a spec wired to a listener (a seam for tests)."""

    def __call__(self, spec: ServerSpec, listener: ChildListener) -> Child: ...


class ServerHandle:
    """One shared server under supervision."""

    def __init__(
        self,
        spec: ServerSpec,
        listener: ChildListener,
        *,
        settings: Settings,
        spawn: ChildFactory,
        events: EventSink,
        clock: Clock | None = None,
        spawn_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.spec = spec
        self.listener = listener
        self.restarts = 0
        self.last_error: str | None = None
        self.started_at: float | None = None
        self.child: Child | None = None
        self._settings = settings
        self._spawn = spawn
        self._events = events
        self._clock: Clock = clock or SystemClock()
        self._slots = spawn_slots or asyncio.Semaphore(settings.spawn_concurrency)
        self.liveness = Liveness(settings.unresponsive_after, self._clock)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._retry_now = asyncio.Event()  # set by start() while `failed` waits for its slow retry
        self._changed = asyncio.Event()  # set (and replaced) on every change of state: wait_ready wakes on it
        self._state = ServerState.STOPPED
        self._next_try_at: float | None = None  # when the next start attempt is due (backoff or slow retry)
        self.ready = asyncio.Event()

    @property
    def state(self) -> ServerState:
        """Where the server is in its life."""
        return self._state

    @state.setter
    def state(self, value: ServerState) -> None:
        self._state = value
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The running child's pid."""
        if self.child is None or self.state not in (ServerState.RUNNING, ServerState.UNRESPONSIVE):
            return None
        return self.child.pid

    @property
    def recovering(self) -> bool:
        """Supervised and running or on its way back: a call arriving now may wait for it (Issue 9 item 2)."""
        return self._task is not None and not self._task.done() and not self._stop.is_set() and self.state in RECOVERING

    def uptime_s(self) -> float | None:
        """Seconds since the current child became ready."""
        if self.started_at is None or self.state != ServerState.RUNNING:
            return None
        return self._clock.now() - self.started_at

    def retry_after_s(self) -> int | None:
        """Whole seconds a client should wait before trying again (None: stopped, nothing will change by itself)."""
        if self.state == ServerState.STOPPED or (self.state == ServerState.FAILED and self._next_try_at is None):
            return None
        due = self._next_try_at
        return max(1, math.ceil(due - self._clock.now())) if due is not None else 1

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until a child is ready; False at once when none is coming (stopped, failed)."""
        deadline = self._clock.now() + timeout_s
        while not self._serving() and self.recovering:
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                break
            await within(self._clock, self._changed.wait(), remaining)
        return self._serving()

    def _serving(self) -> bool:
        """Ready, and its child not known to be dead (`ready` is cleared only once a dead child's output is read)."""
        return self.ready.is_set() and self.child is not None and self.child.running

    def start(self) -> None:
        """Begin supervising (idempotent while running); when `failed`, try again now with a fresh history."""
        if self._task is not None and not self._task.done():
            if self.state == ServerState.FAILED:  # waiting for its slow retry
                self._retry_now.set()
            return
        self._stop = asyncio.Event()
        self.restarts = 0
        self.state = ServerState.STARTING
        self._task = asyncio.create_task(self._run(), name=f"supervise:{self.spec.name}")

    async def stop(self) -> None:
        """Stop the child cleanly and stop supervising."""
        self._stop.set()
        task = self._task
        if task is not None:
            self.state = ServerState.STOPPING
            await task
        self._next_try_at = None
        self.state = ServerState.STOPPED
        self.ready.clear()

    async def restart(self) -> None:
        """Stop, then start afresh (restart count and crash-loop history reset)."""
        await self.stop()
        self.start()
        self._events("server.restart", server=self.spec.name, reason="requested")

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            began = self._clock.now()
            reason, hung = await self._run_once()
            if self._stop.is_set():
                break
            if self._clock.now() - began >= self._settings.stable_uptime_s:
                attempt = 0
            attempt += 1
            self.last_error = reason
            if not hung:
                self._events("server.crash", server=self.spec.name, reason=reason, attempt=attempt)
            cause = "unresponsive" if hung else "crash"
            if attempt > self._settings.restart_max_attempts:
                if not await self._give_up(attempt, reason):
                    return
                if self._retry_now.is_set():  # started by hand: a fresh history, as a new start() gives
                    self._retry_now.clear()
                    attempt = self.restarts = 0
                    continue
                attempt, cause = self._settings.restart_max_attempts, "retry after failure"
            else:
                self.state = ServerState.RESTARTING
                if await self._pause(self._backoff(attempt)):
                    break
            self.restarts += 1
            self._events("server.restart", server=self.spec.name, reason=cause, attempt=attempt)

    async def _give_up(self, attempt: int, reason: str) -> bool:
        """`failed`, audited; then one slow retry after FAILED_RETRY_S (Issue 9 item 5). False: stay failed."""
        retry_s = self._settings.failed_retry_s
        self.state = ServerState.FAILED
        self._events(
            "server.gave_up", server=self.spec.name, reason=reason, attempts=attempt, retry_in_s=retry_s or None
        )
        log.error("server %s: failed %d times in a row, giving up: %s", self.spec.name, attempt, reason)
        self._retry_now.clear()
        return bool(retry_s) and not await self._pause(retry_s, self._retry_now)

    def _backoff(self, attempt: int) -> float:
        base = self._settings.restart_backoff_initial_s * 2.0 ** (attempt - 1)
        return float(min(self._settings.restart_backoff_max_s, base)) * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311

    async def _pause(self, delay: float, wake: asyncio.Event | None = None) -> bool:
        """Wait `delay` on the clock unless stopped (or woken by `wake`) first; True if stopped."""
        self._next_try_at = self._clock.now() + delay
        events = [self._stop] if wake is None else [self._stop, wake]
        try:
            await within(self._clock, _first_set(events), delay)
        finally:
            self._next_try_at = None
        return self._stop.is_set()

    async def _run_once(self) -> tuple[str, bool]:
        """Run one child until it exits, hangs or we are stopped; return why it ended and whether it hung."""
        self.state = ServerState.STARTING
        child = self._spawn(self.spec, self.listener)
        self.child = child
        async with self._slots:  # Issue 9 item 4: a bounded number of children start at once
            try:
                await child.start()
            except OSError as exc:
                self.listener.child_exited("spawn failed")
                return f"cannot start: {exc.strerror or exc}", False
            reason = await self._handshake(child)
        hung = False
        if reason is None:
            reason, hung = await self._serve(child)
        self.ready.clear()
        if hung:  # nothing it says now counts: fail its calls first, then kill it
            self.listener.child_exited(reason)
            await child.stop(hung=True)
        else:
            await child.stop()
            self.listener.child_exited(reason)
        if self._stop.is_set():
            self._events("server.stop", server=self.spec.name)
        return reason, hung

    async def _serve(self, child: Child) -> tuple[str, bool]:
        """The child answered initialize: mark it running, then wait until it exits, hangs or we stop."""
        self.last_error = None  # recovered (Issue 9 item 5): /health must not show the last crash as current
        self.liveness.reset()
        self.started_at = self._clock.now()
        self.ready.set()
        self.state = ServerState.RUNNING
        self._events("server.start", server=self.spec.name, pid=child.pid)
        log.info("server %s: running (pid %s)", self.spec.name, child.pid)
        waits = {
            asyncio.create_task(self._stop.wait()),
            asyncio.create_task(child.exited.wait()),
            asyncio.create_task(self.liveness.tripped.wait()),
            asyncio.create_task(self._ping_while_quiet()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if child.exited.is_set():
            return f"exited with code {child.returncode}", False
        if self._stop.is_set():
            return "stopped", False
        return self._unresponsive(child), True

    def _unresponsive(self, child: Child) -> str:
        missed = self.liveness.missed
        self.state = ServerState.UNRESPONSIVE
        reason = f"unresponsive: {missed} requests in a row unanswered"
        self._events("server.unresponsive", server=self.spec.name, pid=child.pid, missed=missed)
        log.warning("server %s: %s; restarting it", self.spec.name, reason)
        return reason

    async def _ping_while_quiet(self) -> None:
        """Ping the child whenever it has been silent for PING_INTERVAL_S, until it misses too many answers."""
        interval, timeout = self._settings.ping_interval_s, self._settings.ping_timeout_s
        live = self.liveness
        while not live.tripped.is_set():
            quiet = live.quiet_s()
            if quiet < interval:
                await self._clock.sleep(interval - quiet)
                continue
            ping = asyncio.ensure_future(self.listener.child_ping())
            if await within(self._clock, ping, timeout):
                live.answered()
            elif ping.cancelled():  # no answer in time
                live.unanswered()
            else:  # it could not be sent: the child is going, and its exit is noticed without us
                await self._clock.sleep(interval)

    async def _handshake(self, child: Child) -> str | None:
        handshake = asyncio.create_task(self.listener.child_started(child))
        exited = asyncio.create_task(child.exited.wait())
        stopped = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait(
            {handshake, exited, stopped},
            timeout=self._settings.initialize_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in (handshake, exited, stopped):
            task.cancel()
        if handshake in done and handshake.exception() is None:
            return None
        if stopped in done:
            return "stopped"
        if exited in done:
            return f"exited with code {child.returncode} during initialize"
        if handshake in done:
            return f"initialize failed: {handshake.exception()}"
        return "initialize timed out"


async def _first_set(events: list[asyncio.Event]) -> None:
    """Return when any of `events` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class Supervisor:
    """Owns every shared server's handle, the way children are spawned, and the spawn throttle."""

    def __init__(
        self,
        settings: Settings,
        *,
        base_env: Mapping[str, str],
        events: EventSink,
        children: ChildFactory | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.base_env = dict(base_env)
        self.events = events
        self.handles: dict[str, ServerHandle] = {}
        self.clock: Clock = clock or SystemClock()
        self._children: ChildFactory = children or self.process
        self._slots = asyncio.Semaphore(settings.spawn_concurrency)

    def spawn(self, spec: ServerSpec, listener: ChildListener) -> Child:
        """A child for `spec`, wired to `listener`, not yet started (from the injected factory, if any)."""
        return self._children(spec, listener)

    def process(self, spec: ServerSpec, listener: ChildListener) -> ChildProcess:
        """The real ChildFactory: a ChildProcess for `spec`, wired to `listener`."""
        return ChildProcess(
            spec,
            base_env=self.base_env,
            line_max_bytes=self.settings.child_line_max_bytes,
            stderr_log=Path(self.settings.log_dir) / "servers" / f"{spec.name}.log",
            on_message=listener.child_message,
            on_oversize=listener.child_oversize,
            grace_s=self.settings.shutdown_grace_s,
        )

    @contextlib.asynccontextmanager
    async def spawn_slot(self) -> AsyncIterator[None]:
        """Held while a child starts and initializes: SPAWN_CONCURRENCY at once (Issue 9 item 4)."""
        async with self._slots:
            yield

    def add(self, spec: ServerSpec, listener: ChildListener) -> ServerHandle:
        """Register a shared server."""
        handle = ServerHandle(
            spec,
            listener,
            settings=self.settings,
            spawn=self.spawn,
            events=self.events,
            clock=self.clock,
            spawn_slots=self._slots,
        )
        self.handles[spec.name] = handle
        return handle

    async def stop_all(self) -> None:
        """Stop every child concurrently; returns when all are reaped."""
        await asyncio.gather(*(handle.stop() for handle in self.handles.values()))
