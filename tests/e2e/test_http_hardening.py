"""Issue 8 item 6: what a client may hold before authentication, tried with raw sockets against the real CLI server.

Slow heads (408 at HEAD_TIMEOUT_S), huge heads (431 at MAX_HEADER_BYTES, not buffered), too many connections (a
prebuilt 503 at MAX_CONNECTIONS, /livez still served), idle kept-alive connections (KEEPALIVE_TIMEOUT_S), broken
framing (400) and WebSocket upgrades (403, audited): every answer carries the security headers.
"""

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_bastion.cli.http_server import Refusals, connection_cap
from mcp_bastion.middleware.headers import BASE_HEADERS
from mcp_bastion.security import new_token
from tests.harness import free_port, serve_process, wait_until
from tests.security.support import CLI, audit_lines, clean_env, write_env

HEAD_TIMEOUT_S = 2.0
KEEPALIVE_TIMEOUT_S = 1
# Slack for a loaded 2-core machine between a server-side deadline and the client seeing the close.
CLOSE_SLACK_S = 3.0
TRICKLE_INTERVAL_S = 0.1
BIG_HEADER_BYTES = 32 * 1024 * 1024
# RSS may move by allocator noise, never by anything near the 32 MB the client sent.
RSS_GROWTH_MAX_BYTES = 8 * 1024 * 1024
LIVEZ = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
LIVEZ_CLOSE = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
# The cap test's server runs with this descriptor limit, so the derived MAX_CONNECTIONS is 128 - 64 = 64.
LOW_NOFILE = 128
SET_NOFILE_THEN_EXEC = (
    "import os, resource, sys; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LOW_NOFILE}, hard)); os.execv(sys.argv[1], sys.argv[1:])"
)


@dataclass
class Server:
    port: int
    pid: int
    workdir: Path

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def start(tmp: Path, settings: dict[str, str], *, wrapper: list[str] | None = None) -> Iterator[Server]:
    """`mcp-bastion serve` with no children on a free loopback port, configured by a tmp .env only."""
    port = free_port()
    config = tmp / "mcp.json"
    config.write_text('{"mcpServers": {}}', encoding="utf-8")
    env_file = write_env(tmp, PORT=str(port), AUTH_TOKEN=new_token(), LOG_DIR=str(tmp / "logs"), **settings)
    argv = [*(wrapper or []), str(CLI), "serve", "--env-file", str(env_file), "--config", str(config)]

    def ready() -> bool:
        return httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200

    with serve_process(argv, cwd=tmp, env=clean_env(tmp), log=tmp / "serve.log", ready=ready) as proc:
        yield Server(port, proc.pid, tmp)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = {"HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S), "KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_TIMEOUT_S)}
    yield from start(tmp_path_factory.mktemp("hardening"), settings)


@pytest.fixture
def low_fd_server(tmp_path: Path) -> Iterator[Server]:
    """A server whose RLIMIT_NOFILE is 128 and whose head deadline outlasts the test, so idle sockets stay."""
    yield from start(tmp_path, {"HEAD_TIMEOUT_S": "120"}, wrapper=[sys.executable, "-c", SET_NOFILE_THEN_EXEC])


def read_answer(sock: socket.socket) -> Answer:
    """One whole response; the socket stays open for the next one."""
    data = b""
    while not complete(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a complete answer: {data!r}")
        data += chunk
    return parse_answer(data)


def complete(data: bytes) -> bool:
    """Whether `data` holds a whole response (content-length or chunked body)."""
    _, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    headers = parse_answer(data).headers
    if headers.get("transfer-encoding") == "chunked":
        return body.endswith(b"0\r\n\r\n")
    return len(body) >= int(headers.get("content-length", "0"))


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in header_lines)}
    return Answer(int(status_line.split()[1]), headers, body)


def closed_within(sock: socket.socket, bound: float) -> bool:
    """Whether the server closes the socket (EOF or reset) within `bound` seconds, discarding what it sends."""
    deadline = time.monotonic() + bound
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def assert_security_headers(answer: Answer) -> None:
    for name, value in BASE_HEADERS:
        assert answer.headers.get(name.decode()) == value.decode(), f"{name!r} missing or wrong on {answer.status}"


