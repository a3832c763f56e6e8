"""A shared server wired to the shipped fakes: FakeChildren behind the supervisor's ChildFactory, a FakeClock."""

import math
from dataclasses import dataclass, field
from typing import Any

from mcp_bastion.config import ServerSpec, Settings
from mcp_bastion.relay.backend import Backend
from mcp_bastion.supervisor import ServerHandle, Supervisor
from mcp_bastion.testing import FakeChildren, FakeClock

CALL_TIMEOUT_S = 60.0


@dataclass
class Supervised:
    handle: ServerHandle
    backend: Backend
    children: FakeChildren
    clock: FakeClock
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def named(self, *names: str) -> list[tuple[str, dict[str, Any]]]:
        return [(name, fields) for name, fields in self.events if name in names]


def supervised(*, timeout_s: float = CALL_TIMEOUT_S, max_total_s: float = math.inf, **settings: Any) -> Supervised:
    """One shared server `fake` (not started) on fake children and a fake clock; `settings` override Settings."""
    config = Settings(**settings)
    events: list[tuple[str, dict[str, Any]]] = []
    children, clock = FakeChildren(), FakeClock()
    supervisor = Supervisor(
        config, base_env={}, events=lambda e, **f: events.append((e, f)), children=children, clock=clock
    )
    backend = Backend("fake", timeout_s=timeout_s, max_total_s=max_total_s, clock=clock, hold_s=config.restart_hold_s)
    backend.handle = supervisor.add(ServerSpec(name="fake", command="fake"), backend)
    return Supervised(backend.handle, backend, children, clock, events)
