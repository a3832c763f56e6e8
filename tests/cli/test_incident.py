"""`mcp-bastion sessions list|revoke` and `lockdown`, run as the real CLI against a live gateway sharing a SQLite
store: every revocation applies to the running server on its next request, without a restart."""

import asyncio
import http.server
import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_bastion.cli.incident import write_env_token
from mcp_bastion.cluster.bus import CHANNEL
from mcp_bastion.config import load_settings
from mcp_bastion.middleware.auth import Authenticator
from mcp_bastion.security import token_hash
from mcp_bastion.store import StoreError, open_store
from mcp_bastion.store.memory import MemoryStore
from tests.harness import RunningGateway, free_port, spec
from tests.redis_server import client as redis_client
from tests.redis_server import redis_server
from tests.security.support import (
    CLI,
    CLI_TIMEOUT_S,
    admin_token,
    assert_rejection,
    audit_events,
    audit_text,
    bearer,
    clean_env,
    legacy_headers,
    open_legacy_session,
    rpc,
    run_cli,
    secure_gateway,
    write_env,
)

HEARD_WITHIN_S = 5.0  # a published message reaches a subscriber on loopback in milliseconds


def port_of(gw: RunningGateway) -> str:
    return gw.url.rsplit(":", 1)[1]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[RunningGateway, Path, str]]:
    """A gateway (toolbox child) on a SQLite store, and a .env naming it (PORT) and holding its AUTH_TOKEN."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, store_url=f"sqlite:///{tmp_path}/s.db") as gw:
        env_file = write_env(tmp_path, AUTH_TOKEN=admin, HOST="127.0.0.1", PORT=port_of(gw))
        yield gw, env_file, admin


def cli_json(tmp_path: Path, env_file: Path, *args: str) -> dict[str, Any]:
    done = run_cli(tmp_path, env_file, *args, "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    return dict(json.loads(done.stdout))


def named_token(tmp_path: Path, env_file: Path, name: str, *scopes: str) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    return str(cli_json(tmp_path, env_file, "token", "create", name, *args)["token"])


def login(client: httpx.Client, gw: RunningGateway, token: str) -> str:
    """POST /auth/login; returns the session cookie's value."""
    response = client.post(f"{gw.url}/auth/login", json={"token": token})
    assert response.status_code == 200, response.text
    return str(response.cookies["bastion_session"])


def with_cookie(client: httpx.Client, gw: RunningGateway, cookie: str) -> httpx.Response:
    client.cookies.clear()  # only the cookie under test, never one the jar kept
    return client.get(f"{gw.url}/auth/session", headers={"Cookie": f"bastion_session={cookie}"})


def ping(client: httpx.Client, gw: RunningGateway, token: str, session: str) -> httpx.Response:
    return client.post(gw.mcp("toolbox"), json=rpc(7, "ping"), headers=legacy_headers(token, session))


# --- sessions list / revoke -----------------------------------------------------------------------------------


def test_sessions_list_shows_logins_from_the_store_and_mcp_sessions_from_the_server(
    tmp_path: Path, live: tuple[RunningGateway, Path, str]
) -> None:
    """A login made with POST /auth/login is listed by its public id (16 hex of the cookie's hash), principal and
    client IP; the running server's MCP client session (found on HOST:PORT from the .env) is listed too; no cookie
    or token value is ever printed."""
    gw, env_file, admin = live
    laptop = named_token(tmp_path, env_file, "laptop", "server:toolbox")
    with httpx.Client(timeout=10) as client:
        cookie = login(client, gw, laptop)
        mcp_session = open_legacy_session(client, gw.mcp("toolbox"), admin)
    listed = cli_json(tmp_path, env_file, "sessions", "list")
    assert listed["server"]["status"] == "ok"
    by_kind = {row["kind"]: row for row in listed["sessions"]}
    assert len(listed["sessions"]) == 2
    row = by_kind["login"]
    assert row["id"] == token_hash(cookie)[:16]
    assert (row["principal"], row["client_ip"]) == ("laptop", "127.0.0.1")
    assert row["created"] < row["expires"]
    mcp = by_kind["mcp"]
    assert mcp["id"] == token_hash(mcp_session)[:16]
    assert (mcp["server"], mcp["principal"]) == ("toolbox", "env:admin")  # the stable principal id (issue 8 item 5)

    plain = run_cli(tmp_path, env_file, "sessions", "list")
    assert plain.returncode == 0, plain.stderr
    assert row["id"] in plain.stdout
    assert mcp["id"] in plain.stdout
    for secret in (cookie, laptop, admin, mcp_session):
        assert secret not in plain.stdout + plain.stderr + json.dumps(listed)