def trickle(sock: socket.socket, data: bytes, *, within: float) -> tuple[bytes, float]:
    """Send `data` one byte per TRICKLE_INTERVAL_S until the server answers or closes; (what it said, seconds)."""
    started = time.monotonic()
    sock.settimeout(TRICKLE_INTERVAL_S)
    for index in range(len(data)):
        if time.monotonic() - started > within:
            break
        try:
            sock.send(data[index : index + 1])
        except (BrokenPipeError, ConnectionResetError):
            return b"", time.monotonic() - started
        try:
            said = sock.recv(65536)  # the pacing: wait one interval for an answer before the next byte
        except TimeoutError:
            continue
        return said, time.monotonic() - started
    raise AssertionError(f"still open after {time.monotonic() - started:.1f}s")


def slow_head() -> bytes:
    """A head long enough that trickling it outlasts every deadline under test."""
    return b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: slowloris\r\n" * 200 + b"\r\n"


def test_a_head_trickled_a_byte_at_a_time_is_answered_408_and_closed_at_the_deadline(server: Server) -> None:
    """Issue 8 item 6: a slowloris socket lives HEAD_TIMEOUT_S, not indefinitely; the 408 has the security headers."""
    with server.connect() as sock:
        said, seconds = trickle(sock, slow_head(), within=HEAD_TIMEOUT_S + CLOSE_SLACK_S)
        assert said.startswith(b"HTTP/1.1 408 "), said[:80]
        assert HEAD_TIMEOUT_S - 0.2 <= seconds <= HEAD_TIMEOUT_S + CLOSE_SLACK_S
        sock.settimeout(5)
        whole = said + b"".join(iter(lambda: sock.recv(65536), b""))  # the server closes after its answer
        assert_security_headers(parse_answer(whole))


def test_a_trickled_second_head_on_a_kept_alive_connection_is_closed_by_the_deadline(server: Server) -> None:
    """Issue 8 item 6: bytes arriving faster than the keep-alive timeout do not extend the next head's deadline."""
    assert TRICKLE_INTERVAL_S < KEEPALIVE_TIMEOUT_S
    with server.connect() as sock:
        sock.sendall(LIVEZ)
        assert read_answer(sock).status == 200
        said, seconds = trickle(sock, slow_head(), within=HEAD_TIMEOUT_S + CLOSE_SLACK_S)
        assert said.startswith(b"HTTP/1.1 408 "), said[:80]
        assert seconds <= HEAD_TIMEOUT_S + CLOSE_SLACK_S


def test_a_32_mb_header_gets_431_and_is_not_buffered(server: Server) -> None:
    """Issue 8 item 6: a 32 MB header is refused with 431 (security headers); the server's RSS does not grow by it."""
    before = server.rss_bytes()
    sent = 0
    with server.connect(timeout=10) as sock:

        def push() -> None:
            nonlocal sent
            block = b"a" * 65536
            try:
                sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                while sent < BIG_HEADER_BYTES:
                    sock.sendall(block)
                    sent += len(block)
            except OSError:
                return  # the server closed after its answer: what this test wants

        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
        answer = read_answer(sock)
        pusher.join(10)
    assert answer.status == 431
    assert_security_headers(answer)
    assert sent < BIG_HEADER_BYTES, "the server read the whole header"
    assert server.rss_bytes() - before < RSS_GROWTH_MAX_BYTES


