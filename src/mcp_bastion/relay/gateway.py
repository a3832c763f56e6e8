"""Every configured server's backend, the supervisor, and the registry of legacy client sessions.

The registry enforces the session quotas: MAX_SESSIONS for everyone (503 + Retry-After past it),
MAX_SESSIONS_PER_PRINCIPAL and MAX_STREAMS_PER_PRINCIPAL per caller; stream-less sessions idle out after
SESSION_IDLE_NO_STREAM_S (alias SESSION_ORPHAN_TIMEOUT_S), and a per-session child goes with its session.

Shutdown (Issue 9 item 6): `begin_shutdown` ends every long stream at once with a final event and gives calls in
flight SHUTDOWN_GRACE_S; the ones still waiting then are answered "shutting down" (retryAfterSeconds) and cancelled
at the child; `close` (the lifespan's end) stops the children.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from mcp_bastion.audit import AuditLog
from mcp_bastion.config import ServerSpec, Settings
from mcp_bastion.errors import AtCapacity, ChildUnavailable, GatewayError, ProtocolError, QuotaExceeded, ShuttingDown
from mcp_bastion.jsonrpc import Message, error
from mcp_bastion.ratelimit import Limiter
from mcp_bastion.relay.backend import Backend
from mcp_bastion.relay.quotas import PrincipalQuota, Slot
from mcp_bastion.relay.replay import ReplayBuffer
from mcp_bastion.relay.sessions import SHUTDOWN_EVENT, SHUTDOWN_RETRY_AFTER_S, ClientSession, SessionGone
from mcp_bastion.supervisor import ServerHandle, Supervisor

log = logging.getLogger("mcp_bastion.gateway")

REAP_EVERY_MAX_S = 30.0  # the idle reaper runs at least this often (more often for short idle settings)
CAPACITY_RETRY_AFTER_S = 30  # a session slot frees when a client leaves or idles out: seconds to minutes


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
        self._watched: dict[asyncio.Event, str | None] = {}  # end events of long streams that have no session
        self.session_quota = PrincipalQuota("sessions", settings.max_sessions_per_principal)
        self.stream_quota = PrincipalQuota("streams", settings.max_streams_per_principal)
        self._opening = 0  # sessions admitted but still starting (a per-session child initializing)
        self.audit: AuditLog | None = None  # set by create_app; transports write mcp.call lines to it
        self.limiter: Limiter | None = None  # set by create_app; counts mcp.json's per-tool rate limits
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.closing = False  # set by begin_shutdown: new requests are refused, long streams end
        self._grace: asyncio.TimerHandle | None = None
        # Cluster mode (Issue 12): session ids sealed to name this instance and the principal; random hex otherwise.
        self.mint_session_id: Callable[[str | None], str] | None = None
        for name, spec in self.specs.items():
            backend = self._backend(spec, hold_s=settings.restart_hold_s)
            self.backends[name] = backend
            self.handles[name] = backend.handle = supervisor.add(spec, backend)

    def _backend(self, spec: ServerSpec, hold_s: float = 0.0) -> Backend:
        """The relay state of a child of `spec`, with its call limits (idle timeout, total maximum: Issue 11 item 2)."""
        return Backend(
            spec.name,
            timeout_s=spec.timeout_seconds or self.settings.request_timeout_s,
            max_total_s=spec.max_total_seconds or self.settings.request_max_total_s,
            clock=self.supervisor.clock,
            hold_s=hold_s,
            share_logs=spec.share_logs,
        )

    async def start(self) -> None:
        """Start every auto-start server and the idle-session reaper."""
        for handle in self.handles.values():
            if handle.spec.auto_start and handle.spec.isolation == "shared":
                handle.start()
        self._reaper = asyncio.create_task(self._reap_idle(), name="session-reaper")

    def begin_shutdown(self, grace_s: float) -> None:
        """Stop taking work: end every long stream now (after its final event), fail calls still waiting in `grace_s`.

        Idempotent. Issue 9 item 6: streams no longer hold the shutdown for the whole grace, and a call the grace
        cuts short gets a JSON-RPC error with a retry hint instead of a dropped connection.
        """
        if self.closing:
            return
        self.closing = True
        streams = len(self._watched) + sum(session.streams for session in self.sessions.values())
        for session in self.sessions.values():
            session.end_streams(SHUTDOWN_EVENT)
        for event in self._watched:
            event.set()
        calls = sum(len(backend.pending) for backend in self._all_backends())
        log.info("shutting down: %d stream(s) ended, %d call(s) in flight get %ss", streams, calls, grace_s)
        self._record("gateway.shutdown", outcome="begun", sessions=len(self.sessions), in_flight=calls)
        self._grace = asyncio.get_running_loop().call_later(grace_s, lambda: self._spawn(self.fail_in_flight()))

    async def fail_in_flight(self) -> None:
        """Answer every call still waiting on a child "shutting down" (with retryAfterSeconds), then cancel it there."""
        exc = ShuttingDown(SHUTDOWN_RETRY_AFTER_S)
        failed = 0
        for backend in self._all_backends():
            for request_id, pending in list(backend.pending.items()):
                # Delivered first: the cancellation that follows finds the answer given and adds none of its own.
                pending.sink.deliver(error(pending.client_id, exc.jsonrpc_code, exc.message, exc.data))
                await backend.cancel(request_id, "the gateway is shutting down")
                failed += 1
        if failed:
            log.warning("shutdown grace over: %d call(s) still in flight answered 'shutting down'", failed)
            self._record("gateway.shutdown", outcome="grace_over", failed=failed)

    def _all_backends(self) -> list[Backend]:
        """The shared backends and every session's own one."""
        own = [s.backend for s in self.sessions.values() if s.own_backend]
        return [*self.backends.values(), *own]

    async def close(self) -> None:
        """End every session and stop every child; returns when all are reaped."""
        if self._grace is not None:
            self._grace.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*self._background, return_exceptions=True)
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
        """The ready shared backend of `server`, waiting up to RESTART_HOLD_S while it (re)starts.

        Raises:
            UnknownServer, ChildUnavailable (with a retry hint when the server is expected back)
        """
        spec = self.spec(server)
        backend = self.backends[server]
        if spec.isolation != "shared":
            raise ProtocolError(f"server {server!r} runs one child per session; open a session first")
        if backend.ready:
            return backend
        handle = self.handles[server]
        if handle.recovering:
            await handle.wait_ready(self.settings.restart_hold_s)
        if not backend.ready:
            text = f"server {server!r} is not running (state: {handle.state})"
            raise ChildUnavailable(text, retry_after_s=handle.retry_after_s())
        return backend

    async def open_session(
        self, server: str, *, era: str, principal: str | None, init: Message | None, credential: str | None = None
    ) -> ClientSession:
        """Open a legacy session; with isolation per-session this spawns and initializes the client's own child.

        Raises:
            UnknownServer, ChildUnavailable, AtCapacity (MAX_SESSIONS), QuotaExceeded (this principal's cap)
        """
        spec = self.spec(server)
        if len(self.sessions) + self._opening >= self.settings.max_sessions:
            limit = self.settings.max_sessions
            self._record("quota.exceeded", outcome="denied", principal=principal, server=server, quota="sessions")
            raise AtCapacity(
                f"the gateway holds its maximum of {limit} sessions; retry later",
                limit=limit,
                retry_after_s=CAPACITY_RETRY_AFTER_S,
            )
        self._claim(self.session_quota, principal, server)
        self._opening += 1
        try:
            session = await self._new_session(spec, era, principal, init)
        except BaseException:
            self.session_quota.release(principal)
            raise
        finally:
            self._opening -= 1
        session.credential = credential
        if self.mint_session_id is not None:
            session.id = self.mint_session_id(principal)
        session.backend.sessions.add(session)
        self.sessions[session.id] = session
        return session

    def watch(self, credential: str | None) -> asyncio.Event:
        """An event set when `credential` is revoked or the gateway shuts down: long streams without a session wait
        on it."""
        event = asyncio.Event()
        self._watched[event] = credential
        if self.closing:
            event.set()
        return event

    def unwatch(self, event: asyncio.Event) -> None:
        """The stream ended; stop watching its credential."""
        self._watched.pop(event, None)

    def credentials_in_use(self) -> set[str]:
        """Every credential an open session or a watched stream belongs to."""
        found = {s.credential for s in self.sessions.values() if s.credential is not None}
        return found | {credential for credential in self._watched.values() if credential is not None}

    async def end_credential(self, credential: str, reason: str) -> int:
        """End every session and watched stream opened with `credential` (revoked, rotated or expired); audited."""
        ended = 0
        for session in [s for s in self.sessions.values() if s.credential == credential]:
            self._record(
                "session.revoked",
                outcome="ended",
                reason=reason,
                kind="mcp",
                principal=session.principal,
                server=session.server,
                session=session.public_id,
            )
            await self.end_session(session)
            ended += 1
        for event, watched in list(self._watched.items()):
            if watched == credential:
                self._record("session.revoked", outcome="ended", reason=reason, kind="stream")
                event.set()
                self._watched.pop(event, None)
                ended += 1
        return ended

    async def _new_session(
        self, spec: ServerSpec, era: str, principal: str | None, init: Message | None
    ) -> ClientSession:
        own = spec.isolation != "shared"
        backend = self._backend(spec) if own else await self.shared_backend(spec.name)
        session = ClientSession(
            server=spec.name,
            era=era,
            principal=principal,
            backend=backend,
            own_backend=own,
            outbox_max_bytes=self.settings.outbox_max_bytes,
            max_inflight=self.settings.max_inflight_per_session,
            replay=self._replay_buffer(era),
        )
        session.on_overflow = self._overflowed
        if own:
            backend.owner = session
            if init is not None:
                await self.start_session_child(session, init)
        return session

    def claim_stream(self, principal: str | None, server: str) -> Slot:
        """One of `principal`'s stream slots, held while a GET / SSE stream's connection is open.

        Raises:
            QuotaExceeded: the principal already holds MAX_STREAMS_PER_PRINCIPAL streams.
        """
        return self._claim(self.stream_quota, principal, server)

    def _claim(self, quota: PrincipalQuota, principal: str | None, server: str) -> Slot:
        try:
            return quota.claim(principal)
        except QuotaExceeded as exc:
            self.quota_refused(exc, principal=principal, server=server)
            raise

    def quota_refused(
        self, exc: QuotaExceeded, *, principal: str | None, server: str, session: str | None = None
    ) -> None:
        """The one audit line of a quota refusal."""
        self._record(
            "quota.exceeded",
            outcome="denied",
            principal=principal,
            server=server,
            session=session,
            quota=exc.quota,
            limit=exc.limit,
        )

    def inflight_refused(self, session: ClientSession, exc: QuotaExceeded) -> None:
        """Audit a session's first in-flight refusal (a flood of them would be one line each otherwise)."""
        if not session.inflight_refused:
            session.inflight_refused = True
            self.quota_refused(exc, principal=session.principal, server=session.server, session=session.public_id)

    def _overflowed(self, session: ClientSession, size: int) -> None:
        log.warning(
            "session %s of %s: its client stopped reading (%d bytes owed); ended",
            session.public_id,
            session.server,
            size,
        )
        self._record(
            "stream.overflow",
            outcome="closed",
            principal=session.principal,
            server=session.server,
            session=session.public_id,
            bytes=size,
            limit=session.outbox_max_bytes,
        )
        self._spawn(self.end_session(session))

    def _replay_buffer(self, era: str) -> ReplayBuffer | None:
        """A Streamable session's event ids and replay buffer (Issue 11 item 7); HTTP+SSE has no resumption."""
        settings = self.settings
        if era != "streamable" or settings.sse_replay_max_events == 0:
            return None
        return ReplayBuffer(settings.sse_replay_max_events, settings.sse_replay_max_bytes)

    def _record(self, event: str, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.record(event, **fields)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
            async with self.supervisor.spawn_slot():  # SPAWN_CONCURRENCY children start at once (Issue 9 item 4)
                await child.start()
                await asyncio.wait_for(backend.child_started(child), self.settings.initialize_timeout_s)
        except (OSError, TimeoutError, GatewayError) as exc:
            await child.stop()
            raise ChildUnavailable(f"server {spec.name!r} could not start a session child") from exc
        self.supervisor.events("server.start", server=spec.name, pid=child.pid, isolation="per-session")

    def find_session(
        self, session_id: str | None, *, server: str, principal: str | None, credential: str | None = None
    ) -> ClientSession:
        """The live session with that id, opened by the same principal for the same server; bound from now on to
        `credential`, the valid credential of that principal the request presents.

        A client that refreshed its OAuth token (a new token, the same principal) keeps its session: the session
        follows the newest credential used with it, so it ends when that one is revoked or expires, not the first.

        Raises:
            SessionGone: unknown, ended, another server's, or another principal's.
        """
        session = self.sessions.get(session_id or "")
        if session is None or session.server != server or session.principal != principal or session.closed.is_set():
            raise SessionGone("Session not found")
        if credential is not None:
            session.credential = credential
        session.touch()
        return session

    async def end_session(self, session: ClientSession) -> None:
        """Close a session: cancel its calls, detach it, and stop its own child if it has one."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.session_quota.release(session.principal)
        session.close()
        backend = session.backend
        backend.sessions.discard(session)
        for request_id in list(session.inflight.values()):
            await backend.cancel(request_id, "session ended")
        if not session.own_backend:
            await backend.release(session)  # Issue 11 items 3 and 4: its subscriptions and log level leave with it
        if session.own_backend and backend.child is not None:
            child = backend.child
            await child.stop()
            backend.child_exited("session ended")
            self.supervisor.events("server.stop", server=session.server, pid=child.pid, isolation="per-session")

    @property
    def idle_no_stream_s(self) -> float:
        """How long a session without an open stream lives without a request (SESSION_IDLE_TIMEOUT_S caps it)."""
        return min(self.settings.session_idle_no_stream_s, self.settings.session_idle_timeout_s)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle_no_stream_s / 4, REAP_EVERY_MAX_S))
            await self.reap(time.monotonic())

    async def reap(self, now: float) -> None:
        """End closed sessions, and sessions with no open stream and no call in flight idle for `idle_no_stream_s`.

        A session with an open stream is a client that is there: it is bounded by MAX_STREAMS_PER_PRINCIPAL, not
        reaped (its clock restarts when the stream closes). A session whose client vanished without DELETE (TCP
        reset) is reaped here, and its per-session child stopped with it (Issue 9 item 7).
        """
        idle = self.idle_no_stream_s
        for session in list(self.sessions.values()):
            if session.closed.is_set():
                await self.end_session(session)
            elif not session.readers and not session.inflight and session.last_seen < now - idle:
                log.info("session %s of %s idled out", session.public_id, session.server)
                self._record(
                    "session.expired",
                    outcome="ended",
                    reason="idle without a stream",
                    kind="mcp",
                    principal=session.principal,
                    server=session.server,
                    session=session.public_id,
                    idle_s=round(now - session.last_seen, 1),
                )
                await self.end_session(session)

    def load(self) -> tuple[int, int]:
        """Sessions held here and children running here (shared ones and per-session ones)."""
        own = [session.backend for session in self.sessions.values() if session.own_backend]
        children = sum(1 for backend in [*self.backends.values(), *own] if backend.child is not None)
        return len(self.sessions), children

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
