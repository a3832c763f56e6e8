"""Pipeline stages called directly as ASGI apps (no server, no child): each refusal, its dialect and its audit line.

The whole pipeline through real HTTP is proven in tests/security/; these pin each stage's own decisions fast.
"""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mcp_bastion.access import CONTEXT_KEY
from mcp_bastion.middleware.body_limit import BodyLimitMiddleware
from mcp_bastion.middleware.headers import HSTS, SecurityHeadersMiddleware
from mcp_bastion.middleware.ip_allowlist import IpAllowlistMiddleware, parse_networks
from mcp_bastion.middleware.origin import HostOriginMiddleware, host_name
from mcp_bastion.middleware.reply import RPC_CODES
from mcp_bastion.middleware.shutdown import ShutdownMiddleware
from mcp_bastion.types import Receive, Scope, Send
from tests.middleware.asgi import Inner, audit_log, audited, call, http_scope, routed

pytestmark = pytest.mark.anyio

MCP = "/mcp/echo"
MAX_BODY = 1000


def rpc_error(answer: Any) -> dict[str, Any]:
    body = answer.json()
    assert set(body) == {"jsonrpc", "id", "error"}
    assert body["id"] is None
    return dict(body["error"])


async def test_the_route_stage_refuses_odd_paths_unknown_routes_and_undeclared_methods(tmp_path: Path) -> None:
    inner = Inner()
    app = routed(inner, audit_log(tmp_path))
    bad = await call(app, http_scope("GET", "/mcp/../admin/sessions"))
    assert bad.status == 400
    assert bad.json()["error"] == "Bad request"
    assert (await call(app, http_scope("GET", "/nope"))).status == 404
    wrong = await call(app, http_scope("PUT", MCP))
    assert wrong.status == 405
    assert wrong.header("allow") == "DELETE, GET, POST"
    assert rpc_error(wrong)["message"].startswith("Method not allowed: ")  # an MCP route answers JSON-RPC
    assert inner.seen == []
    assert [(line["event"], line["status"]) for line in audited(tmp_path)] == [
        ("http.refused", 400),
        ("http.refused", 404),
        ("http.refused", 405),
    ]


async def test_the_route_stage_places_the_context_with_the_server_of_the_path(tmp_path: Path) -> None:
    inner = Inner()
    answer = await call(routed(inner, audit_log(tmp_path)), http_scope("POST", MCP))
    assert answer.status == 200
    assert inner.context.route.name == "mcp"
    assert inner.context.server == "echo"
    assert inner.context.request_id == answer.header("x-request-id")


async def test_non_http_scopes_pass_every_stage_untouched(tmp_path: Path) -> None:
    seen: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    audit = audit_log(tmp_path)
    stages = [
        routed(lifespan_app, audit),
        BodyLimitMiddleware(lifespan_app, max_bytes=1),
        HostOriginMiddleware(lifespan_app, hosts=set(), origins=set(), audit=audit),
        IpAllowlistMiddleware(lifespan_app, allowed=[], trusted=[], audit=audit),
    ]
    for stage in stages:
        await stage({"type": "lifespan"}, _never_receive, _never_send)
    assert seen == ["lifespan"] * len(stages)


async def _never_receive() -> dict[str, Any]:
    raise AssertionError("a pass-through stage read the body")


async def _never_send(message: Any) -> None:
    raise AssertionError("a pass-through stage answered")


@pytest.mark.parametrize(("length", "status"), [("1000", 200), ("1001", 413), ("-1", 413), ("1e3", 413), (" 5", 413)])
async def test_a_declared_body_over_the_cap_or_a_garbled_length_is_refused_before_the_handler(
    tmp_path: Path, length: str, status: int
) -> None:
    inner = Inner()
    app = routed(BodyLimitMiddleware(inner, max_bytes=MAX_BODY), audit_log(tmp_path))
    answer = await call(app, http_scope("POST", MCP, {"content-length": length}))
    assert answer.status == status
    assert len(inner.seen) == (1 if status == 200 else 0)
    if status == 413:
        assert rpc_error(answer)["message"] == f"Payload too large: Request body exceeds {MAX_BODY} bytes"