def test_a_header_block_under_the_cap_is_served(server: Server) -> None:
    """Issue 8 item 6: the cap (16 KiB by default) refuses only what is over it."""
    request = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * 15_000 + b"\r\n\r\n"
    with server.connect() as sock:
        sock.sendall(request)
        assert read_answer(sock).status == 200


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(server: Server) -> None:
    """Issue 8 item 6: after its answer, a connection that sends nothing is closed at KEEPALIVE_TIMEOUT_S."""
    with server.connect() as sock:
        sock.sendall(LIVEZ)
        assert read_answer(sock).status == 200
        answered = time.monotonic()
        assert closed_within(sock, KEEPALIVE_TIMEOUT_S + CLOSE_SLACK_S)
        assert time.monotonic() - answered >= KEEPALIVE_TIMEOUT_S - 0.2


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
    ],
    ids=["bad-content-length", "length-and-chunked", "not-http"],
)
def test_broken_framing_gets_400_with_the_security_headers(server: Server, request_bytes: bytes) -> None:
    """Issue 8 item 6: uvicorn's own 400 for an unparseable request is replaced by ours, headers included."""
    with server.connect() as sock:
        sock.sendall(request_bytes)
        answer = read_answer(sock)
        assert answer.status == 400
        assert_security_headers(answer)
        assert closed_within(sock, CLOSE_SLACK_S)


def test_a_websocket_upgrade_is_refused_403_with_the_security_headers_and_one_audit_line(server: Server) -> None:
    """Issue 8 (also true): a WebSocket upgrade gets 403, never a 500, and one `http.refused` audit line whose path
    leaves out the query string (a client may have put a token there)."""
    secret = new_token()
    path = f"/ws-{secret[5:17]}"
    target = f"{path}?access_token={secret}"
    upgrade = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with server.connect() as sock:
        sock.sendall(upgrade)
        answer = read_answer(sock)
        assert answer.status == 403
        assert_security_headers(answer)
        assert closed_within(sock, CLOSE_SLACK_S)

    def refusals() -> list[dict[str, Any]]:
        return [line for line in audit_lines(server.workdir) if line.get("path") == path]

    wait_until(lambda: len(refusals()) > 0)
    [line] = refusals()
    assert line["event"] == "http.refused"
    assert line["reason"] == "websocket upgrade refused"
    assert line["ip"] == "127.0.0.1"
    assert secret not in json.dumps(audit_lines(server.workdir))


def livez_status(server: Server) -> int:
    with server.connect() as sock:
        sock.sendall(LIVEZ_CLOSE)
        return read_answer(sock).status


def test_connections_over_the_cap_get_a_prebuilt_503_and_livez_keeps_answering(low_fd_server: Server) -> None:
    """Issue 8 item 6: with RLIMIT_NOFILE 128 the derived cap is 64; sockets past it get 503 + Retry-After and are
    closed at once, so idle sockets never exhaust the descriptors and /livez answers whenever a slot is free."""
    cap = connection_cap(None, LOW_NOFILE)
    idle = [low_fd_server.connect() for _ in range(cap - 1)]
    try:
        assert livez_status(low_fd_server) == 200  # the last slot, with every other one held by an idle socket
        idle.append(low_fd_server.connect())
        # Well past the descriptor limit if they were kept: each is refused and closed instead.
        for _ in range(LOW_NOFILE):
            with low_fd_server.connect() as extra:
                answer = read_answer(extra)
                assert answer.status == 503
                assert answer.headers["retry-after"].isdigit()
                assert_security_headers(answer)
                assert closed_within(extra, CLOSE_SLACK_S)
        idle.pop().close()
        wait_until(lambda: livez_status(low_fd_server) == 200)
    finally:
        for sock in idle:
            sock.close()


def test_the_connection_cap_leaves_descriptors_for_children_logs_and_the_store() -> None:
    """Issue 8 item 6: MAX_CONNECTIONS wins when set; otherwise a quarter of RLIMIT_NOFILE (at least 64) is kept."""
    assert connection_cap(50, 1024) == 50
    assert connection_cap(None, 128) == 64
    assert connection_cap(None, 1024) == 768
    assert connection_cap(None, 65536) == 1000
    assert connection_cap(None, 40) == 1


def test_refusals_carry_hsts_when_the_gateway_serves_tls() -> None:
    """Issue 8 item 6: the prebuilt answers get Strict-Transport-Security exactly when the gateway serves HTTPS."""
    assert b"strict-transport-security" in Refusals.build(tls=True).head_timeout
    assert b"strict-transport-security" not in Refusals.build(tls=False).head_timeout
