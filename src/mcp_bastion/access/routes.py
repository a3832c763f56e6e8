"""The one route table: every route declared once, matched once, after a strict normalisation of the path.

A route names its methods, who may use it (`Access`), whether a login cookie counts as a credential, how its
errors are written (`Dialect`) and which rate-limit class it belongs to. The path is matched at the outermost stage;
no later stage parses it again. A path that is not canonical is refused (400) rather than rewritten, so that the
route the authorizer judged is always the route that handles the request.
"""

import re
from dataclasses import dataclass, field
from enum import StrEnum

SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")  # RFC 3986 unreserved characters only: nothing to decode, nothing to fold
MATCH_CACHE_MAX = 4096  # canonical paths remembered (the hot path sees a handful); past it the cache starts over


class Access(StrEnum):
    """Who may use a route."""

    PUBLIC = "public"  # no credential: liveness, the login page and its files, login itself, OAuth discovery
    PRINCIPAL = "principal"  # any authenticated principal (what it sees is then narrowed to its scopes)
    ADMIN = "admin"  # the admin scope
    SERVER = "server"  # a scope that reaches the `{server}` of the path (MCP traffic)


class Dialect(StrEnum):
    """How a refusal on this route is written."""

    JSON = "json"  # {"error", "message"} as the Express server answered
    JSONRPC = "jsonrpc"  # a JSON-RPC error object, which MCP clients read


class RateClass(StrEnum):
    """Which limits a route counts against (Issue 10 item 1).

    On every class but NONE and IP, a request that authenticates never counts per address; one refused (401) does.
    """

    NONE = "none"  # never limited: load-balancer probes, and the dashboard's fixed files (a browser never sees a 429)
    IP = "ip"  # every request counts per client address (unauthenticated routes: login, discovery)
    PRINCIPAL = "principal"  # per principal once authenticated
    DASHBOARD = "dashboard"  # the dashboard's polled reads: per principal, except for a login-cookie session


