"""Canary sweep: every secret gets a unique value; the real `mcp-bastion serve` is driven through every route and
failure; no secret appears in any response, log, audit line, /health, or the gateway's stdout/stderr. Children
get only their own variables, and a child's stderr log masks its own secrets."""

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.harness import FIXTURES, free_port, wait_until
from tests.security.support import (
    CLI,
    JSON_ACCEPT,
    bearer,
    canary,
    clean_env,
    legacy_headers,
    modern_call,
    open_legacy_session,
    rpc,
    run_cli,
    write_env,
)

TOOLBOX = {"command": sys.executable, "args": [str(FIXTURES / "toolbox.py")]}


def dump(answer: httpx.Response) -> bytes:
    head = "\n".join(f"{k}: {v}" for k, v in answer.headers.multi_items())
    return f"{answer.status_code}\n{head}\n\n".encode() + answer.content


def test_canary_sweep_finds_no_secret_anywhere(tmp_path: Path) -> None:
    """SEC-01, SEC-02, SEC-04, CP-07, CP-11, LOG-06, AUTH-12: admin token, named tokens, session secret and each
    child's API key are unique canaries; after driving every route and failure: 0 occurrences in responses, the
    audit log, /health, server logs and the gateway's stdout/stderr; children never see the gateway's variables."""
    port = free_port()
    secrets = {
        "admin": canary("admin"),
        "session": canary("session"),
        "alpha_key": canary("alpha"),
        "beta_key": canary("beta"),
        "gateway_env": canary("gwenv"),
    }
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "alpha": {**TOOLBOX, "env": {"TOOLBOX_API_KEY": "${ALPHA_KEY}"}},
                    "beta": {**TOOLBOX, "env": {"TOOLBOX_API_KEY": "${BETA_KEY}"}},
                }
            }
        )
    )
    env_file = write_env(
        tmp_path,
        AUTH_TOKEN=secrets["admin"],
        SESSION_SECRET=secrets["session"],
        ALPHA_KEY=secrets["alpha_key"],
        BETA_KEY=secrets["beta_key"],
        MCP_CONFIG=str(config),
        LOG_DIR=str(tmp_path / "logs"),
        LOG_LEVEL="debug",
        PORT=str(port),
        RESTART_BACKOFF_INITIAL_S="0.05",
    )
    created = run_cli(tmp_path, env_file, "token", "create", "alpha-user", "--scope", "server:alpha", "--json")
    assert created.returncode == 0, created.stderr
    secrets["named"] = json.loads(created.stdout)["token"]
    doomed = run_cli(tmp_path, env_file, "token", "create", "doomed", "--json")
    secrets["doomed"] = json.loads(doomed.stdout)["token"]
    cli_outputs = [created.stderr, doomed.stderr]

    out_path, err_path = tmp_path / "serve.out", tmp_path / "serve.err"
    gateway_env = clean_env(tmp_path, BASTION_GATEWAY_SECRET=secrets["gateway_env"], AUTH_TOKEN=secrets["admin"])
    base = f"http://127.0.0.1:{port}"
    captured: list[bytes] = []
    child_env: dict[str, str] = {}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(CLI), "serve", "--env-file", str(env_file)], cwd=tmp_path, env=gateway_env, stdout=out, stderr=err
        )
        try:
            wait_until(lambda: _ready(base, secrets["admin"]), timeout=30, interval=0.05)
            admin, named = secrets["admin"], secrets["named"]
            with httpx.Client(timeout=15) as c:
                a = captured.append
                a(dump(c.get(f"{base}/livez")))
                a(dump(c.get(f"{base}/health")))
                a(dump(c.get(f"{base}/health", headers=bearer(admin))))
                a(dump(c.get(f"{base}/health", headers=bearer(named))))
                a(dump(c.get(f"{base}/mcp/servers", headers=bearer(admin))))
                a(dump(c.get(f"{base}/auth/session", headers=bearer(named))))
                a(dump(c.get(f"{base}/auth/session", headers=bearer(admin[:-1] + "x"))))
                a(dump(c.get(f"{base}/auth/session?access_token={admin}")))
                a(dump(c.get(f"{base}/auth/session?token={named}", headers=bearer(named))))
                a(dump(c.get(f"{base}/auth/session", headers={"Cookie": f"Authorization={admin}"})))
                login = c.post(f"{base}/auth/login", json={"token": admin})
                a(dump(login))
                a(dump(c.post(f"{base}/auth/login", json={"token": named + "x"})))
                a(dump(c.get(f"{base}/admin/sessions")))
                a(dump(c.post(f"{base}/auth/logout", headers={"X-CSRF-Token": login.json()["csrf_token"]})))
                c.cookies.clear()
                for server in ("alpha", "beta"):
                    url = f"{base}/mcp/{server}"
                    a(dump(modern_call(c, url, admin, "tools/list")))
                    a(dump(modern_call(c, url, admin, "tools/call", {"name": "secret", "arguments": {}})))
                    a(dump(modern_call(c, url, admin, "tools/call", {"name": "echo", "arguments": {"text": "x"}})))
                    env = modern_call(c, url, admin, "tools/call", {"name": "env", "arguments": {}})
                    child_env[server] = json.loads(env.json()["result"]["content"][0]["text"])
                a(dump(modern_call(c, f"{base}/mcp/beta", named, "tools/list")))
                a(dump(modern_call(c, f"{base}/mcp/alpha", named, "tools/call", {"name": "echo", "arguments": {}})))
                session = open_legacy_session(c, f"{base}/mcp/alpha", named)
                a(dump(c.post(f"{base}/mcp/alpha", json=rpc(2, "tools/list"), headers=legacy_headers(named, session))))
                a(dump(c.post(f"{base}/mcp/alpha", json=rpc(3, "ping"), headers=legacy_headers(admin, session))))
                a(dump(c.post(f"{base}/mcp/alpha", content=b"{bad", headers={**JSON_ACCEPT, **bearer(admin)})))
                a(dump(c.post(f"{base}/mcp/nope", json={}, headers={**JSON_ACCEPT, **bearer(admin)})))
                a(dump(c.get(f"{base}/mcp/alpha", headers={**bearer(admin), "Origin": "https://evil.example"})))
                a(dump(c.get(f"{base}/livez", headers={"Host": "evil.example"})))
                crash = {"name": "crash", "arguments": {}}
                a(dump(modern_call(c, f"{base}/mcp/beta", admin, "tools/call", crash)))
                a(dump(c.post(f"{base}/mcp/beta/restart", headers=bearer(admin))))
                with c.stream(
                    "GET", f"{base}/mcp/alpha/sse", headers={"Accept": "text/event-stream", **bearer(admin)}
                ) as s:
                    lines = s.iter_lines()
                    captured.append("\n".join([next(lines), next(lines)]).encode())
                revoked = run_cli(tmp_path, env_file, "token", "revoke", "doomed")
                cli_outputs += [revoked.stdout, revoked.stderr]
                a(dump(c.get(f"{base}/auth/session", headers=bearer(secrets["doomed"]))))
                wait_until(lambda: _running(base, admin, "beta"), timeout=15, interval=0.05)
                a(dump(c.get(f"{base}/health", headers=bearer(admin))))
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    places: dict[str, bytes] = {
        "responses": b"\n".join(captured),
        "gateway stdout": out_path.read_bytes(),
        "gateway stderr": err_path.read_bytes(),
        "cli stderr and revoke output": "\n".join(cli_outputs).encode(),
    }
    for path in (tmp_path / "logs").rglob("*"):
        if path.is_file():
            places[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert "logs/audit.jsonl" in places
    assert "logs/servers/alpha.log" in places
    hits = [
        (name, where) for name, value in secrets.items() for where, data in places.items() if value.encode() in data
    ]
    assert hits == []

    # each child's stderr log shows its `secret` line, masked
    for server in ("alpha", "beta"):
        assert b"my key is ****" in places[f"logs/servers/{server}.log"]
    # children get only their own variables: nothing of the gateway's environment, settings or the other child
    assert child_env["alpha"]["TOOLBOX_API_KEY"] == secrets["alpha_key"]
    assert child_env["beta"]["TOOLBOX_API_KEY"] == secrets["beta_key"]
    for server, env in child_env.items():
        assert not {"AUTH_TOKEN", "SESSION_SECRET", "BASTION_GATEWAY_SECRET", "ALPHA_KEY", "BETA_KEY"} & set(env), (
            server
        )
        leaked = [k for k, v in env.items() if any(s in v for n, s in secrets.items() if n != f"{server}_key")]
        assert leaked == [], (server, leaked)
    # /health is admin detail only: no command lines, args, env or paths
    health = places["responses"]
    assert str(FIXTURES).encode() not in health
    assert b"toolbox.py" not in health


def _ready(base: str, admin: str) -> bool:
    try:
        health = httpx.get(f"{base}/health", headers=bearer(admin), timeout=2)
    except httpx.TransportError:
        return False
    return health.status_code == 200 and all(s["state"] == "running" for s in health.json()["servers"].values())


def _running(base: str, admin: str, server: str) -> bool:
    return httpx.get(f"{base}/health", headers=bearer(admin), timeout=5).json()["servers"][server]["state"] == "running"
