"""Child processes: spawn with a clean environment, pump NDJSON, restart with backoff, stop cleanly."""

from mcp_bastion.supervisor.process import ChildProcess
from mcp_bastion.supervisor.supervisor import ChildListener, ServerHandle, ServerState, Supervisor

__all__ = ["ChildListener", "ChildProcess", "ServerHandle", "ServerState", "Supervisor"]