class BadPath(Exception):
    """A request path that is not canonical (empty segment, trailing slash, dot segment, encoded separator...)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One declared route. A `{name}` segment captures; a final `**` captures the rest (one or more segments)."""

    name: str
    template: tuple[str, ...]
    methods: frozenset[str]
    access: Access
    cookie: bool = False
    dialect: Dialect = Dialect.JSON
    rate: RateClass = RateClass.PRINCIPAL
    choices: dict[str, frozenset[str]] = field(default_factory=dict)  # allowed values of a capture
    # The handler caps the body itself, so a refusal can also reach the client where it waits for the answer
    # (HTTP+SSE: on the session's stream); the body-limit stage leaves this route's declared length alone.
    body_cap_in_handler: bool = False

    def match(self, segments: tuple[str, ...]) -> dict[str, str] | None:
        """The captures if `segments` fit the template, else None."""
        template = self.template
        if template and template[-1] == "**":
            if len(segments) < len(template):
                return None
            head, rest = segments[: len(template) - 1], segments[len(template) - 1 :]
            params = self._fit(template[:-1], head)
            if params is not None:
                params["rest"] = "/".join(rest)
            return params
        if len(segments) != len(template):
            return None
        return self._fit(template, segments)

    def _fit(self, template: tuple[str, ...], segments: tuple[str, ...]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for part, segment in zip(template, segments, strict=True):
            if part.startswith("{"):
                key = part[1:-1]
                allowed = self.choices.get(key)
                if allowed is not None and segment not in allowed:
                    return None
                params[key] = segment
            elif part != segment:
                return None
        return params


GET = frozenset({"GET"})
POST = frozenset({"POST"})
DELETE = frozenset({"DELETE"})
JSONRPC = Dialect.JSONRPC

ROUTES: tuple[Route, ...] = (
    Route("livez", ("livez",), GET, Access.PUBLIC, rate=RateClass.NONE),
    Route("dashboard", (), GET, Access.PUBLIC, rate=RateClass.NONE),
    Route("static", ("static", "{file}"), GET, Access.PUBLIC, rate=RateClass.NONE),
    # OAuth discovery (RFC 9728, RFC 8414, OpenID): clients probe these without credentials; 404 until served.
    Route("discovery", (".well-known", "{document}", "**"), GET, Access.PUBLIC, rate=RateClass.IP),
    Route("discovery.root", (".well-known", "{document}"), GET, Access.PUBLIC, rate=RateClass.IP),
    # Protected Resource Metadata (RFC 9728, Issue 13): the gateway's, and each MCP server's (its resource).
    Route("oauth.resource", (".well-known", "oauth-protected-resource"), GET, Access.PUBLIC, rate=RateClass.IP),
    Route(
        "oauth.resource.server",
        (".well-known", "oauth-protected-resource", "mcp", "{server}"),
        GET,
        Access.PUBLIC,
        rate=RateClass.IP,
    ),
    # The built-in authorization server (Issue 14): public, counted per address; its consent pages check the login
    # cookie themselves (a missing login is a login form there, not a 401).
    Route("oauth.server", (".well-known", "oauth-authorization-server"), GET, Access.PUBLIC, rate=RateClass.IP),
    Route("oauth.jwks", ("oauth", "jwks"), GET, Access.PUBLIC, rate=RateClass.IP),
    Route("oauth.register", ("oauth", "register"), POST, Access.PUBLIC, rate=RateClass.IP),
    Route("oauth.authorize", ("oauth", "authorize"), GET, Access.PUBLIC, rate=RateClass.IP),
    Route("oauth.consent", ("oauth", "consent"), frozenset({"GET", "POST"}), Access.PUBLIC, rate=RateClass.IP),
    Route("oauth.login", ("oauth", "login"), POST, Access.PUBLIC, rate=RateClass.IP),
    Route("oauth.token", ("oauth", "token"), POST, Access.PUBLIC, rate=RateClass.IP),
    Route("oauth.revoke", ("oauth", "revoke"), POST, Access.PUBLIC, rate=RateClass.IP),
    Route("api.grants", ("api", "grants"), GET, Access.ADMIN, cookie=True),
    Route("api.grant", ("api", "grants", "{id}"), DELETE, Access.ADMIN, cookie=True),
    Route("auth.login", ("auth", "login"), POST, Access.PUBLIC, rate=RateClass.IP),
    Route("auth.logout", ("auth", "logout"), POST, Access.PRINCIPAL, cookie=True),
    Route("auth.session", ("auth", "session"), GET, Access.PRINCIPAL, cookie=True, rate=RateClass.DASHBOARD),
    Route("health", ("health",), GET, Access.PRINCIPAL, cookie=True, rate=RateClass.DASHBOARD),
    Route("admin.sessions", ("admin", "sessions"), GET, Access.ADMIN, cookie=True),
    Route("admin.session", ("admin", "sessions", "{id}"), DELETE, Access.ADMIN, cookie=True),
    Route("api.overview", ("api", "overview"), GET, Access.PRINCIPAL, cookie=True, rate=RateClass.DASHBOARD),
    # Not exempt like the other polled reads: an audit page reads files, so it counts against the principal.
    Route("api.audit", ("api", "audit"), GET, Access.PRINCIPAL, cookie=True),
    Route("api.tokens", ("api", "tokens"), frozenset({"GET", "POST"}), Access.ADMIN, cookie=True),
    Route("api.token", ("api", "tokens", "{name}"), DELETE, Access.ADMIN, cookie=True),
    Route("mcp.servers", ("mcp", "servers"), GET, Access.PRINCIPAL, cookie=True),
    Route(
        "mcp.manage",
        ("mcp", "{server}", "{action}"),
        POST,
        Access.ADMIN,
        cookie=True,
        choices={"action": frozenset({"start", "stop", "restart"})},
    ),
    Route("mcp", ("mcp", "{server}"), frozenset({"GET", "POST", "DELETE"}), Access.SERVER, dialect=JSONRPC),
    Route("mcp.sse", ("mcp", "{server}", "sse"), GET, Access.SERVER, dialect=JSONRPC),
    Route(
        "mcp.messages", ("mcp", "{server}", "messages"), POST, Access.SERVER, dialect=JSONRPC, body_cap_in_handler=True
    ),
)
RESERVED_SERVER_NAMES = frozenset({"servers"})  # literal segments that a `{server}` capture must never shadow


def segments_of(path: str, raw_path: bytes | None) -> tuple[str, ...]:
    """The segments of a canonical path.

    Raises:
        BadPath: not absolute, an empty segment (`//`, trailing `/`), a `.`/`..` segment, an encoded `/` or `\\`,
            or any character outside RFC 3986's unreserved set (non-ASCII included).
    """
    if raw_path is not None and b"%" in raw_path:
        lowered = raw_path.lower()
        if b"%2f" in lowered or b"%5c" in lowered:
            raise BadPath("encoded / or \\ in the path")
    if not path.startswith("/"):
        raise BadPath("the path must start with /")
    if path == "/":
        return ()
    parts = tuple(path[1:].split("/"))
    for part in parts:
        if not part:
            raise BadPath("empty path segment (// or a trailing /)")
        if part in (".", ".."):
            raise BadPath("dot segment in the path")
        if not SEGMENT.fullmatch(part):
            raise BadPath("the path may hold only A-Z a-z 0-9 . _ ~ -")
    return parts


class RouteTable:
    """Matches a request path against the declared routes (literal segments win over captures)."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self.routes = sorted(routes, key=_specificity)
        self._cache: dict[str, tuple[Route, dict[str, str]] | None] = {}

    def match(self, path: str, raw_path: bytes | None = None) -> tuple[Route, dict[str, str]] | None:
        """The route and its captures, or None (404).

        Raises:
            BadPath: see `segments_of`.
        """
        cacheable = raw_path is None or b"%" not in raw_path
        if cacheable and path in self._cache:
            return self._cache[path]
        segments = segments_of(path, raw_path)
        found = None
        for route in self.routes:
            params = route.match(segments)
            if params is not None:
                found = (route, params)
                break
        if cacheable:
            if len(self._cache) >= MATCH_CACHE_MAX:
                self._cache.clear()
            self._cache[path] = found
        return found


def _specificity(route: Route) -> tuple[int, ...]:
    """Sort key: more literal segments first, so `/mcp/servers` is never taken for a server named `servers`."""
    literals = sum(1 for part in route.template if not part.startswith("{") and part != "**")
    return (-literals, len(route.template))
