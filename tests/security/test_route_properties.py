"""Issue 8 (property): for every generated request, the route the authorizer judged is the route that handled it,
or the request was refused. The whole pipeline runs in process (the ASGI app called directly); only the handlers
are replaced by recorders, so no child is needed."""

import asyncio
import fnmatch
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_bastion.access import ROUTES, Access, RequestContext, RouteTable
from mcp_bastion.app import create_app
from mcp_bastion.config import Settings
from mcp_bastion.security import token_hash
from mcp_bastion.store import TokenRecord
from mcp_bastion.transports.http import Request, send_bytes
from tests.harness import DEMO, spec
from tests.security.support import run_sync

SERVERS = ("echo", "other")
SEGMENTS = [
    "mcp", "admin", "sessions", "api", "tokens", "overview", "audit", "auth", "login", "logout", "session", "health",
    "livez", "static", "app.js", ".well-known", "openid-configuration", "echo", "other", "servers", "stop", "start",
    "restart", "sse", "messages", "x", "", ".", "..", "%2e%2e", "%2f", "%2F", "%5c", "ech%6f", "%C3%A9", "a%00b",
]  # fmt: skip
SCOPE_SETS = [
    ("admin",),
    ("server:echo",),
    ("server:*",),
    ("server:ech?",),
    ("tool:echo/echo",),
    ("resource:other/demo://*",),
    ("prompt:*/greet",),
    ("tool:nope/x",),
]
METHODS = ["GET", "POST", "DELETE", "GET", "POST", "DELETE", "PUT", "OPTIONS"]


def oracle_reaches(scopes: tuple[str, ...], server: str) -> bool:
    """Written apart from the code under test: does any scope name this server (glob), or is it admin?"""
    for scope in scopes:
        if scope == "admin":
            return True
        kind, _, rest = scope.partition(":")
        if kind in ("server", "tool", "resource", "prompt") and fnmatch.fnmatchcase(server, rest.split("/", 1)[0]):
            return True
    return False


def canonical(raw: str) -> bool:
    """The oracle's idea of a canonical path: absolute, no empty, dot or encoded segments, unreserved ASCII only."""
    if raw == "/":
        return True
    if not raw.startswith("/"):
        return False
    parts = raw[1:].split("/")
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-%")
    for part in parts:
        decoded = unquote(part)
        if not part or decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            return False
        if not set(part) <= allowed or not set(decoded) <= allowed - {"%"}:
            return False
    return True


class Harness:
    """The real app with recording handlers and one token per scope set."""

    def __init__(self, tmp: Path) -> None:
        config = Settings(
            insecure_no_auth=False,
            auth_token="adm-" + secrets.token_urlsafe(36),
            store_url="memory://",
            audit_log=tmp / "audit.jsonl",
            log_dir=tmp,
            rate_limit_max_requests=10**9,
            rate_limit_token_max_requests=10**9,
            auth_failure_limit=10**9,
        )
        self.app = create_app(config, {name: spec(name, DEMO) for name in SERVERS})
        self.handled: list[RequestContext] = []
        self.reached: dict[str, int] = {}  # route name -> handled examples, to prove the search got through
        for name in self.app.handlers:
            self.app.handlers[name] = self._recorder
        self.tokens: dict[tuple[str, ...], str] = {}
        for index, scopes in enumerate(SCOPE_SETS):
            value = secrets.token_urlsafe(32)
            record = TokenRecord(f"t{index}", token_hash(value), scopes, time.time())
            run_sync(self.app.store.create_token(record))
            self.tokens[scopes] = value

    async def _recorder(self, req: Request, ctx: RequestContext) -> None:
        self.handled.append(ctx)
        await send_bytes(req.send, 200, b"{}")

    def request(self, method: str, raw: str, token: str | None) -> int:
        headers = [(b"host", b"127.0.0.1:3001")]
        if token is not None:
            headers.append((b"authorization", b"Bearer " + token.encode()))
        scope: dict[str, Any] = {
            "type": "http",
            "method": method,
            "path": unquote(raw, errors="surrogateescape"),
            "raw_path": raw.encode(),
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 3001),
            "scheme": "http",
        }
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        asyncio.run(self.app(scope, receive, send))
        return statuses[0]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    return Harness(tmp_path_factory.mktemp("props"))


