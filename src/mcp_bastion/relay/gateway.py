"""Every configured server's backend, the supervisor, and the registry of legacy client sessions."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from mcp_bastion.audit import AuditLog
from mcp_bastion.config import ServerSpec, Settings
from mcp_bastion.errors import ChildUnavailable, GatewayError, ProtocolError
from mcp_bastion.jsonrpc import Message
from mcp_bastion.relay.backend import Backend
from mcp_bastion.relay.sessions import ClientSession, SessionGone
from mcp_bastion.supervisor import ServerHandle, ServerState, Supervisor

log = logging.getLogger("mcp_bastion.gateway")

READY_WAIT_S = 10.0  # a client arriving while its server (re)starts waits this long before a 503


class UnknownServer(GatewayError):
    """No server of that name is configured."""

    http_status = 404


class Gateway:
    """The object transports talk to: find a backend, open and close sessions."""

    def __init__(self, settings: Settings, servers: Mapping[str, ServerSpec], supervisor: Supervisor) -> None:
        self.settings = settings
        self.specs = dict(servers)
        self.supervisor = supervisor
        self.backends: dict[str, Backend] = {}
        self.handles: dict[str, ServerHandle] = {}
        self.sessions: dict[str, ClientSession] = {}
        self.audit: AuditLog | None = None  # set by create_app; transports write mcp.call lines to it
        self._reaper: asyncio.Task[None] | None = None
        for name, spec in self.specs.items():
            backend = Backend(name, timeout_s=self._timeout(spec))
            self.backends[name] = backend
            self.handles[name] = supervisor.add(spec, backend)

    def _timeout(self, spec: ServerSpec) -> float:
        return spec.timeout_seconds or self.settings.request_timeout_s

    async def start(self) -> None:
        """Start every auto-start server and the idle-session reaper."""
        for handle in self.handles.values():
            if handle.spec.auto_start and handle.spec.isolation == "shared":
                handle.start()
        self._reaper = asyncio.create_task(self._reap_idle(), name="session-reaper")

    async def close(self) -> None:
        """End every session and stop every child; returns when all are reaped."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self.end_session(s) for s in list(self.sessions.values())))
        await self.supervisor.stop_all()

    def spec(self, server: str) -> ServerSpec:
        """The spec of a configured server.

        Raises:
            UnknownServer: no such server.
        """
        spec = self.specs.get(server)
        if spec is None:
            raise UnknownServer(f"unknown server {server!r}")
        return spec

    async def shared_backend(self, server: str) -> Backend:
        """The ready shared backend of `server`, waiting briefly while it (re)starts.

        Raises:
            UnknownServer, ChildUnavailable
        """
        spec = self.spec(server)
        backend = self.backends[server]
        if spec.isolation != "shared":
            raise ProtocolError(f"server {server!r} runs one child per session; open a session first")
        if backend.ready:
            return backend
        handle = self.handles[server]
        if handle.state in (ServerState.STARTING, ServerState.RESTARTING):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handle.ready.wait(), READY_WAIT_S)
        if not backend.ready:
            raise ChildUnavailable(f"server {server!r} is not running (state: {handle.state})")
        return backend

    async def open_session(
        self, server: str, *, era: str, principal: str | None, init: Message | None
    ) -> ClientSession:
        """Open a legacy session; with isolation per-session this spawns and initializes the client's own child.

        Raises:
            UnknownServer, ChildUnavailable, ProtocolError (too many sessions)
        """
        spec = self.spec(server)
        if len(self.sessions) >= self.settings.max_sessions:
            raise ProtocolError("too many open sessions; try again later", status=503)
        if spec.isolation == "shared":
            backend = await self.shared_backend(server)
            session = ClientSession(server=server, era=era, principal=principal, backend=backend, own_backend=False)
        else:
            backend = Backend(server, timeout_s=self._timeout(spec))
            session = ClientSession(server=server, era=era, principal=principal, backend=backend, own_backend=True)
            backend.owner = session
            if init is not None:
                await self.start_session_child(session, init)
        backend.sessions.add(session)
        self.sessions[session.id] = session
        return session

    async def start_session_child(self, session: ClientSession, init: Message) -> None:
        """Spawn and initialize the private child of a per-session server with the client's own initialize.

        Raises:
            ChildUnavailable: it would not start or answer initialize.
        """
        spec = self.spec(session.server)
        backend = session.backend
        backend.init_params = _forwarded_init(init) or backend.init_params
        child = self.supervisor.spawn(spec, backend)
        try:
            await child.start()
            await asyncio.wait_for(backend.child_started(child), self.settings.initialize_timeout_s)
        except (OSError, TimeoutError, GatewayError) as exc:
            await child.stop()
            raise ChildUnavailable(f"server {spec.name!r} could not start a session child") from exc
        self.supervisor.events("server.start", server=spec.name, pid=child.pid, isolation="per-session")

    def find_session(self, session_id: str | None, *, server: str, principal: str | None) -> ClientSession:
        """The live session with that id, opened by the same principal for the same server.

        Raises:
            SessionGone: unknown, ended, another server's, or another principal's.
        """
        session = self.sessions.get(session_id or "")
        if session is None or session.server != server or session.principal != principal or session.closed.is_set():
            raise SessionGone("Session not found")
        session.touch()
        return session

    async def end_session(self, session: ClientSession) -> None:
        """Close a session: cancel its calls, detach it, and stop its own child if it has one."""
        if self.sessions.pop(session.id, None) is None:
            return
        session.close()
        backend = session.backend
        backend.sessions.discard(session)
        for request_id in list(session.inflight.values()):
            await backend.cancel(request_id, "session ended")
        if session.own_backend and backend.child is not None:
            child = backend.child
            await child.stop()
            backend.child_exited("session ended")
            self.supervisor.events("server.stop", server=session.server, pid=child.pid, isolation="per-session")

    async def _reap_idle(self) -> None:
        idle = self.settings.session_idle_timeout_s
        while True:
            await asyncio.sleep(min(idle / 4, 30.0))
            cutoff = time.monotonic() - idle
            for session in list(self.sessions.values()):
                if session.streams == 0 and session.last_seen < cutoff:
                    log.info("session %s… of %s idled out", session.id[:8], session.server)
                    await self.end_session(session)
            for session in list(self.sessions.values()):
                if session.closed.is_set():
                    await self.end_session(session)

    def server_view(self, name: str) -> dict[str, Any]:
        """State of one server for /health and /mcp/servers: never its command, args or env."""
        handle = self.handles[name]
        spec = handle.spec
        backend = self.backends[name]
        uptime = handle.uptime_s()
        sessions = sum(1 for s in self.sessions.values() if s.server == name)
        view: dict[str, Any] = {
            "name": name,
            "state": str(handle.state) if spec.isolation == "shared" else "per-session",
            "isolation": spec.isolation,
            "pid": handle.pid,
            "restarts": handle.restarts,
            "uptime_s": round(uptime, 1) if uptime is not None else None,
            "sessions": sessions,
            "pending": len(backend.pending),
            "calls": backend.calls,
            "last_error": handle.last_error,
        }
        return view


def _forwarded_init(init: Message | None) -> Message | None:
    """The client's own initialize params, passed to its private child (capabilities included)."""
    if init is None:
        return None
    params = init.get("params")
    return dict(params) if isinstance(params, dict) else None
