"""The relay: many clients share one child, and their JSON-RPC ids never mix.

sinks    where a child's answer goes (an HTTP response waiting, or a session's stream)
backend  one child's pending map: id, progress-token and cancellation remapping, notification routing
sessions legacy client sessions (HTTP+SSE, Streamable HTTP Mcp-Session-Id): outbox byte budget, in-flight cap
quotas   open sessions and streams per principal
gateway  every server's backend plus the session registry; the one object transports talk to
"""

from mcp_bastion.relay.backend import Backend
from mcp_bastion.relay.gateway import Gateway, UnknownServer
from mcp_bastion.relay.sessions import ClientSession, SessionGone
from mcp_bastion.relay.sinks import ResponseSlot, Sink

__all__ = ["Backend", "ClientSession", "Gateway", "ResponseSlot", "SessionGone", "Sink", "UnknownServer"]
