"""Shared helpers of the security tests: a gateway with authentication on, tokens, and the audit log.

`tests.harness.run_gateway` waits for readiness through an unauthenticated GET /health, which the security
pipeline (rightly) refuses with 401 once auth is on; `secure_gateway` waits on the supervisor's state in-process
instead and otherwise reuses the harness unchanged.
"""

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from mcp_bastion.app import create_app
from mcp_bastion.config import ServerSpec, Settings
from mcp_bastion.security import token_hash
from mcp_bastion.store import TokenRecord
from tests.harness import START_TIMEOUT_S, RunningGateway, free_port, wait_until

BOTH = "application/json, text/event-stream"
JSON_ACCEPT = {"Accept": BOTH, "Content-Type": "application/json"}
MODERN = "2026-07-28"


def canary(label: str) -> str:
    """A unique, greppable secret value (long enough to pass every strength check)."""
    return f"CANARY{label.upper()}{secrets.token_hex(20)}"


def admin_token() -> str:
    return "adm-" + secrets.token_urlsafe(36)


@contextlib.contextmanager
def secure_gateway(
    servers: list[ServerSpec], tmp_path: Path, *, auth_token: str | None, oauth: Any = None, **settings: Any
) -> Iterator[RunningGateway]:
    """A real uvicorn gateway on loopback with the authentication stage ON (insecure_no_auth=False); `port` may be
    chosen beforehand (a setting such as PUBLIC_URL names it)."""
    port = settings.pop("port", None) or free_port()
    values: dict[str, Any] = {
        "insecure_no_auth": False,
        "auth_token": auth_token,
        "store_url": "memory://",
        "audit_log": tmp_path / "logs" / "audit.jsonl",
        "security_log": tmp_path / "logs" / "audit.jsonl",  # one file, as tests read it; the split has its own tests
        "rate_limit_max_requests": 1_000_000,
        "rate_limit_token_max_requests": 1_000_000,
        "auth_failure_limit": 1_000_000,
        "audit_refusals_per_ip": 1_000_000,  # every refusal written, as tests count lines; aggregation tests lower it
        **settings,
    }
    config = Settings(host="127.0.0.1", port=port, log_dir=tmp_path / "logs", **values)
    tls: dict[str, str] = {}
    if config.tls:
        tls = {"ssl_certfile": str(config.tls_cert_file), "ssl_keyfile": str(config.tls_key_file)}
    events: list[tuple[str, dict[str, Any]]] = []
    app = create_app(config, {s.name: s for s in servers}, events=lambda e, **f: events.append((e, f)), oauth=oauth)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            proxy_headers=False,  # as `mcp-bastion serve` runs it: only our own stage reads forwarded headers
            server_header=False,
            date_header=False,
            **tls,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    running = RunningGateway(f"{'https' if tls else 'http'}://127.0.0.1:{port}", app, server, thread, events)
    wait_until(lambda: server.started, START_TIMEOUT_S)
    auto = [s.name for s in servers if s.auto_start and s.isolation == "shared"]
    handles = app.gateway.handles
    wait_until(lambda: all(str(handles[n].state) in ("running", "failed") for n in auto), START_TIMEOUT_S)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(30)


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a memory-store coroutine (it never suspends) from any thread or event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the store call suspended; use the CLI for this store")


def add_token(gw: RunningGateway, name: str, *scopes: str, expires: float | None = None) -> str:
    """Create a named token in the gateway's (memory) store; returns its value."""
    value = "tok-" + secrets.token_urlsafe(32)
    run_sync(gw.app.store.create_token(TokenRecord(name, token_hash(value), tuple(scopes), time.time(), expires)))
    return value


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


AUDIT_FILES = ("audit.jsonl", "security.jsonl")  # the calls log and the security log (Issue 9 item 8)


def audit_text(tmp_path: Path) -> str:
    """The text of both audit files under tmp_path/logs (the calls log, then the security log)."""
    paths = [tmp_path / "logs" / name for name in AUDIT_FILES]
    return "".join(path.read_bytes().decode("utf-8") for path in paths if path.exists())


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    """Every line of the audit files, each parsed (a line that is not JSON fails the test), in time order."""
    lines = [json.loads(line) for line in audit_text(tmp_path).splitlines()]
    return sorted(lines, key=lambda line: str(line.get("time", "")))  # stable: one file's order is kept