async def test_a_body_without_a_declared_length_is_left_to_the_reader(tmp_path: Path) -> None:
    inner = Inner()
    app = routed(BodyLimitMiddleware(inner, max_bytes=1), audit_log(tmp_path))
    assert (await call(app, http_scope("POST", MCP), b"x" * 10)).status == 200


def origin_app(tmp_path: Path, inner: Inner, origins: set[str] | None = None) -> Any:
    stage = HostOriginMiddleware(
        inner, hosts={"127.0.0.1", "localhost", "[::1]"}, origins=origins or set(), audit=audit_log(tmp_path)
    )
    return routed(stage, audit_log(tmp_path))


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.", "", "[::2]:3001"])
async def test_a_foreign_or_missing_host_is_misdirected_421(tmp_path: Path, host: str) -> None:
    inner = Inner()
    answer = await call(origin_app(tmp_path, inner), http_scope("GET", "/livez", {"host": host}))
    assert answer.status == 421
    assert answer.json()["error"] == "Misdirected request"
    assert inner.seen == []
    assert audited(tmp_path)[-1]["event"] == "origin.denied"
    assert audited(tmp_path)[-1]["reason"] == "host"


@pytest.mark.parametrize("host", ["127.0.0.1:3001", "LOCALHOST", "[::1]:3001", "[::1]"])
async def test_allowed_hosts_match_whatever_the_port_and_case(tmp_path: Path, host: str) -> None:
    inner = Inner()
    assert (await call(origin_app(tmp_path, inner), http_scope("GET", "/livez", {"host": host}))).status == 200


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://app.example", 200),
        ("https://APP.example/", 200),
        ("http://127.0.0.1:3001", 200),  # same origin as the Host: the dashboard calling its own gateway
        ("https://evil.example", 403),
        ("http://127.0.0.1:9999", 403),
        ("null", 403),
        ("127.0.0.1:3001", 403),
    ],
)
async def test_an_origin_passes_only_when_listed_or_the_same_as_the_host(
    tmp_path: Path, origin: str, status: int
) -> None:
    inner = Inner()
    app = origin_app(tmp_path, inner, {"https://app.example"})
    answer = await call(app, http_scope("POST", MCP, {"host": "127.0.0.1:3001", "origin": origin}))
    assert answer.status == status
    if status == 403:
        assert rpc_error(answer)["code"] == RPC_CODES[403]


def test_host_names_are_compared_without_port_and_ipv6_keeps_its_brackets() -> None:
    assert host_name(" Example.COM:8080 ") == "example.com"
    assert host_name("[::1]:3001") == "[::1]"
    assert host_name("::1") == "::1"  # bare IPv6 (no brackets): every colon belongs to the address