def instance(route_index: int, fills: list[str]) -> str:
    """A declared route's template with its captures filled from the segment pool."""
    parts = []
    for index, part in enumerate(ROUTES[route_index].template):
        parts.append(fills[index % len(fills)] if part.startswith("{") or part == "**" else part)
    return "/" + "/".join(parts)


MUTATIONS = {
    "none": lambda p: p,
    "trailing slash": lambda p: p + "/",
    "double slash": lambda p: "/" + p,
    "inner double slash": lambda p: p.replace("/", "//", 2),
    "dot segment": lambda p: p.replace("/", "/./", 1),
    "dot-dot": lambda p: "/mcp/echo/.." + p,
    "encoded slash": lambda p: p.replace("/", "%2f", 2).replace("%2f", "/", 1),
    "encoded backslash": lambda p: p + "%5c",
    "encoded letter": lambda p: p.replace("e", "%65", 1),
}
random_paths = st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=5).map(lambda parts: "/" + "/".join(parts))
CAPTURES = ["echo", "other", "nope", "start", "stop", "restart", "servers", "app.js", "0123456789abcdef"]
route_paths = st.builds(
    lambda index, fills, mutation: MUTATIONS[mutation](instance(index, fills)),
    st.integers(0, len(ROUTES) - 1),
    st.lists(st.sampled_from(CAPTURES), min_size=1, max_size=3),
    st.sampled_from(["none"] * len(MUTATIONS) + sorted(MUTATIONS)),
)
paths = st.one_of(random_paths, route_paths, route_paths, route_paths)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(METHODS),
    raw=paths,
    scopes=st.sampled_from([*SCOPE_SETS, ("admin",), ("admin",), None]),
)
def test_the_route_judged_is_the_route_that_handled_the_request(
    harness: Harness, method: str, raw: str, scopes: tuple[str, ...] | None
) -> None:
    """Issue 8 (property over paths, methods and scopes): a handler runs only for a canonical path, for the
    route that path declares, with a method it declares, for a principal whose scopes reach it."""
    harness.handled.clear()
    token = harness.tokens[scopes] if scopes is not None else None
    status = harness.request(method, raw, token)
    if not harness.handled:
        assert status != 200 or method == "OPTIONS", (raw, status)
        return
    [ctx] = harness.handled
    harness.reached[ctx.route.name] = harness.reached.get(ctx.route.name, 0) + 1
    assert status == 200
    assert canonical(raw), raw
    found = RouteTable(ROUTES).match(unquote(raw), raw.encode())
    assert found is not None, raw
    assert found[0] is ctx.route, raw
    assert method in ctx.route.methods
    if ctx.route.access is Access.PUBLIC:
        return
    assert ctx.principal is not None
    assert scopes is not None
    assert ctx.principal.scopes == scopes
    if ctx.route.access is Access.ADMIN:
        assert "admin" in scopes, raw
    if ctx.route.access is Access.SERVER:
        assert oracle_reaches(scopes, ctx.server or ""), (raw, scopes)


def test_the_generated_requests_reached_protected_routes(harness: Harness) -> None:
    """The property above is not vacuous: its examples got through to admin, server and principal routes."""
    reached = {route.access for route in ROUTES if harness.reached.get(route.name)}
    assert {Access.PUBLIC, Access.PRINCIPAL, Access.SERVER, Access.ADMIN} <= reached, harness.reached


def test_every_declared_route_has_a_handler_and_an_access_rule(harness: Harness) -> None:
    """Issue 8 (route table): deny by default needs every route declared once, with a rule and a handler."""
    names = [route.name for route in ROUTES]
    assert len(names) == len(set(names))
    assert set(harness.app.handlers) == set(names)
    assert all(isinstance(route.access, Access) for route in ROUTES)
