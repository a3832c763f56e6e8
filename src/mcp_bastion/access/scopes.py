"""The one scope grammar and the one authorizer: routes, servers, tools, resources, prompts and MCP methods.

Grammar (every server part is a glob over server names, read the same way everywhere):
    admin                       everything, management included
    server:SERVER               every MCP method on the matching servers
    tool:SERVER/TOOL            tools/call of the matching tools (TOOL defaults to *)
    resource:SERVER/URI         resources/read, subscribe, unsubscribe of the matching URIs
    prompt:SERVER/PROMPT        prompts/get of the matching prompts
A token holding only item scopes on a server reaches `initialize`, `ping`, the lists (filtered to what it may use)
and the items it names; any other method is refused (deny by default). A server's own limits in mcp.json
(`allowedTools`, `allowedResources`, `allowedPrompts`) narrow every caller, admin included; once one of them is set,
a kind of item it does not list is closed.
"""

import fnmatch
import functools
import re
from dataclasses import dataclass
from typing import Any

from mcp_bastion.access.routes import Access, Route
from mcp_bastion.security import ADMIN_SCOPE

ITEM_KINDS = ("tool", "resource", "prompt")
SCOPE_PART = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces: scopes travel in headers and audit lines
SERVER_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,64}")
GRANT_CACHE_MAX = 4096  # (scopes, server, limits) combinations remembered; tokens have few scopes

# Methods every caller of a server may use: the handshake, liveness, discovery and (filtered) lists.
ALWAYS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "subscriptions/listen",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    }
)
RESOURCE_METHODS = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})
LIST_FIELDS = {
    "tools/list": ("tools", "tool", "name"),
    "prompts/list": ("prompts", "prompt", "name"),
    "resources/list": ("resources", "resource", "uri"),
    "resources/templates/list": ("resourceTemplates", "resource", "uriTemplate"),
}


def parse_scope(scope: str) -> tuple[str, str, str] | None:
    """(kind, server glob, item glob) of a valid scope, or None. `admin` is ("admin", "*", "*")."""
    if scope == ADMIN_SCOPE:
        return ADMIN_SCOPE, "*", "*"
    kind, sep, rest = scope.partition(":")
    if not sep or not SCOPE_PART.fullmatch(rest):
        return None
    if kind == "server":
        return (kind, rest, "*") if SERVER_GLOB.fullmatch(rest) else None
    if kind in ITEM_KINDS:
        server, _, item = rest.partition("/")
        return (kind, server, item or "*") if SERVER_GLOB.fullmatch(server) else None
    return None


def valid_scope(scope: str) -> bool:
    """A scope of the grammar above."""
    return parse_scope(scope) is not None


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """A server's own exposure limits from mcp.json (None: that kind is not limited)."""

    tools: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    prompts: tuple[str, ...] | None = None

    @property
    def restricted(self) -> bool:
        """Whether any limit is set (then every unlisted kind is closed)."""
        return self.tools is not None or self.resources is not None or self.prompts is not None

    def allows(self, kind: str, name: str) -> bool:
        """Whether the server exposes this item."""
        if not self.restricted:
            return True
        patterns: tuple[str, ...] | None = getattr(self, kind + "s")
        return patterns is not None and any(item_matches(kind, name, p) for p in patterns)


NO_LIMITS = ServerLimits()
DOT_SEGMENT = re.compile(r"(^|[/\\])(\.|%2e){1,2}([/\\?#]|$)", re.IGNORECASE)


def item_matches(kind: str, name: str, pattern: str) -> bool:
    """Whether `name` fits a scope's item glob.

    A resource URI with a dot segment (`..`, `.`, encoded or with `\\`) fits no pattern: a child that resolves it
    would reach outside the prefix the glob names (`resource:files/file:///srv/public/*`).
    """
    if kind == "resource" and ("\\" in name or DOT_SEGMENT.search(name)):
        return False
    return fnmatch.fnmatchcase(name, pattern)


