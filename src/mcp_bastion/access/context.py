"""The typed, frozen request context: placed in the ASGI scope by the route stage, refined by the next stages.

Each stage that learns something (client address, principal) stores a new context (`with_client`,
`with_principal`); nothing downstream reads a loose dict or parses the path again. Named tuples: immutable, typed,
and several times cheaper to build than frozen dataclasses on a path that builds three per request.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from mcp_bastion.access.routes import Route
from mcp_bastion.types import Scope

CONTEXT_KEY = "mcp_bastion.context"
NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class Principal(NamedTuple):
    """An authenticated caller.

    `id` is stable and unique per kind of credential (`env:admin`, `token:NAME`, `anonymous`); `name` is what
    people read. Sessions, quotas and audit filters key on `id`, never on `name`.
    """

    id: str
    name: str
    scopes: tuple[str, ...]
    via: str  # "bearer" | "cookie" | "none"
    credential: str | None = None  # hash of the token behind it: what a revocation ends
    login: str | None = None  # id hash of the login session, when it came by cookie
    expires: float | None = None  # when the credential expires (a login session never outlives it)
    audit: tuple[tuple[str, str], ...] = ()  # extra audit fields (an OAuth token's issuer, subject, client, jti)


class RequestContext(NamedTuple):
    """What the pipeline knows about one request."""

    request_id: str
    route: Route
    params: Mapping[str, str] = NO_PARAMS
    client_ip: str = "unknown"
    principal: Principal | None = None

    def with_client(self, client_ip: str) -> "RequestContext":
        """This context with the client address the address stage found."""
        return RequestContext(self.request_id, self.route, self.params, client_ip, self.principal)

    def with_principal(self, principal: Principal) -> "RequestContext":
        """This context with the authenticated principal."""
        return RequestContext(self.request_id, self.route, self.params, self.client_ip, principal)

    @property
    def server(self) -> str | None:
        """The `{server}` of the path, if the route has one."""
        return self.params.get("server")

    def who(self) -> dict[str, Any]:
        """Identity fields for an audit line."""
        principal = self.principal
        fields = {
            "request_id": self.request_id,
            "ip": self.client_ip,
            "principal": principal.name if principal else None,
            "principal_id": principal.id if principal else None,
        }
        if principal is not None and principal.audit:
            fields.update(principal.audit)
        return fields


def context_of(scope: Scope) -> RequestContext:
    """The context the route stage placed in the scope.

    Raises:
        KeyError: the request did not pass the route stage (a wiring bug, answered 500 by the outermost stage).
    """
    ctx: RequestContext = scope[CONTEXT_KEY]
    return ctx