async def test_every_response_gets_the_security_headers_and_a_request_id_errors_included(tmp_path: Path) -> None:
    async def boom(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("internal detail that must not leak")

    for app in (Inner(), boom):
        answer = await call(SecurityHeadersMiddleware(app, tls=False), http_scope("GET", "/livez"))
        assert answer.header("x-content-type-options") == "nosniff"
        assert answer.header("x-frame-options") == "DENY"
        assert len(answer.header("x-request-id") or "") == 16
        assert answer.header("strict-transport-security") is None
    assert answer.status == 500
    assert b"internal detail" not in answer.body
    assert answer.json()["message"] == f"request {answer.header('x-request-id')} failed"


async def test_hsts_only_over_tls_and_a_routes_own_csp_is_kept(tmp_path: Path) -> None:
    async def own_csp(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-security-policy", b"x")]})
        await send({"type": "http.response.body", "body": b""})

    answer = await call(SecurityHeadersMiddleware(own_csp, tls=True), http_scope("GET", "/"))
    assert answer.header("strict-transport-security") == HSTS[1].decode()
    assert [v for k, v in answer.header_list if k == b"content-security-policy"] == [b"x"]


async def test_an_error_after_the_response_started_sends_no_second_response(tmp_path: Path) -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    answer = await call(SecurityHeadersMiddleware(half, tls=False), http_scope("GET", "/livez"))
    assert answer.status == 200
    assert answer.body == b""


def ip_app(tmp_path: Path, inner: Inner, allowed: list[str], trusted: tuple[str, ...] = ()) -> Any:
    stage = IpAllowlistMiddleware(
        inner,
        allowed=parse_networks(allowed, "ALLOWED_IPS"),
        trusted=parse_networks(trusted, "TRUSTED_PROXIES"),
        audit=audit_log(tmp_path),
    )
    return routed(stage, audit_log(tmp_path))


async def test_an_address_outside_the_allowlist_is_refused_and_audited_with_its_address(tmp_path: Path) -> None:
    inner = Inner()
    app = ip_app(tmp_path, inner, ["10.0.0.0/8"])
    refused = await call(app, http_scope("GET", "/livez", client=("192.0.2.7", 1)))
    assert refused.status == 403
    assert refused.json() == {"error": "Access denied", "message": "Your IP address is not allowed"}
    assert (await call(app, http_scope("GET", "/livez", client=("10.1.2.3", 1)))).status == 200
    assert inner.context.client_ip == "10.1.2.3"
    assert (await call(app, http_scope("GET", "/livez", client=None))).status == 403  # no peer: nothing to allow
    denied = [line for line in audited(tmp_path) if line["event"] == "ip.denied"]
    assert [line["ip"] for line in denied] == ["192.0.2.7", "unknown"]


async def test_a_mapped_ipv6_peer_is_judged_as_its_ipv4_address(tmp_path: Path) -> None:
    inner = Inner()
    app = ip_app(tmp_path, inner, ["127.0.0.1"])
    assert (await call(app, http_scope("GET", "/livez", client=("::ffff:127.0.0.1", 1)))).status == 200
    assert inner.context.client_ip == "127.0.0.1"


async def test_a_forwarded_address_is_believed_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    inner = Inner()
    app = ip_app(tmp_path, inner, ["203.0.113.9"], trusted=("10.0.0.1",))
    forwarded = {"x-forwarded-for": "203.0.113.9"}
    assert (await call(app, http_scope("GET", "/livez", forwarded, client=("10.0.0.1", 1)))).status == 200
    assert inner.context.client_ip == "203.0.113.9"
    assert (await call(app, http_scope("GET", "/livez", forwarded, client=("10.0.0.2", 1)))).status == 403
    garbled = {"x-forwarded-for": "203.0.113.9, not-an-address"}
    assert (await call(app, http_scope("GET", "/livez", garbled, client=("10.0.0.1", 1)))).status == 403


async def test_while_shutting_down_every_request_gets_503_with_retry_after_in_the_routes_dialect(
    tmp_path: Path,
) -> None:
    inner = Inner()
    gateway = SimpleNamespace(closing=False)
    app = routed(ShutdownMiddleware(inner, gateway=gateway, audit=audit_log(tmp_path)), audit_log(tmp_path))  # type: ignore[arg-type]
    assert (await call(app, http_scope("POST", MCP))).status == 200
    gateway.closing = True
    json_route = await call(app, http_scope("GET", "/livez"))
    mcp_route = await call(app, http_scope("POST", MCP))
    assert (json_route.status, mcp_route.status) == (503, 503)
    assert json_route.header("retry-after") == mcp_route.header("retry-after")
    assert json_route.json()["retryAfterSeconds"] == int(json_route.header("retry-after") or 0)
    assert rpc_error(mcp_route)["data"]["reason"] == "shutting down"
    assert len(inner.seen) == 1
    assert audited(tmp_path)[-1]["reason"] == "shutting down"
    assert CONTEXT_KEY in inner.seen[0]