def test_sessions_list_without_a_running_server(tmp_path: Path) -> None:
    """Nothing on HOST:PORT: login sessions still come from the store, with a note; an explicit --url that does
    not answer is an error (exit 2)."""
    env_file = write_env(tmp_path, AUTH_TOKEN=admin_token(), PORT=str(free_port()))
    listed = run_cli(tmp_path, env_file, "sessions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["sessions"] == []
    assert body["server"]["status"] == "unavailable"
    down = run_cli(tmp_path, env_file, "sessions", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 2
    assert "no answer from" in down.stderr
    clear = run_cli(tmp_path, env_file, "sessions", "list", "--url", "http://192.0.2.1:3001")
    assert clear.returncode == 2
    assert "unencrypted" in clear.stderr


def test_sessions_revoke_refuses_the_cookie_at_once(tmp_path: Path, live: tuple[RunningGateway, Path, str]) -> None:
    """`sessions revoke ID`: the revoked login cookie gets 401 on the very next request, another login is untouched,
    session.revoked is audited; an MCP client session is ended through the admin API (its id then 404s)."""
    gw, env_file, admin = live
    with httpx.Client(timeout=10) as client:
        target = login(client, gw, admin)
        other = login(client, gw, admin)
        assert with_cookie(client, gw, target).status_code == 200
        public_id = token_hash(target)[:16]
        done = run_cli(tmp_path, env_file, "sessions", "revoke", public_id)
        assert done.returncode == 0, done.stderr
        assert_rejection(with_cookie(client, gw, target), 401, "Unauthorized")
        assert with_cookie(client, gw, other).status_code == 200

        mcp_session = open_legacy_session(client, gw.mcp("toolbox"), admin)
        assert ping(client, gw, admin, mcp_session).status_code == 200
        ended = run_cli(tmp_path, env_file, "sessions", "revoke", token_hash(mcp_session)[:16], "--url", gw.url)
        assert ended.returncode == 0, ended.stderr
        assert "ended MCP client session" in ended.stdout
        assert ping(client, gw, admin, mcp_session).status_code == 404
        assert gw.app.gateway.sessions == {}

    again = run_cli(tmp_path, env_file, "sessions", "revoke", public_id)
    assert again.returncode == 2
    assert "no session" in again.stderr
    bad = run_cli(tmp_path, env_file, "sessions", "revoke", "../../admin")
    assert bad.returncode == 2
    assert "16 hex" in bad.stderr
    revoked = [line for line in audit_events(tmp_path, "session.revoked") if line["principal"] == "cli"]
    assert [(r["session"], r["kind"], r["owner"]) for r in revoked] == [(public_id, "login", "admin")]


# --- lockdown -------------------------------------------------------------------------------------------------


def test_lockdown_revokes_everything_on_the_running_server_and_replaces_auth_token(
    tmp_path: Path, live: tuple[RunningGateway, Path, str]
) -> None:
    """`lockdown --yes --json`, no restart: the old AUTH_TOKEN, a named token and a login cookie get 401, an open
    MCP session is gone, the new token (printed once) is admin at once; the .env holds it (0600, other lines
    kept); admin.lockdown is audited with the counts and without any token value."""
    gw, env_file, admin = live
    with env_file.open("a") as fh:
        fh.write("# keep this comment\nSESSION_TTL_S=3600\n")
    env_file.chmod(0o600)
    ci = named_token(tmp_path, env_file, "ci", "server:toolbox")
    with httpx.Client(timeout=10) as client:
        cookie = login(client, gw, ci)
        mcp_session = open_legacy_session(client, gw.mcp("toolbox"), admin)
        assert ping(client, gw, admin, mcp_session).status_code == 200
        assert with_cookie(client, gw, cookie).status_code == 200

        result = cli_json(tmp_path, env_file, "lockdown", "--yes")
        new = result["token"]
        assert (result["tokens_revoked"], result["login_sessions_ended"], result["mcp_sessions_ended"]) == (1, 1, 1)
        assert result["admin_tokens_revoked"] == 1
        assert result["name"] == "lockdown-admin"
        assert result["env_written"] is True

        for old in (admin, ci):
            assert_rejection(client.get(f"{gw.url}/health", headers=bearer(old)), 401, "Unauthorized")
        assert client.post(f"{gw.url}/auth/login", json={"token": admin}).status_code == 401
        assert_rejection(with_cookie(client, gw, cookie), 401, "Unauthorized")
        assert gw.app.gateway.sessions == {}
        assert ping(client, gw, new, mcp_session).status_code == 404
        assert client.get(f"{gw.url}/health", headers=bearer(new)).status_code == 200
        assert client.get(f"{gw.url}/admin/sessions", headers=bearer(new)).status_code == 200

    text = env_file.read_text()
    assert f"AUTH_TOKEN={new}\n" in text
    assert admin not in text
    assert "# keep this comment\nSESSION_TTL_S=3600\n" in text
    assert f"STORE_URL=sqlite:///{tmp_path}/s.db\n" in text
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))
    [line] = audit_events(tmp_path, "admin.lockdown")
    assert (line["principal"], line["outcome"]) == ("cli", "ok")
    assert (line["tokens_revoked"], line["login_sessions_ended"], line["mcp_sessions_ended"]) == (1, 1, 1)
    logged = audit_text(tmp_path)  # both files: the calls log and the security log
    for secret in (new, admin, ci, cookie):
        assert secret not in logged


