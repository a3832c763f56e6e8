"""Issue 11 item 5: the calls parked between the rounds of a 2026-07-28 multi-round-trip request, on this instance.

Between rounds a call stays in flight on the client's own child (a gateway session never handed out), held by an
`InputStates` entry: single use, `ttl_s` (INPUT_STATE_TTL_S), INPUT_STATES_PER_PRINCIPAL and INPUT_STATES_MAX. The
child is stopped when the state expires, when the call ends (answered, failed, cancelled) or its client leaves.

`requestState` is sealed (`sealing.Sealer`, purpose REQUEST_STATE_PURPOSE) over the state id, the server, a keyed digest
of the principal, the method and the instance holding the child. It is refused with -32602 (HTTP 400, `data.reason`)
when it does not open (`forged`, `expired`), names another server or principal (`other-server`, `other-principal`),
was used already or its call ended (`replayed`), or comes with another request than the one it answers
(`other-request`). One issued by another instance of a cluster is refused the same way with `data.reason`
`other-instance` and `data.instance`, the instance that holds the child: a forwarder routes on `instance_of(...)`
before a request gets that far.
"""

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from mcp_bastion.errors import INVALID_PARAMS, ProtocolError, QuotaExceeded
from mcp_bastion.jsonrpc import Message
from mcp_bastion.relay.gateway import Gateway
from mcp_bastion.relay.input_required import ERA, ChildAsks, InputBridge, child_init, child_watch, target_of
from mcp_bastion.sealing import Sealer, SealError
from mcp_bastion.supervisor import Clock
from mcp_bastion.supervisor.clock import Cancellable

REQUEST_STATE_PURPOSE = "mcp-bastion request-state v1"
INPUT_STATE_TTL_S = 120.0  # a person answering an elicitation takes seconds to minutes; a child waits no longer
INPUT_STATES_PER_PRINCIPAL = 8  # each holds a running child: one caller parks only a few at once
INPUT_STATES_MAX = 128  # every caller together (MAX_SESSIONS bounds the children too)
INPUT_RETRY_AFTER_S = 5  # a parked state frees when its client answers or it expires
PRINCIPAL_HASH_CHARS = 16  # the principal is bound by a keyed digest prefix: the client can read a sealed payload
INSTANCE_ID_BYTES = 8


def new_instance_id() -> str:
    """A per-process instance id (cluster mode passes its configured one instead)."""
    return secrets.token_hex(INSTANCE_ID_BYTES)


def instance_of(sealer: Sealer, sealed: Any, *, now: float) -> str | None:
    """The instance holding the child of a requestState (for a cluster forwarder); None if it does not open."""
    try:
        payload = sealer.open(REQUEST_STATE_PURPOSE, sealed, now=now)
    except SealError:
        return None
    instance = payload.get("instance")
    return instance if isinstance(instance, str) else None


class StateRefused(ProtocolError):
    """A requestState this instance will not take (-32602); `reason` goes to the audit line."""

    def __init__(self, text: str, reason: str, **data: Any) -> None:
        super().__init__(f"invalid requestState: {text}", code=INVALID_PARAMS, data={"reason": reason, **data})
        self.reason = reason


