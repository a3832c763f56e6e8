"""Fault injection: SIGTERM to a real `mcp-bastion serve` with open streams and calls in flight (Issue 9 item 6).

What clients must see: every long stream (HTTP+SSE, Streamable GET, 2026-07-28 listen) ends at once with the final
"shutting down" event; a call that finishes within SHUTDOWN_GRACE_S gets its answer; one that does not gets a
JSON-RPC "shutting down" error with its own id and a retry hint (never uvicorn's plain-text 500); anything new gets
503 + Retry-After or finds the port closed. What the operator must see: no traceback, the process gone within the
grace plus a bound, and no child left behind.
"""

import asyncio
import json
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import uvicorn

from mcp_bastion.app import create_app
from mcp_bastion.cli.http_server import GatewayServer
from mcp_bastion.config import Settings
from mcp_bastion.relay.sessions import SHUTDOWN_RETRY_AFTER_S
from tests.harness import TOOLBOX, free_port, run_gateway, serve_process, spec, wait_until
from tests.security.support import (
    CLI,
    bearer,
    clean_env,
    legacy_headers,
    modern_body,
    modern_headers,
    open_legacy_session,
    rpc,
)

pytestmark = pytest.mark.faults

GRACE_S = 2.0  # SHUTDOWN_GRACE_S under test
STREAM_END_BOUND_S = 1.0  # "at once": the signal is seen within uvicorn's 0.1 s tick, the rest is scheduling
QUICK_CALL_S = 0.8  # a tool call that ends well within the grace
LONG_CALL_S = 60.0  # one that cannot
ANSWER_SLACK_S = 1.0  # a cut-short call is answered within this after the grace ends
EXIT_BOUND_S = GRACE_S + 6.0  # the grace, uvicorn's answer margin, each child's TERM, and scheduling on 2 cores
FAREWELL = b"the gateway is shutting down"
BROKEN = (b"Traceback", b"CancelledError", b"Exception in ASGI application", b"Internal Server Error")


class Stream:
    """Reads one SSE response in a thread; `text` is everything received, `ended_at` when the server ended it."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: Any = None) -> None:
        self.status: int | None = None
        self.text = b""
        self.ended_at: float | None = None
        self.opened = threading.Event()
        self.ended = threading.Event()
        threading.Thread(target=self._read, args=(method, url, headers, body), daemon=True).start()
        assert self.opened.wait(10), "the stream did not open"
        assert self.status == 200

    def _read(self, method: str, url: str, headers: dict[str, str], body: Any) -> None:
        try:
            with httpx.stream(method, url, headers=headers, json=body, timeout=60) as answer:
                self.status = answer.status_code
                self.opened.set()
                for chunk in answer.iter_raw():
                    self.text += chunk
        except httpx.HTTPError as exc:
            self.text += f"\n[client error: {exc!r}]".encode()
        finally:
            self.ended_at = time.monotonic()
            self.opened.set()
            self.ended.set()


class Call:
    """One POST in a thread; `response` and `answered_at` once it returns."""

    def __init__(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.response: httpx.Response | None = None
        self.failure: Exception | None = None
        self.answered_at: float | None = None
        self.done = threading.Event()
        threading.Thread(target=self._post, args=(url, headers, body), daemon=True).start()

    def _post(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        try:
            self.response = httpx.post(url, headers=headers, json=body, timeout=LONG_CALL_S + 30)
        except httpx.HTTPError as exc:
            self.failure = exc
        finally:
            self.answered_at = time.monotonic()
            self.done.set()


def slow(seconds: float) -> dict[str, Any]:
    return {"name": "slow", "arguments": {"steps": 1, "seconds": seconds}}


def assert_shutting_down(response: httpx.Response, request_id: Any) -> None:
    """The JSON-RPC "shutting down" error, with the request's own id and a retry hint in body and header."""
    assert response.headers["retry-after"] == str(SHUTDOWN_RETRY_AFTER_S), response.headers
    body = response.json()
    assert body["id"] == request_id, body
    assert body["error"]["code"] == -32000, body
    assert "shutting down" in body["error"]["message"], body
    assert body["error"]["data"]["retryAfterSeconds"] == SHUTDOWN_RETRY_AFTER_S, body


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def serve_argv(tmp_path: Path, port: int, token: str) -> list[str]:
    toolbox = {"command": sys.executable, "args": TOOLBOX[1:]}
    servers = {"toolbox": toolbox, "private": {**toolbox, "isolation": "per-session"}}
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": servers}))
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"HOST=127.0.0.1\nPORT={port}\nAUTH_TOKEN={token}\nSTORE_URL=memory://\nLOG_DIR={tmp_path / 'logs'}\n"
        f"AUDIT_LOG={tmp_path / 'logs' / 'audit.jsonl'}\nSHUTDOWN_GRACE_S={GRACE_S}\n"
        "RATE_LIMIT_MAX_REQUESTS=1000000\nRATE_LIMIT_TOKEN_MAX_REQUESTS=1000000\n"
    )
    env_file.chmod(0o600)
    return [str(CLI), "serve", "--env-file", str(env_file), "--config", str(config)]


