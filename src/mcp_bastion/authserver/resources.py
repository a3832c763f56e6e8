"""The resources a grant can be for (RFC 8707) and the scopes that make sense for each.

A resource is this gateway (`PUBLIC_URL`) or one of its servers (`PUBLIC_URL/mcp/NAME`). Scopes are the gateway's
own grammar (`server:NAME`, `tool:NAME/TOOL` ...); `admin` is never granted to an OAuth client: management stays
with named tokens and the dashboard login.
"""

import fnmatch
from collections.abc import Iterable

from mcp_bastion.access.scopes import parse_scope
from mcp_bastion.security import ADMIN_SCOPE

MAX_REQUESTED_SCOPES = 64  # a consent page lists them all: more is abuse, not a need


class ForeignResource(Exception):
    """A `resource` that names neither this gateway nor one of its servers."""


class Resources:
    """This gateway's resource identifiers."""

    def __init__(self, public_url: str, servers: Iterable[str]) -> None:
        self.root = public_url.rstrip("/")
        self.servers = tuple(servers)

    def server_of(self, resource: str) -> str | None:
        """The server a resource names, or None for the gateway itself.

        Raises:
            ForeignResource: not one of this gateway's resources.
        """
        if resource.rstrip("/") == self.root:
            return None
        prefix = f"{self.root}/mcp/"
        name = resource.removeprefix(prefix) if resource.startswith(prefix) else None
        if name is None or name not in self.servers:
            raise ForeignResource(resource)
        return name

    def offered(self, resource: str, requested: str | None) -> tuple[str, ...]:
        """The scopes a consent page offers for a request: the valid ones asked for, narrowed to the resource's
        server (`server:*` becomes one choice per server), or the whole resource when none is asked for.

        Raises:
            ForeignResource
        """
        server = self.server_of(resource)
        reach = (server,) if server is not None else self.servers
        asked = [s for s in (requested or "").split()[:MAX_REQUESTED_SCOPES] if s != ADMIN_SCOPE]
        offered: list[str] = []
        for scope in asked:
            offered += _narrowed(scope, reach)
        if not offered:
            offered = [f"server:{name}" for name in reach]
        return tuple(dict.fromkeys(offered))

    def bound(self, resource: str, scopes: Iterable[str]) -> tuple[str, ...]:
        """Of `scopes`, those the resource allows: a token for one server reaches that server only (audience binding
        enforced again on every request, whatever the grant says). Unknown resource: none."""
        try:
            server = self.server_of(resource)
        except ForeignResource:
            return ()
        reach = (server,) if server is not None else self.servers
        return tuple(s for s in scopes if _exactly_within(s, reach))


def _narrowed(scope: str, reach: tuple[str, ...]) -> list[str]:
    """A requested scope as concrete choices within `reach` (no globs over server names survive consent)."""
    parsed = parse_scope(scope)
    if parsed is None or parsed[0] == ADMIN_SCOPE:
        return []
    kind, server_glob, item = parsed
    matches = [name for name in reach if fnmatch.fnmatchcase(name, server_glob)]
    if kind == "server":
        return [f"server:{name}" for name in matches]
    return [f"{kind}:{name}/{item}" for name in matches]


def _exactly_within(scope: str, reach: tuple[str, ...]) -> bool:
    parsed = parse_scope(scope)
    return parsed is not None and parsed[0] != ADMIN_SCOPE and parsed[1] in reach
