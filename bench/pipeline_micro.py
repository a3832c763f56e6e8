"""Micro benchmark: the real security pipeline in front of a trivial responder, in process (Issue 10 item 1).

Builds the gateway's own pipeline (`build_pipeline`, the same stages in the same order, a memory store, the .env
admin token) around an ASGI app that answers 200 at once, then drives N requests through it without sockets and
prints microseconds per request. Two kinds of request: a 2026-07-28 `tools/call` POST on /mcp/{server} (bearer, the
per-principal limit) and a dashboard read (GET /api/overview with the login cookie, exempt from it).

    .venv/bin/python bench/pipeline_micro.py [--requests 20000] [--rounds 5]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp_bastion.app import create_app
from mcp_bastion.config import Settings
from mcp_bastion.middleware import Security, build_pipeline
from mcp_bastion.security import token_hash
from mcp_bastion.store import LoginSession
from mcp_bastion.types import Receive, Scope, Send

TOKEN = "bench-" + "x" * 40
COOKIE = "bench-cookie-" + "y" * 32
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'


async def trivial(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 200 with a fixed body: everything measured is the pipeline's."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def mcp_scope() -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:3001"),
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"mcp-method", b"tools/call"),
        (b"mcp-name", b"echo"),
        (b"content-length", str(len(BODY)).encode()),
    ]
    return _scope("POST", "/mcp/toolbox", headers)


def dashboard_scope() -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:3001"), (b"cookie", f"bastion_session={COOKIE}".encode())]
    return _scope("GET", "/api/overview", headers)


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
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
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 3001),
    }


async def drive(pipeline: Any, make_scope: Any, count: int) -> tuple[float, int]:
    """Seconds for `count` requests, and how many were not answered 200."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(count):
        await pipeline(make_scope(), receive, send)
    bad = [s for s in statuses if s != 200]
    if bad:
        print("statuses", sorted(set(bad)))
    return time.perf_counter() - started, len(bad)


async def main(requests: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            auth_token=TOKEN,
            store_url="memory://",
            audit_log=Path(tmp) / "audit.jsonl",
            log_dir=Path(tmp),
            rate_limit_max_requests=10**9,  # measure the counting, never a refusal
            rate_limit_token_max_requests=10**9,
        )
        app = create_app(settings, {})
        store = app.store
        now = time.time()
        session = LoginSession(
            token_hash(COOKIE), "env:admin", ("admin",), now, now + 3600, extra={"token": token_hash(TOKEN)}
        )
        await store.create_session(session)
        security = Security(app.audit, app.limiter, app.admin.auth, app.gateway)
        pipeline = build_pipeline(trivial, settings, security)
        for name, make in (("mcp tools/call (bearer)", mcp_scope), ("GET /api/overview (cookie)", dashboard_scope)):
            await drive(pipeline, make, 2000)  # warm the caches
            per_request = []
            for _ in range(rounds):
                seconds, refused = await drive(pipeline, make, requests)
                assert refused == 0, f"{refused} requests were not answered 200"
                per_request.append(seconds / requests * 1e6)
            print(
                f"{name}: median {statistics.median(per_request):.1f} us/request "
                f"(min {min(per_request):.1f}, max {max(per_request):.1f}; {rounds} rounds of {requests})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
