"""Call one ASGI app in process: build an HTTP scope, feed the body, collect the response. No sockets."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_bastion.access import CONTEXT_KEY, RequestContext, RouteTable
from mcp_bastion.audit import AuditLog
from mcp_bastion.middleware.headers import SecurityHeadersMiddleware
from mcp_bastion.middleware.route_match import RouteMiddleware
from mcp_bastion.types import ASGIApp, ASGIMessage, Receive, Scope, Send

AUDIT_MAX_BYTES = 1024 * 1024
PEER = ("127.0.0.1", 50_000)


@dataclass
class Answer:
    """A collected response."""

    status: int
    header_list: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of header `name`, or None."""
        values = [v for k, v in self.header_list if k.lower() == name.lower().encode()]
        return values[-1].decode("latin-1") if values else None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Inner:
    """The app behind the stage under test: records each scope it sees and answers 200 "ok"."""

    seen: list[Scope] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    @property
    def context(self) -> RequestContext:
        """The request context the last request reached the inner app with."""
        ctx: RequestContext = self.seen[-1][CONTEXT_KEY]
        return ctx


def http_scope(
    method: str, path: str, headers: dict[str, str] | None = None, *, client: tuple[str, int] | None = PEER
) -> Scope:
    """An HTTP scope as uvicorn builds it (Host defaults to 127.0.0.1)."""
    given = {"host": "127.0.0.1", **{k.lower(): v for k, v in (headers or {}).items()}}
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in given.items()],
        "client": client,
        "server": ("127.0.0.1", 3001),
    }


async def call(app: ASGIApp, scope: Scope, body: bytes = b"") -> Answer:
    """Run `app` on `scope` with `body` and return what it sent."""
    sent: list[ASGIMessage] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> ASGIMessage:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: ASGIMessage) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], list(start.get("headers", [])), body_out)


def routed(stage: ASGIApp, audit: AuditLog) -> ASGIApp:
    """`stage` behind the two outermost stages it relies on (request id and headers, then the route match)."""
    return SecurityHeadersMiddleware(RouteMiddleware(stage, table=RouteTable(), audit=audit), tls=False)


def audit_log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl", max_bytes=AUDIT_MAX_BYTES, backups=1)


def audited(tmp_path: Path) -> list[dict[str, Any]]:
    """The audit lines written so far."""
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