def audit_events(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    return [line for line in audit_lines(tmp_path) if line["event"] == event]


def rpc(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def modern_body(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body = dict(params or {})
    body["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "security-test", "version": "0"},
    }
    return rpc(request_id, method, body)


def modern_headers(token: str | None, method: str, name: str | None = None) -> dict[str, str]:
    headers = {**JSON_ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    if token is not None:
        headers.update(bearer(token))
    return headers


def modern_call(
    client: httpx.Client, url: str, token: str | None, method: str, params: dict[str, Any] | None = None
) -> httpx.Response:
    """One self-contained 2026-07-28 request (Mcp-Name set for name-bearing methods)."""
    name = (params or {}).get("name") if method in ("tools/call", "prompts/get") else None
    return client.post(url, json=modern_body(1, method, params), headers=modern_headers(token, method, name))


def open_legacy_session(client: httpx.Client, url: str, token: str, client_name: str = "security-test") -> str:
    """initialize + notifications/initialized on Streamable HTTP (2025-11-25); returns the Mcp-Session-Id."""
    init = rpc(
        0,
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": client_name, "version": "0"}},
    )
    answer = client.post(url, json=init, headers={**JSON_ACCEPT, **bearer(token)})
    assert answer.status_code == 200, answer.text
    session = answer.headers["mcp-session-id"]
    ack = client.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**JSON_ACCEPT, **bearer(token), "Mcp-Session-Id": session},
    )
    assert ack.status_code == 202, ack.text
    return session


def legacy_headers(token: str | None, session: str) -> dict[str, str]:
    headers = {**JSON_ACCEPT, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    if token is not None:
        headers.update(bearer(token))
    return headers


MCP_ROUTE = re.compile(r"/mcp/(?!servers$)[^/]+(/sse|/messages)?")


def assert_rejection(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """The pipeline's rejection: `{"error", "message"}` on JSON routes, a JSON-RPC error on MCP routes."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if MCP_ROUTE.fullmatch(response.request.url.path):
        assert set(body) == {"jsonrpc", "id", "error"}, body
        assert body["id"] is None
        assert isinstance(body["error"]["code"], int)
        assert body["error"]["message"].startswith(f"{error}: "), body
        return {"error": error, "message": body["error"]["message"].removeprefix(f"{error}: ")}
    assert set(body) == {"error", "message"}, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str)
    assert body["message"]
    return dict(body)


CLI = Path(sys.executable).parent / "mcp-bastion"
CLI_TIMEOUT_S = 30.0


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A minimal process environment for the CLI (nothing of the test runner's leaks in)."""
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "LANG": "C.UTF-8", **extra}


def write_env(tmp_path: Path, **values: str) -> Path:
    """A private .env for the CLI; STORE_URL and AUDIT_LOG default to the files a secure_gateway on tmp_path uses."""
    values.setdefault("STORE_URL", f"sqlite:///{tmp_path}/s.db")
    values.setdefault("AUDIT_LOG", str(tmp_path / "logs" / "audit.jsonl"))
    path = tmp_path / "bastion.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), encoding="utf-8")
    path.chmod(0o600)
    return path


def run_cli(tmp_path: Path, env_file: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `mcp-bastion ARGS --env-file ENV_FILE` as a subprocess from tmp_path."""
    return subprocess.run(
        [str(CLI), *args, "--env-file", str(env_file)],
        cwd=tmp_path,
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


class OpenStream:
    """Reads one SSE response in a thread until the server ends it; `ended` is set then."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: Any = None) -> None:
        self.ended = threading.Event()
        self.status: int | None = None
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(method, url, headers, body), daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self, method: str, url: str, headers: dict[str, str], body: Any) -> None:
        try:
            with httpx.stream(method, url, headers=headers, json=body, timeout=30) as answer:
                self.status = answer.status_code
                self.opened.set()
                for _ in answer.iter_raw():
                    pass
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()