class Grant:
    """What one set of scopes may do on one server. Built once per (scopes, server, limits) and cached."""

    __slots__ = ("full", "limits", "patterns", "server_wide")

    def __init__(self, scopes: tuple[str, ...], server: str, limits: ServerLimits) -> None:
        self.limits = limits
        self.server_wide = False
        self.patterns: dict[str, list[str]] = {kind: [] for kind in ITEM_KINDS}
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None or not fnmatch.fnmatchcase(server, parsed[1]):
                continue
            kind, _, item = parsed
            if kind in (ADMIN_SCOPE, "server"):
                self.server_wide = True
            else:
                self.patterns[kind].append(item)
        self.full = self.server_wide and not limits.restricted  # the fast path: nothing to check or filter

    @property
    def reaches_server(self) -> bool:
        """Whether the scopes reach this server at all."""
        return self.server_wide or any(self.patterns.values())

    def allows(self, kind: str, name: Any) -> bool:
        """Whether the caller may use this tool, resource (by URI) or prompt."""
        if self.full:
            return True
        if not isinstance(name, str):
            return False
        if not self.server_wide and not any(item_matches(kind, name, p) for p in self.patterns[kind]):
            return False
        return self.limits.allows(kind, name)

    def may(self, method: str, params: Any) -> tuple[bool, str | None]:
        """Whether a request may reach the server, and the item it names (for the audit line and the error)."""
        if self.full or method in ALWAYS:
            return True, None
        params = params if isinstance(params, dict) else {}
        if method == "tools/call":
            return self.allows("tool", params.get("name")), _text(params.get("name"))
        if method == "prompts/get":
            return self.allows("prompt", params.get("name")), _text(params.get("name"))
        if method in RESOURCE_METHODS:
            return self.allows("resource", params.get("uri")), _text(params.get("uri"))
        if method == "completion/complete":
            ref = params.get("ref") if isinstance(params.get("ref"), dict) else {}
            if ref.get("type") == "ref/prompt":
                return self.allows("prompt", ref.get("name")), _text(ref.get("name"))
            if ref.get("type") == "ref/resource":
                return self.allows("resource", ref.get("uri")), _text(ref.get("uri"))
            return False, None
        return self.server_wide, None  # any other method: server-wide scopes only

    def filters(self, method: str) -> bool:
        """Whether the answer to `method` must be filtered for this caller."""
        return not self.full and method in LIST_FIELDS

    def filter_result(self, method: str, result: Any) -> None:
        """Remove from a list result what this caller may not use (in place)."""
        key, kind, name_field = LIST_FIELDS[method]
        if isinstance(result, dict) and isinstance(result.get(key), list):
            result[key] = [i for i in result[key] if isinstance(i, dict) and self.allows(kind, i.get(name_field))]


@functools.lru_cache(maxsize=GRANT_CACHE_MAX)
def grant_for(scopes: tuple[str, ...], server: str, limits: ServerLimits = NO_LIMITS) -> Grant:
    """The (cached) grant of `scopes` on `server`."""
    return Grant(scopes, server, limits)


def may_see_server(scopes: tuple[str, ...], server: str) -> bool:
    """Whether a principal may see that a server exists (/health, /mcp/servers, the dashboard)."""
    return grant_for(scopes, server).reaches_server


def redact_view(view: dict[str, Any], scopes: tuple[str, ...]) -> dict[str, Any]:
    """A server's state as a principal may see it: the pid and the last error are for admin only."""
    if ADMIN_SCOPE not in scopes:
        view.pop("pid", None)
        view.pop("last_error", None)
    return view


def needed_scope(route: Route, server: str | None, scopes: tuple[str, ...]) -> str | None:
    """The scope a principal lacks for a route (None: it may use it)."""
    if route.access is Access.ADMIN:
        return None if ADMIN_SCOPE in scopes else ADMIN_SCOPE
    if route.access is Access.SERVER:
        if server is None or not grant_for(scopes, server).reaches_server:
            return f"server:{server}"
    return None


def _text(value: Any) -> str | None:
    return value[:128] if isinstance(value, str) else None