def test_sigterm_ends_streams_at_once_lets_calls_finish_within_the_grace_and_leaves_no_child(tmp_path: Path) -> None:
    """Issue 9 item 6: SIGTERM to the real CLI with an HTTP+SSE, a Streamable GET and a 2026-07-28 listen stream
    open, and calls in flight: the streams end at once with the final event, the call that fits in the grace is
    answered, the ones that do not get the JSON-RPC "shutting down" error (their own id, Retry-After) when the grace
    ends, new requests get 503 or a closed port, the process exits within the grace plus a bound, no traceback is
    logged, and no child (shared or per-session) survives."""
    port, token = free_port(), "adm-" + secrets.token_urlsafe(32)
    base, auth = f"http://127.0.0.1:{port}", bearer(token)
    mcp, private = f"{base}/mcp/toolbox", f"{base}/mcp/private"

    def ready() -> bool:
        health = httpx.get(base + "/health", headers=auth, timeout=5)
        return health.status_code == 200 and health.json()["servers"]["toolbox"]["state"] == "running"

    def pending() -> int:
        return int(httpx.get(base + "/health", headers=auth, timeout=5).json()["servers"]["toolbox"]["pending"])

    log = tmp_path / "serve.log"
    env = clean_env(tmp_path)
    with serve_process(serve_argv(tmp_path, port, token), cwd=tmp_path, env=env, log=log, ready=ready) as proc:
        with httpx.Client(timeout=10) as client:
            session = open_legacy_session(client, mcp, token)
            own = open_legacy_session(client, private, token)  # spawns this session's own child
        streams = {
            "sse": Stream("GET", f"{mcp}/sse", {"Accept": "text/event-stream", **auth}),
            "get": Stream("GET", mcp, {**legacy_headers(token, session), "Accept": "text/event-stream"}),
            "listen": Stream(
                "POST",
                mcp,
                modern_headers(token, "subscriptions/listen"),
                modern_body(1, "subscriptions/listen", {"notifications": {"toolsListChanged": True}}),
            ),
        }
        quick = Call(mcp, modern_headers(token, "tools/call", "slow"), modern_body(7, "tools/call", slow(QUICK_CALL_S)))
        cut_modern = Call(
            mcp, modern_headers(token, "tools/call", "slow"), modern_body(8, "tools/call", slow(LONG_CALL_S))
        )
        cut_legacy = Call(mcp, legacy_headers(token, session), rpc(9, "tools/call", slow(LONG_CALL_S)))
        wait_until(lambda: pending() == 3, 10)
        children = descendants(proc.pid)
        assert len(children) >= 2, children  # the shared toolbox and the per-session one (plus any wrappers)
        assert own

        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        late = [probe(base, auth, mcp, token) for _ in range(3)]

        for name, stream in streams.items():
            assert stream.ended.wait(STREAM_END_BOUND_S + 1), f"the {name} stream stayed open"
            assert stream.ended_at is not None
            assert stream.ended_at - signalled < STREAM_END_BOUND_S, (name, stream.ended_at - signalled)
            assert FAREWELL in stream.text, (name, stream.text[-300:])
            assert b"client error" not in stream.text, (name, stream.text[-300:])  # ended cleanly, not cut

        assert quick.done.wait(GRACE_S + ANSWER_SLACK_S)
        assert quick.response is not None, quick.failure
        assert quick.response.status_code == 200, quick.response.text
        assert quick.response.json()["result"]["content"][0]["text"] == "slept 1"

        for call, request_id in ((cut_modern, 8), (cut_legacy, 9)):
            assert call.done.wait(GRACE_S + ANSWER_SLACK_S + 1)
            assert call.response is not None, call.failure
            assert call.answered_at is not None
            assert GRACE_S - 0.2 < call.answered_at - signalled < GRACE_S + ANSWER_SLACK_S
            assert call.response.status_code == 200, call.response.text  # an answered call, not a 500
            assert_shutting_down(call.response, request_id)

        for answer in late:
            if answer is not None:  # the listener may already be closed: a refused connection is fine too
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == str(SHUTDOWN_RETRY_AFTER_S)

        proc.wait(EXIT_BOUND_S)
        exited = time.monotonic() - signalled
        assert exited < EXIT_BOUND_S, exited
        assert proc.returncode in (0, -signal.SIGTERM), proc.returncode
    wait_until(lambda: not any(alive(child) for child in children), 5)
    output = log.read_bytes()
    for marker in BROKEN:
        assert marker not in output, output.decode(errors="replace")[-3000:]


