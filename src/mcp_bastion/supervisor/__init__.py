"""Child processes: spawn with a clean environment, pump NDJSON, restart with backoff, stop cleanly."""

from mcp_bastion.supervisor.clock import Clock, SystemClock
from mcp_bastion.supervisor.liveness import Liveness
from mcp_bastion.supervisor.process import Child, ChildProcess
from mcp_bastion.supervisor.supervisor import ChildFactory, ChildListener, ServerHandle, ServerState, Supervisor

__all__ = [
    "Child",
    "ChildFactory",
    "ChildListener",
    "ChildProcess",
    "Clock",
    "Liveness",
    "ServerHandle",
    "ServerState",
    "Supervisor",
    "SystemClock",
]
