"""Fault injection: clients that vanish without ending their session (Issue 9 item 7).

A Streamable HTTP client that never sends DELETE, and an HTTP+SSE client whose TCP connection is reset (SO_LINGER 0,
so the kernel sends RST instead of FIN): the session ends within its bound and a per-session child goes with it.
"""

import secrets
import socket
import struct
from pathlib import Path

import httpx
import pytest

from tests.faults.support import children_marked
from tests.harness import TOOLBOX, run_gateway, spec, wait_until
from tests.security.support import JSON_ACCEPT, audit_events, rpc

pytestmark = pytest.mark.faults

ORPHAN_S = 1.0  # SESSION_ORPHAN_TIMEOUT_S under test
# The reaper runs every ORPHAN_S / 4: a session idle for ORPHAN_S is ended within a quarter more, the child's stop
# (stdin closed, TERM) within SHUTDOWN_GRACE_S; the rest is scheduling slack on 2 shared cores.
ORPHAN_BOUND_S = ORPHAN_S * 1.25 + 2.0 + 2.0
RESET_BOUND_S = 5.0  # a reset connection is seen at once; its child's stop takes SHUTDOWN_GRACE_S at most
INIT = rpc(
    0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
)


def sessions_of(url: str, server: str) -> int:
    return int(httpx.get(f"{url}/health", timeout=5).json()["servers"][server]["sessions"])


def test_a_per_session_streamable_session_whose_client_vanished_loses_its_child_within_the_orphan_timeout(
    tmp_path: Path,
) -> None:
    """Issue 9 item 7: a Streamable client that opened a per-session server and disappeared without DELETE (no
    stream, no request) has its session ended and its private child stopped within SESSION_ORPHAN_TIMEOUT_S (the
    alias of SESSION_IDLE_NO_STREAM_S) plus the reaper's period, audited session.expired."""
    mark = f"orphan-{secrets.token_hex(4)}"
    servers = [spec("private", [*TOOLBOX, mark], isolation="per-session")]
    with run_gateway(servers, tmp_path, session_orphan_timeout_s=ORPHAN_S) as gw:
        assert gw.app.settings.session_idle_no_stream_s == ORPHAN_S
        with httpx.Client(timeout=10) as client:
            opened = client.post(gw.mcp("private"), json=INIT, headers=JSON_ACCEPT)
            assert opened.status_code == 200, opened.text
            session = opened.headers["mcp-session-id"]
        assert len(children_marked(mark)) == 1
        assert sessions_of(gw.url, "private") == 1
        wait_until(lambda: not children_marked(mark), ORPHAN_BOUND_S)
        assert sessions_of(gw.url, "private") == 0
        later = httpx.post(gw.mcp("private"), json=rpc(1, "ping"), headers={**JSON_ACCEPT, "Mcp-Session-Id": session})
        assert later.status_code == 404
        expired = audit_events(tmp_path, "session.expired")
        assert [(line["server"], line["reason"]) for line in expired] == [("private", "idle without a stream")]


def test_an_http_sse_session_ends_with_its_stream_when_the_client_connection_is_reset(tmp_path: Path) -> None:
    """Issue 9 item 7: an HTTP+SSE client whose TCP connection is reset (RST, no FIN, no DELETE) loses its session
    at once, long before any idle timeout, and its per-session child is stopped."""
    mark = f"reset-{secrets.token_hex(4)}"
    servers = [spec("private", [*TOOLBOX, mark], isolation="per-session")]
    with run_gateway(servers, tmp_path, session_orphan_timeout_s=3600) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=10)
        request = f"GET /mcp/private/sse HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        sock.sendall(request.encode())
        received = b""
        while b"\n\n" not in received.partition(b"session_id=")[2]:  # the whole endpoint event (body chunked)
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        endpoint = received.split(b"data: ", 1)[1].split(b"\n", 1)[0].decode()
        assert endpoint.startswith("/mcp/private/messages?session_id="), received
        posted = httpx.post(f"{gw.url}{endpoint}", json=INIT, timeout=10)  # spawns the session's own child
        assert posted.status_code == 202, posted.text
        wait_until(lambda: len(children_marked(mark)) == 1, 10)
        assert sessions_of(gw.url, "private") == 1

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST

        wait_until(lambda: sessions_of(gw.url, "private") == 0, RESET_BOUND_S)
        wait_until(lambda: not children_marked(mark), RESET_BOUND_S)
        after = httpx.post(f"{gw.url}{endpoint}", json=rpc(1, "ping"), timeout=10)
        assert after.status_code == 404