class InputStates:
    """The calls parked between rounds on this instance, and the sealed states that name them."""

    def __init__(
        self,
        gateway: Gateway,
        sealer: Sealer,
        instance_id: str,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.gateway = gateway
        self.sealer = sealer
        self.instance_id = instance_id
        self.clock = clock or gateway.supervisor.clock
        self.wall = wall
        self.ttl_s = INPUT_STATE_TTL_S
        self.per_principal = INPUT_STATES_PER_PRINCIPAL
        self.max_states = INPUT_STATES_MAX
        self.parked: dict[str, InputBridge] = {}
        self._timers: dict[str, Cancellable] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    async def open(
        self, server: str, message: Message, *, principal: str | None, credential: str | None
    ) -> InputBridge:
        """A fresh child for a request without requestState (initialized with the client's declared capabilities).

        Raises:
            UnknownServer, ChildUnavailable, AtCapacity, QuotaExceeded: as any session opening.
        """
        init = child_init(message)
        session = await self.gateway.open_session(
            server, era=ERA, principal=principal, init=init, credential=credential
        )
        bridge = InputBridge(session, message, self.park)
        session.post_streams[message["id"]] = ChildAsks(bridge)
        child = session.backend.child
        if child is not None:
            bridge.watch = asyncio.ensure_future(child_watch(session.backend, child))
        return bridge

    def park(self, bridge: InputBridge) -> str:
        """Keep `bridge` until its client answers (single use, `ttl_s`); returns its sealed requestState.

        Raises:
            QuotaExceeded: the principal, or the instance, holds its maximum of parked calls.
        """
        principal = bridge.session.principal
        held = sum(1 for b in self.parked.values() if b.session.principal == principal)
        if held >= self.per_principal or len(self.parked) >= self.max_states:
            limit = self.per_principal if held >= self.per_principal else self.max_states
            exc = QuotaExceeded(
                f"too many requests wait for input (limit {limit}); answer or abandon some first",
                quota="input_states",
                limit=limit,
                retry_after_s=INPUT_RETRY_AFTER_S,
            )
            self.gateway.quota_refused(exc, principal=principal, server=bridge.session.server)
            raise exc
        state_id = secrets.token_urlsafe(18)
        self.parked[state_id] = bridge
        bridge.state_id = state_id
        self._timers[state_id] = self.clock.call_later(self.ttl_s, self._expire, state_id)
        payload = {
            "id": state_id,
            "server": bridge.session.server,
            "principal": principal_tag(self.sealer, principal),
            "method": bridge.method,
            "instance": self.instance_id,
        }
        return self.sealer.seal(REQUEST_STATE_PURPOSE, payload, now=self.wall(), ttl_s=self.ttl_s)

    def claim(self, sealed: Any, *, server: str, principal: str | None, message: Message) -> InputBridge:
        """The parked call a retry's requestState names, taken out (single use).

        Raises:
            StateRefused: see the module docstring for each reason.
        """
        if not isinstance(sealed, str):
            raise StateRefused("it must be a string", "malformed")
        try:
            payload = self.sealer.open(REQUEST_STATE_PURPOSE, sealed, now=self.wall())
        except SealError as exc:
            reason = "expired" if "expired" in exc.message else "forged"
            raise StateRefused(exc.message, reason) from exc
        instance = payload.get("instance")
        if instance != self.instance_id:
            text = f"it was issued by gateway instance {instance!r}, which holds its call; this one cannot serve it"
            raise StateRefused(text, "other-instance", instance=instance)
        if payload.get("server") != server:
            raise StateRefused("it was issued for another server", "other-server")
        if payload.get("principal") != principal_tag(self.sealer, principal):
            raise StateRefused("it was issued to another caller", "other-principal")
        state_id = str(payload.get("id"))
        bridge = self.parked.get(state_id)
        if bridge is None:
            raise StateRefused("it was used already, or its call ended", "replayed")
        if bridge.method != message["method"] or bridge.target != target_of(message):
            raise StateRefused("a retry must repeat the request it answers (method and name)", "other-request")
        self._unpark(state_id)
        return bridge

    async def end(self, bridge: InputBridge) -> None:
        """The call is over (or abandoned): its child goes (with the call, if still in flight)."""
        if bridge.state_id is not None:
            self._unpark(bridge.state_id)
        if bridge.watch is not None:
            bridge.watch.cancel()
        await self.gateway.end_session(bridge.session)

    async def close(self) -> None:
        """Shutdown: end every parked call (its child goes) and wait for the endings under way."""
        for bridge in list(self.parked.values()):
            await self.end(bridge)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _unpark(self, state_id: str) -> None:
        bridge = self.parked.pop(state_id, None)
        if bridge is not None:
            bridge.state_id = None
        timer = self._timers.pop(state_id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, state_id: str) -> None:
        bridge = self.parked.get(state_id)
        if bridge is None:
            return
        session = bridge.session
        if self.gateway.audit is not None:
            self.gateway.audit.record(
                "session.expired",
                outcome="ended",
                reason="requestState not used in time",
                kind="input",
                principal=session.principal,
                server=session.server,
                session=session.public_id,
                ttl_s=self.ttl_s,
            )
        task = asyncio.ensure_future(self.end(bridge))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def principal_tag(sealer: Sealer, principal: str | None) -> str:
    """What a sealed state says about its principal: keyed, so its holder cannot confirm a guessed principal."""
    return sealer.tag(REQUEST_STATE_PURPOSE, (principal or "").encode("utf-8"))[:PRINCIPAL_HASH_CHARS]