def probe(base: str, auth: dict[str, str], mcp: str, token: str) -> httpx.Response | None:
    """A new request just after the signal: a tools/call on a fresh connection (None when the port is closed)."""
    try:
        return httpx.post(
            mcp, headers=modern_headers(token, "tools/call", "echo"), json=modern_body(3, "tools/call", {}), timeout=5
        )
    except httpx.ConnectError:
        return None


def test_a_request_arriving_once_shutdown_began_gets_503_with_a_retry_hint(tmp_path: Path) -> None:
    """Issue 9 item 6: once the gateway is shutting down, a new request is refused before any work, 503 +
    Retry-After, as a JSON-RPC error on MCP routes (and the `{"error", "message"}` shape elsewhere)."""
    with run_gateway([spec("toolbox")], tmp_path) as gw:
        loop: asyncio.AbstractEventLoop = gw.server.servers[0].get_loop()
        loop.call_soon_threadsafe(gw.app.begin_shutdown)
        wait_until(lambda: gw.app.gateway.closing, 5)
        body = modern_body(4, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        refused = httpx.post(gw.mcp("toolbox"), headers=modern_headers(None, "tools/call", "echo"), json=body)
        servers = httpx.get(f"{gw.url}/mcp/servers")
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == str(SHUTDOWN_RETRY_AFTER_S)
    answer = refused.json()
    assert answer["error"]["code"] == -32000
    assert "shutting down" in answer["error"]["message"]
    assert answer["error"]["data"]["retryAfterSeconds"] == SHUTDOWN_RETRY_AFTER_S
    assert servers.status_code == 503
    assert servers.headers["retry-after"] == str(SHUTDOWN_RETRY_AFTER_S)
    assert servers.json()["error"] == "Service unavailable"


def test_a_server_stopped_from_code_still_ends_its_streams_at_once(tmp_path: Path) -> None:
    """Issue 9 item 6: the CLI's server tells the app before uvicorn waits for connections, whether the stop came
    from a signal or from code, so an open stream does not hold the shutdown for the whole grace."""
    port = free_port()
    settings = Settings(
        host="127.0.0.1",
        port=port,
        insecure_no_auth=True,
        store_url="memory://",
        log_dir=tmp_path / "logs",
        audit_log=tmp_path / "logs" / "audit.jsonl",
        shutdown_grace_s=GRACE_S,
    )
    app = create_app(settings, {"toolbox": spec("toolbox")}, events=lambda e, **f: None)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=30)
    server = GatewayServer(config, on_shutdown=app.begin_shutdown)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20)
    sse = Stream("GET", f"http://127.0.0.1:{port}/mcp/toolbox/sse", {"Accept": "text/event-stream"})
    stopped = time.monotonic()
    server.should_exit = True
    thread.join(15)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < STREAM_END_BOUND_S + 1  # not uvicorn's 30 s wait for the connection
    assert FAREWELL in sse.text


def test_an_http_sse_stream_with_a_call_in_flight_carries_its_answer_before_ending(tmp_path: Path) -> None:
    """Issue 9 item 6: an HTTP+SSE session's answers travel on its stream, so at shutdown a stream with a call in
    flight stays until the call is answered within the grace, then ends with the final event."""
    with run_gateway([spec("toolbox")], tmp_path, shutdown_grace_s=30) as gw:
        sse = Stream("GET", f"{gw.mcp('toolbox')}/sse", {"Accept": "text/event-stream"})
        wait_until(lambda: b"session_id=" in sse.text, 5)
        endpoint = sse.text.split(b"data: ", 1)[1].split(b"\n", 1)[0].decode()
        init = rpc(0, "initialize", {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t"}})
        assert httpx.post(f"{gw.url}{endpoint}", json=init).status_code == 202
        call = rpc(11, "tools/call", slow(QUICK_CALL_S))
        assert httpx.post(f"{gw.url}{endpoint}", json=call).status_code == 202
        wait_until(lambda: gw.app.gateway.server_view("toolbox")["pending"] == 1, 5)
        loop: asyncio.AbstractEventLoop = gw.server.servers[0].get_loop()
        loop.call_soon_threadsafe(gw.app.begin_shutdown)
        assert sse.ended.wait(QUICK_CALL_S + 5)
    answer, _, rest = sse.text.rpartition(b'"id":11')[2].partition(b"\n\n")
    assert b"slept 1" in answer, sse.text
    assert FAREWELL in rest, sse.text