def test_after_lockdown_a_restart_uses_the_new_auth_token_and_the_old_one_stays_revoked(
    tmp_path: Path, live: tuple[RunningGateway, Path, str]
) -> None:
    """The restarted server reads the new AUTH_TOKEN from the .env (it works even once `lockdown-admin` is revoked
    from the store); a server started again with the OLD token (a restored .env) still refuses it."""
    gw, env_file, admin = live
    new = cli_json(tmp_path, env_file, "lockdown", "--yes")["token"]
    gw.server.should_exit = True
    gw.thread.join(30)
    store_url = f"sqlite:///{tmp_path}/s.db"
    restarted_token = load_settings(env_file).auth_token
    assert restarted_token is not None
    assert restarted_token.get_secret_value() == new
    assert run_cli(tmp_path, env_file, "token", "revoke", "lockdown-admin").returncode == 0
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=new, store_url=store_url) as again:
        assert httpx.get(f"{again.url}/health", headers=bearer(new), timeout=10).status_code == 200
        assert httpx.get(f"{again.url}/health", headers=bearer(admin), timeout=10).status_code == 401
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, store_url=store_url) as restored:
        assert httpx.get(f"{restored.url}/health", headers=bearer(admin), timeout=10).status_code == 401


def test_lockdown_answered_no_changes_nothing(tmp_path: Path, live: tuple[RunningGateway, Path, str]) -> None:
    """Without --yes, lockdown asks; answering "n" exits 1 and leaves tokens, sessions, MCP sessions, the .env and
    the audit log as they were."""
    gw, env_file, admin = live
    ci = named_token(tmp_path, env_file, "ci", "server:toolbox")
    before = env_file.read_bytes()
    with httpx.Client(timeout=10) as client:
        cookie = login(client, gw, ci)
        mcp_session = open_legacy_session(client, gw.mcp("toolbox"), admin)
        done = subprocess.run(
            [str(CLI), "lockdown", "--env-file", str(env_file)],
            cwd=tmp_path,
            env=clean_env(tmp_path),
            input="n\n",
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "Revoke EVERY token" in done.stderr
        assert "nothing changed" in done.stderr
        assert done.stdout.strip() == ""  # click writes the space after the prompt to stdout
        for token in (admin, ci):
            assert client.get(f"{gw.url}/health", headers=bearer(token)).status_code == 200
        assert with_cookie(client, gw, cookie).status_code == 200
        assert ping(client, gw, admin, mcp_session).status_code == 200
    assert env_file.read_bytes() == before
    assert audit_events(tmp_path, "admin.lockdown") == []
    assert [t["name"] for t in cli_json(tmp_path, env_file, "token", "list")["tokens"]] == ["ci"]


def test_lockdown_without_a_running_server_still_contains(tmp_path: Path) -> None:
    """No server answers: the store side still happens (a server started later refuses the old token), the MCP
    step is reported as unavailable, and a .env with no AUTH_TOKEN line gets one."""
    env_file = write_env(tmp_path, PORT=str(free_port()))
    old = admin_token()
    result = cli_json(tmp_path, env_file, "lockdown", "--yes")
    assert result["server"]["status"] == "unavailable"
    assert (result["mcp_sessions_ended"], result["admin_tokens_revoked"]) == (0, 0)
    assert env_file.read_text().count("AUTH_TOKEN=") == 1
    done = subprocess.run(
        [str(CLI), "lockdown", "--yes", "--json", "--env-file", str(env_file)],
        cwd=tmp_path,
        env=clean_env(tmp_path, AUTH_TOKEN=old),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "AUTH_TOKEN is also set in the environment" in done.stderr
    assert json.loads(done.stdout)["admin_tokens_revoked"] == 2  # the environment's and the .env's
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=old, store_url=f"sqlite:///{tmp_path}/s.db") as gw:
        assert httpx.get(f"{gw.url}/health", headers=bearer(old), timeout=10).status_code == 401


class RateLimited(http.server.BaseHTTPRequestHandler):
    """A server that rate-limits everything: 429 with Retry-After, as a gateway does past its limit."""

    def do_GET(self) -> None:
        self.send_response(429)
        self.send_header("Retry-After", "60")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Too many requests"}')

    do_DELETE = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rate_limited() -> Iterator[str]:
    """The URL of a loopback server answering 429 to every request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_lockdown_says_what_is_still_open_and_exits_1_when_the_server_rate_limits_it(
    tmp_path: Path, rate_limited: str
) -> None:
    """Issue 10 item 6: the running server answers 429 to the sessions call; lockdown still revokes in the store and
    replaces AUTH_TOKEN, but reports each step, marks the MCP step NOT done (rate limited, retry after 60 s), says
    "INCOMPLETE" instead of "done", and exits 1; the JSON says the same step by step; the audit line is an error."""
    env_file = write_env(tmp_path, AUTH_TOKEN=admin_token(), PORT=str(free_port()))
    named_token(tmp_path, env_file, "ci", "server:toolbox")
    done = run_cli(tmp_path, env_file, "lockdown", "--yes", "--url", rate_limited, COLUMNS="400")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Lockdown INCOMPLETE" in done.stdout
    assert "Lockdown done" not in done.stdout
    assert "named tokens revoked:" in done.stdout
    [error] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "lockdown incomplete: MCP client sessions ended: NOT all ended" in error
    assert "HTTP 429" in error
    assert "retry after 60 s" in error
    assert "sessions list" in error

    again = run_cli(tmp_path, env_file, "lockdown", "--yes", "--json", "--url", rate_limited)
    assert again.returncode == 1, again.stderr
    result = json.loads(again.stdout)
    assert result["complete"] is False
    assert result["env_written"] is True
    steps = {step["name"]: step for step in result["steps"]}
    assert steps["MCP client sessions ended"]["status"] == "failed"
    assert "unknown still open" in steps["MCP client sessions ended"]["detail"]
    assert steps["named tokens revoked"]["status"] == "done"
    assert steps["AUTH_TOKEN replaced"]["status"] == "done"
    assert env_file.read_text().count(f"AUTH_TOKEN={result['token']}\n") == 1
    outcomes = [line["outcome"] for line in audit_events(tmp_path, "admin.lockdown")]
    assert outcomes == ["error", "error"]


def test_lockdown_with_an_explicit_url_that_does_not_answer_exits_1(tmp_path: Path) -> None:
    """Issue 10 item 6: --url names the server and nothing answers there: its MCP sessions may still be open, so the
    lockdown is incomplete (exit 1), unlike a lockdown with no --url and no server on HOST:PORT (nothing is open)."""
    env_file = write_env(tmp_path, AUTH_TOKEN=admin_token(), PORT=str(free_port()))
    done = run_cli(tmp_path, env_file, "lockdown", "--yes", "--json", "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1, done.stderr
    [step] = [step for step in json.loads(done.stdout)["steps"] if step["name"] == "MCP client sessions ended"]
    assert step["status"] == "failed"
    assert "no answer from" in step["detail"]
    assert "lockdown incomplete" in done.stderr


def test_sessions_list_says_rate_limited_for_a_429_not_pass_url(tmp_path: Path, rate_limited: str) -> None:
    """Issue 10 item 6: a 429 from the admin API means "rate limited, retry after N s", not "wrong address": with
    --url the one error line says so (exit 2); with the server found on HOST:PORT the note says so too."""
    port = rate_limited.rsplit(":", 1)[1]
    env_file = write_env(tmp_path, AUTH_TOKEN=admin_token(), PORT=port)
    explicit = run_cli(tmp_path, env_file, "sessions", "list", "--url", rate_limited, COLUMNS="400")
    assert explicit.returncode == 2
    assert "HTTP 429" in explicit.stderr
    assert "retry after 60 s" in explicit.stderr
    assert "pass --url" not in explicit.stderr
    implicit = run_cli(tmp_path, env_file, "sessions", "list", COLUMNS="400")
    assert implicit.returncode == 0, implicit.stderr
    [note] = [line for line in implicit.stderr.splitlines() if line.startswith("note:")]
    assert "rate limiting this address: retry after 60 s" in note
    assert "pass --url" not in note


# --- the pieces -----------------------------------------------------------------------------------------------


def test_write_env_token_replaces_one_line_atomically_and_privately(tmp_path: Path) -> None:
    """Every AUTH_TOKEN line (also `export AUTH_TOKEN = ...`) becomes one, other lines are kept byte for byte, and
    the file ends 0600 even under a permissive umask, with no temporary file left behind."""
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\nexport AUTH_TOKEN = old\n# AUTH_TOKEN=commented\nB='x y'\nAUTH_TOKEN=dup\nC=3")
    env_file.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_env_token(env_file, "mcpb_new")
    finally:
        os.umask(old_umask)
    assert env_file.read_text() == "A=1\nAUTH_TOKEN=mcpb_new\n# AUTH_TOKEN=commented\nB='x y'\nC=3"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]


def test_write_env_token_refuses_a_symlinked_env_and_leaves_its_target_alone(tmp_path: Path) -> None:
    """Issue 8 item 12: a symlink where the .env goes is refused (the error names it); the target is untouched."""
    target = tmp_path / "elsewhere.env"
    target.write_text("AUTH_TOKEN=old\n")
    target.chmod(0o644)
    link = tmp_path / ".env"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symlink") as caught:
        write_env_token(link, "mcpb_new")
    assert str(link) in str(caught.value)
    assert target.read_text() == "AUTH_TOKEN=old\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "elsewhere.env"]


class CountingStore(MemoryStore):
    """A memory store that counts revocation lookups and can be made to fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.down = False

    async def is_revoked(self, token_hash: str) -> bool:
        self.lookups += 1
        if self.down:
            raise StoreError("down")
        return await super().is_revoked(token_hash)


def test_authenticator_checks_revocation_only_for_the_admin_token() -> None:
    """One `is_revoked` lookup per admin-token request and none for other tokens; a revoked admin token is refused;
    with the store down the admin token fails closed (StoreError, which the pipeline answers with 503)."""
    admin = admin_token()

    async def scenario() -> None:
        store = CountingStore()
        auth = Authenticator(admin_token=admin, store=store)
        assert (await auth.by_token("tok-unknown-0123456789"))[0] is None
        assert store.lookups == 0
        principal, _ = await auth.by_token(admin)
        assert principal is not None
        assert principal.scopes == ("admin",)
        assert store.lookups == 1
        store.down = True
        with pytest.raises(StoreError):
            await auth.by_token(admin)
        store.down = False
        await store.revoke_hash(token_hash(admin))
        assert await auth.by_token(admin) == (None, "revoked token")
        store.down = True
        assert await auth.by_token(admin) == (None, "revoked token")

    asyncio.run(scenario())


def test_sqlite_revocations_survive_reopening(tmp_path: Path) -> None:
    """A revoked hash is persistent: a fresh store on the same file (a restarted server) still sees it."""
    url = f"sqlite:///{tmp_path}/s.db"

    async def scenario() -> None:
        first = open_store(url)
        await first.revoke_hash(token_hash("old"))
        await first.close()
        second = open_store(url)
        assert await second.is_revoked(token_hash("old"))
        assert not await second.is_revoked(token_hash("new"))
        await second.close()

    asyncio.run(scenario())


def test_help_lists_the_commands(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CLI), "--help"], env=clean_env(tmp_path), capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    assert done.returncode == 0
    assert "lockdown" in done.stdout
    assert "sessions" in done.stdout


def test_lockdown_in_cluster_mode_tells_every_instance_to_sweep_at_once(tmp_path: Path) -> None:
    """Issue 12 item 4: lockdown revokes in the shared store and announces it on Redis, so every instance ends what
    the revoked tokens and sessions opened now, not at its next REVOCATION_CHECK_S."""
    with redis_server(tmp_path) as redis_url, redis_client(redis_url) as redis, redis.pubsub() as listener:
        listener.subscribe(CHANNEL)
        assert listener.get_message(timeout=HEARD_WITHIN_S)["type"] == "subscribe"
        env_file = write_env(tmp_path, PORT=str(free_port()), REDIS_URL=redis_url)
        result = cli_json(tmp_path, env_file, "lockdown", "--yes")
        heard = listener.get_message(timeout=HEARD_WITHIN_S)
    assert result["server"]["status"] == "unavailable"
    assert heard is not None, "the lockdown was not announced"
    assert json.loads(heard["data"])["kind"] == "sweep"
