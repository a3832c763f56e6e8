"""All children: start, stop, restart with exponential backoff and jitter, crash-loop detection, health.

The relay plugs in as a ChildListener; this module never looks inside a message.
"""

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from mcp_bastion.config import ServerSpec, Settings
from mcp_bastion.supervisor.process import ChildProcess

log = logging.getLogger("mcp_bastion.supervisor")

JITTER = 0.2  # ±20 % so that children crashing together do not restart in lockstep

EventSink = Callable[..., None]


class ServerState(enum.StrEnum):
    """Where a supervised server is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"


class ChildListener(Protocol):
    """What the relay provides to talk to a child the supervisor started."""

    def child_message(self, message: dict[str, Any]) -> None:
        """A parsed stdout message."""

    def child_oversize(self, request_id: Any) -> None:
        """A stdout line over the cap was dropped; `request_id` is the id it seemed to answer."""

    async def child_started(self, child: ChildProcess) -> None:
        """The child runs; do the MCP handshake or raise."""

    def child_exited(self, reason: str) -> None:
        """The child is gone: fail everything pending on it."""


class ChildFactory(Protocol):
    """Makes a ChildProcess for a spec wired to a listener (a seam for tests)."""

    def __call__(self, spec: ServerSpec, listener: ChildListener) -> ChildProcess: ...


class ServerHandle:
    """One shared server under supervision."""

    def __init__(
        self, spec: ServerSpec, listener: ChildListener, *, settings: Settings, spawn: ChildFactory, events: EventSink
    ) -> None:
        self.spec = spec
        self.listener = listener
        self.state = ServerState.STOPPED
        self.restarts = 0
        self.last_error: str | None = None
        self.started_at: float | None = None
        self.child: ChildProcess | None = None
        self._settings = settings
        self._spawn = spawn
        self._events = events
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The running child's pid."""
        return self.child.pid if self.child and self.state == ServerState.RUNNING else None

    def uptime_s(self) -> float | None:
        """Seconds since the current child became ready."""
        if self.started_at is None or self.state != ServerState.RUNNING:
            return None
        return time.monotonic() - self.started_at

    def start(self) -> None:
        """Begin supervising (idempotent while running)."""
        if self._task is not None and not self._task.done():
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
            began = time.monotonic()
            reason = await self._run_once()
            if self._stop.is_set():
                break
            if time.monotonic() - began >= self._settings.stable_uptime_s:
                attempt = 0
            attempt += 1
            self.last_error = reason
            self._events("server.crash", server=self.spec.name, reason=reason, attempt=attempt)
            if attempt > self._settings.restart_max_attempts:
                self.state = ServerState.FAILED
                log.error("server %s: failed %d times in a row, giving up: %s", self.spec.name, attempt, reason)
                return
            self.state = ServerState.RESTARTING
            if await self._sleep_unless_stopped(self._backoff(attempt)):
                break
            self.restarts += 1
            self._events("server.restart", server=self.spec.name, reason="crash", attempt=attempt)

    def _backoff(self, attempt: int) -> float:
        base = self._settings.restart_backoff_initial_s * 2.0 ** (attempt - 1)
        return float(min(self._settings.restart_backoff_max_s, base)) * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311

    async def _sleep_unless_stopped(self, delay: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    async def _run_once(self) -> str:
        """Run one child until it exits or we are stopped; return why it ended."""
        self.state = ServerState.STARTING
        child = self._spawn(self.spec, self.listener)
        self.child = child
        try:
            await child.start()
        except OSError as exc:
            self.listener.child_exited("spawn failed")
            return f"cannot start: {exc.strerror or exc}"
        reason = await self._handshake(child)
        if reason is None:
            self.state = ServerState.RUNNING
            self.started_at = time.monotonic()
            self.ready.set()
            self._events("server.start", server=self.spec.name, pid=child.pid)
            log.info("server %s: running (pid %s)", self.spec.name, child.pid)
            stopped = asyncio.create_task(self._stop.wait())
            exited = asyncio.create_task(child.exited.wait())
            await asyncio.wait({stopped, exited}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            exited.cancel()
            reason = f"exited with code {child.returncode}" if child.exited.is_set() else "stopped"
        self.ready.clear()
        await child.stop()
        self.listener.child_exited(reason)
        if self._stop.is_set():
            self._events("server.stop", server=self.spec.name)
        return reason

    async def _handshake(self, child: ChildProcess) -> str | None:
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


class Supervisor:
    """Owns every shared server's handle and the way children are spawned."""

    def __init__(self, settings: Settings, *, base_env: Mapping[str, str], events: EventSink) -> None:
        self.settings = settings
        self.base_env = dict(base_env)
        self.events = events
        self.handles: dict[str, ServerHandle] = {}

    def spawn(self, spec: ServerSpec, listener: ChildListener) -> ChildProcess:
        """A ChildProcess for `spec`, wired to `listener`, not yet started."""
        return ChildProcess(
            spec,
            base_env=self.base_env,
            line_max_bytes=self.settings.child_line_max_bytes,
            stderr_log=Path(self.settings.log_dir) / "servers" / f"{spec.name}.log",
            on_message=listener.child_message,
            on_oversize=listener.child_oversize,
            grace_s=self.settings.shutdown_grace_s,
        )

    def add(self, spec: ServerSpec, listener: ChildListener) -> ServerHandle:
        """Register a shared server."""
        handle = ServerHandle(spec, listener, settings=self.settings, spawn=self.spawn, events=self.events)
        self.handles[spec.name] = handle
        return handle

    async def stop_all(self) -> None:
        """Stop every child concurrently; returns when all are reaped."""
        await asyncio.gather(*(handle.stop() for handle in self.handles.values()))
