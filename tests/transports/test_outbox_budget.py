"""A client that stops reading its SSE stream (issue 8 item 9): the outbox's byte budget ends the stream and the
session instead of growing the gateway's memory."""

import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest

from mcp_bastion.config import Settings
from mcp_bastion.security import token_hash
from tests.harness import TOOLBOX, free_port, run_gateway, serve_process, spec, wait_until
from tests.security.support import CLI, audit_events
from tests.transports.wire import http_client, initialize, sse_initialize, sse_session, text_of, tool_call

RCVBUF_BYTES = 4096  # the non-reading client's socket takes as little as the kernel allows
READ_TO_EOF_S = 20.0


def open_unread_sse(port: int, server: str, headers: str = "") -> tuple[socket.socket, str]:
    """GET /mcp/{server}/sse on a raw socket; read only the `endpoint` event. Returns the socket and messages path."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    head = f"GET /mcp/{server}/sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{headers}\r\n"
    sock.sendall(head.encode())
    seen = b""
    while b"session_id=" not in seen or b"\n\n" not in seen.split(b"session_id=", 1)[1]:
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen
    endpoint = seen.split(b"data: ", 1)[1].split(b"\n", 1)[0].decode()
    return sock, endpoint


def flood(client: httpx.Client, messages: str, calls: int, size: int, sample: Any = None) -> list[int]:
    """Ask for `calls` answers of `size` bytes on a stream nobody reads; stops early once the session is gone."""
    statuses = []
    assert client.post(messages, json=initialize("2024-11-05")).status_code == 202
    for request_id in range(1, calls + 1):
        status = client.post(messages, json=tool_call(request_id, "big", {"size": size})).status_code
        statuses.append(status)
        if sample is not None:
            sample()
        if status == 404:
            break
    return statuses


def read_to_eof(sock: socket.socket) -> None:
    """Drain the socket until the server has closed it (EOF, or a reset if it dropped what was still unsent)."""
    deadline = time.monotonic() + READ_TO_EOF_S
    try:
        while sock.recv(1 << 20):
            assert time.monotonic() < deadline, "the server never closed the stream"
    except ConnectionResetError:
        pass


def session_of(endpoint: str) -> str:
    return endpoint.rsplit("session_id=", 1)[1]


def test_a_client_that_stops_reading_loses_its_stream_and_session_at_the_byte_budget(tmp_path: Path) -> None:
    """Issue 8 item 9: past OUTBOX_MAX_BYTES queued for a stream nobody reads, the session ends (stream.overflow with
    the principal and the byte count), the server closes the connection, and its stream slot frees."""
    budget = 64 * 1024
    settings = {"outbox_max_bytes": budget, "max_streams_per_principal": 1}
    with run_gateway([spec("toolbox")], tmp_path, **settings) as gw, httpx.Client(timeout=10) as client:
        port = int(gw.url.rsplit(":", 1)[1])
        sock, endpoint = open_unread_sse(port, "toolbox")
        with sock:
            flood(client, gw.url + endpoint, calls=400, size=60_000)
            wait_until(lambda: len(audit_events(tmp_path, "stream.overflow")) == 1)
            after = client.post(gw.url + endpoint, json=tool_call(999, "echo", {"text": "late"}))
            read_to_eof(sock)
        wait_until(lambda: stream_opens(client, gw.mcp("toolbox")))  # the principal's one stream slot is free again
    [line] = audit_events(tmp_path, "stream.overflow")
    assert line["session"] == token_hash(session_of(endpoint))[:16]
    assert line["bytes"] > budget
    assert line["limit"] == budget
    assert (line["server"], line["outcome"]) == ("toolbox", "closed")
    assert line["principal"]
    assert after.status_code == 404


def stream_opens(client: httpx.Client, url: str) -> bool:
    with client.stream("GET", url + "/sse", headers={"Accept": "text/event-stream"}) as response:
        return response.status_code == 200


def clean_env() -> dict[str, str]:
    settings = {name.upper() for name in Settings.model_fields}
    return {key: value for key, value in os.environ.items() if key.upper() not in settings}


def test_a_real_server_keeps_its_memory_bounded_when_a_client_stops_reading(tmp_path: Path) -> None:
    """Issue 8 item 9, the real process: 150 answers of 400 KB to a non-reading HTTP+SSE client (60 MB that main
    kept queued) leave the `mcp-bastion serve` process's RSS within a few MiB of its budget."""
    port, token = free_port(), "adm-" + secrets.token_urlsafe(32)
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"toolbox": {"command": sys.executable, "args": TOOLBOX[1:]}}}))
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"HOST=127.0.0.1\nPORT={port}\nAUTH_TOKEN={token}\nSTORE_URL=memory://\nLOG_DIR={tmp_path / 'logs'}\n"
        f"AUDIT_LOG={tmp_path / 'logs' / 'audit.jsonl'}\nLOG_LEVEL=warning\nOUTBOX_MAX_BYTES=1048576\n"
        "RATE_LIMIT_MAX_REQUESTS=1000000\nRATE_LIMIT_TOKEN_MAX_REQUESTS=1000000\n"
    )
    env_file.chmod(0o600)
    auth = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        health = httpx.get(base + "/health", headers=auth, timeout=5)
        return health.status_code == 200 and health.json()["servers"]["toolbox"]["state"] == "running"

    argv = [str(CLI), "serve", "--env-file", str(env_file), "--config", str(config)]
    with (
        serve_process(argv, cwd=tmp_path, env=clean_env(), log=tmp_path / "serve.log", ready=ready) as proc,
        httpx.Client(timeout=10, headers=auth) as client,
    ):
        gateway = psutil.Process(proc.pid)
        baseline = gateway.memory_info().rss
        peak = [baseline]

        def sample() -> None:
            peak[0] = max(peak[0], gateway.memory_info().rss)

        sock, endpoint = open_unread_sse(port, "toolbox", f"Authorization: Bearer {token}\r\n")
        with sock:
            flood(client, base + endpoint, calls=150, size=400_000, sample=sample)

            def answered() -> bool:
                sample()
                return bool(client.get(base + "/health").json()["servers"]["toolbox"]["pending"] == 0)

            wait_until(answered, timeout=60)  # every answer reached the gateway (queued, sent or dropped)
            growth_mib = (peak[0] - baseline) / 2**20
            assert growth_mib < 32, f"gateway RSS grew {growth_mib:.1f} MiB"
            wait_until(lambda: len(audit_events(tmp_path, "stream.overflow")) == 1)
    [line] = audit_events(tmp_path, "stream.overflow")
    assert "admin" in line["principal"]
    assert line["bytes"] > 1048576


@pytest.mark.anyio
async def test_a_client_that_reads_gets_answers_larger_than_the_budget(tmp_path: Path) -> None:
    """Issue 8 item 9: the budget bounds a backlog, not one message; a reading client never overflows."""
    with run_gateway([spec("toolbox")], tmp_path, outbox_max_bytes=64 * 1024) as gw:
        async with http_client() as client, sse_session(client, gw.url, "toolbox") as (reader, messages):
            await sse_initialize(client, reader, messages)
            for request_id in range(1, 6):
                call = tool_call(request_id, "big", {"size": 200_000})
                assert (await client.post(messages, json=call)).status_code == 202
                with anyio.fail_after(10):
                    answer = await reader.message()
                assert (answer["id"], len(text_of(answer))) == (request_id, 200_000)
    assert audit_events(tmp_path, "stream.overflow") == []
