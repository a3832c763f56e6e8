"""One access decision: the route table, the typed request context and the one authorizer (scope grammar).

Pure: no I/O. The middleware asks these questions; nothing else reads the path or the scopes.
"""

from mcp_bastion.access.context import CONTEXT_KEY, Principal, RequestContext, context_of
from mcp_bastion.access.routes import ROUTES, Access, BadPath, Dialect, RateClass, Route, RouteTable
from mcp_bastion.access.scopes import (
    Grant,
    ServerLimits,
    grant_for,
    may_see_server,
    needed_scope,
    redact_view,
    valid_scope,
)

__all__ = [
    "CONTEXT_KEY",
    "ROUTES",
    "Access",
    "BadPath",
    "Dialect",
    "Grant",
    "Principal",
    "RateClass",
    "RequestContext",
    "Route",
    "RouteTable",
    "ServerLimits",
    "context_of",
    "grant_for",
    "may_see_server",
    "needed_scope",
    "redact_view",
    "valid_scope",
]
