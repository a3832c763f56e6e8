"""Revocation reaches everything a credential opened: login sessions, MCP sessions and their streams.

A token can be revoked, rotated or expire in this process (the dashboard), in another (the CLI on the same SQLite
store) or on another instance (Redis). So the check is a sweep: every REVOCATION_CHECK_S, each credential in use
is looked up once; whatever belongs to one that is no longer valid is ended and audited. The dashboard also calls
`sweep()` right after it revokes a token, so the common case is immediate.
"""

import asyncio
import contextlib
import logging
from typing import Any

from mcp_bastion.audit import AuditLog
from mcp_bastion.cluster.revocations import MCP_SESSION, SWEEP, RevocationChannel
from mcp_bastion.middleware.auth import TOKEN_KEY, Authenticator
from mcp_bastion.relay import Gateway
from mcp_bastion.store import Store, StoreError

log = logging.getLogger("mcp_bastion.revocation")

PUBLIC_ID_CHARS = 16  # login sessions are named by a prefix of their hash, as in /admin/sessions


class RevocationWatcher:
    """Ends what revoked, rotated or expired credentials opened."""

    def __init__(
        self, *, gateway: Gateway, store: Store, authenticator: Authenticator, audit: AuditLog, every_s: float
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.auth = authenticator
        self.audit = audit
        self.every_s = every_s
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.sweeps = 0  # completed passes (for /health-style introspection and tests)
        self.channel: RevocationChannel | None = None  # cluster mode (Issue 12 item 4): every instance hears

    def start(self) -> None:
        """Sweep every `every_s` until closed."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="revocation-sweep")

    async def close(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.sweep()
            except Exception:  # the top of a task: log it and keep sweeping
                log.exception("revocation sweep failed")

    async def revoked(self) -> int:
        """A token or a login session was revoked here: end what it opened here now, and tell every instance."""
        ended = await self.sweep()
        if self.channel is not None:
            await self.channel.publish(SWEEP)
        return ended

    async def heard(self, message: dict[str, Any]) -> None:
        """A revocation on another instance (or by the CLI): sweep now, or end the one MCP session it names."""
        if message["kind"] != MCP_SESSION:
            await self.sweep()
            return
        public_id = message.get("session")
        for session in [s for s in self.gateway.sessions.values() if s.public_id == public_id]:
            self.audit.record(
                "session.revoked",
                outcome="ended",
                reason=f"revoked on instance {str(message.get('from'))[:64]}",
                kind="mcp",
                principal=session.principal,
                server=session.server,
                session=session.public_id,
            )
            await self.gateway.end_session(session)

    async def sweep(self) -> int:
        """One pass; returns how many sessions and streams it ended. A store that cannot answer ends nothing
        (every new request fails closed on it anyway)."""
        async with self._lock:
            try:
                return await self._sweep()
            except StoreError:
                return 0
            finally:
                self.sweeps += 1

    async def _sweep(self) -> int:
        valid: dict[str, bool] = {}
        ended = 0
        for login in await self.store.list_sessions():
            digest = login.extra.get(TOKEN_KEY, "")
            if not await self._valid(digest, valid):
                await self.store.delete_session(login.id_hash)
                self.audit.record(
                    "session.revoked",
                    outcome="ended",
                    reason="its token was revoked, rotated or expired",
                    kind="login",
                    principal=login.principal,
                    session=login.id_hash[:PUBLIC_ID_CHARS],
                )
                ended += 1
        for credential in self.gateway.credentials_in_use():
            if not await self._valid(credential, valid):
                ended += await self.gateway.end_credential(credential, "its token was revoked, rotated or expired")
        return ended

    async def _valid(self, digest: str, known: dict[str, bool]) -> bool:
        if digest not in known:
            principal, _ = await self.auth.by_hash(digest, touch=False) if digest else (None, "unbound")
            known[digest] = principal is not None
        return known[digest]
