"""One contract for every Store backend (memory, SQLite, Redis), plus what each backend promises on its own
(0600 file, session TTLs, no secret at rest) and how the gateway fails closed when the store is unreachable."""

import json
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcp_bastion.app import create_app
from mcp_bastion.config import Settings
from mcp_bastion.security import new_session_id, new_token, token_hash
from mcp_bastion.store import DuplicateName, LoginSession, Store, StoreError, TokenRecord, open_store
from mcp_bastion.store.memory import MemoryStore
from mcp_bastion.store.sqlite import SqliteStore
from tests.harness import free_port
from tests.redis_server import client

pytestmark = pytest.mark.anyio

BACKENDS = ["memory", "sqlite", "redis"]
STEP_TIMEOUT_S = 10.0
CLIENT_IP = ("127.0.0.1", 50000)


def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'data' / 'bastion.db'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(backend, request, tmp_path)


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    opened = open_store(url)
    try:
        yield opened
    finally:
        await opened.close()


def token(
    name: str, *, scopes: tuple[str, ...] = ("server:*",), expires: float | None = None
) -> tuple[str, TokenRecord]:
    """A fresh token value and the record a caller stores for it (the hash only)."""
    value = new_token()
    return value, TokenRecord(name, token_hash(value), scopes, time.time(), expires)


def login(principal: str = "alice", *, created: float | None = None, ttl: float = 3600.0) -> tuple[str, LoginSession]:
    """A fresh session cookie value and the session a caller stores for it."""
    cookie = new_session_id()
    now = time.time() if created is None else created
    session = LoginSession(
        token_hash(cookie),
        principal,
        ("admin",),
        now,
        now + ttl,
        client_ip="127.0.0.1",
        csrf_hash=token_hash("csrf-" + cookie),
        extra={"agent": "pytest"},
    )
    return cookie, session


# --- tokens ---------------------------------------------------------------------------------------------------


async def test_tokens_create_list_find_by_hash(store: Store) -> None:
    """Created tokens come back whole by hash, and listed sorted by name."""
    created = {}
    for name, scopes, expires in [
        ("beta", ("server:demo",), None),
        ("alpha", ("admin",), time.time() + 3600),
        ("gamma", ("tool:demo/echo", "server:other"), None),
    ]:
        _, record = token(name, scopes=scopes, expires=expires)
        await store.create_token(record)
        created[name] = record

    listed = await store.list_tokens()
    assert [r.name for r in listed] == ["alpha", "beta", "gamma"]
    assert listed == [created["alpha"], created["beta"], created["gamma"]]
    for record in created.values():
        found = await store.token_by_hash(record.token_hash)
        assert found == record
        assert isinstance(found.scopes, tuple)
    assert await store.token_by_hash(token_hash("never-issued")) is None


async def test_duplicate_active_name_refused(store: Store) -> None:
    """A second token with an active token's name is DuplicateName; the first one is untouched."""
    _, first = token("ci")
    await store.create_token(first)
    _, second = token("ci", scopes=("admin",))
    with pytest.raises(DuplicateName):
        await store.create_token(second)
    assert await store.list_tokens() == [first]
    assert await store.token_by_hash(second.token_hash) is None


async def test_revoke_token_and_reuse_name(store: Store) -> None:
    """Revoking removes the token (lookups fail from then on) and frees its name."""
    _, keep = token("keep")
    _, gone = token("gone")
    await store.create_token(keep)
    await store.create_token(gone)

    assert await store.revoke_token("gone") is True
    assert await store.token_by_hash(gone.token_hash) is None
    assert await store.list_tokens() == [keep]
    assert await store.revoke_token("gone") is False
    assert await store.revoke_token("never-existed") is False

    _, again = token("gone")
    await store.create_token(again)
    assert await store.token_by_hash(again.token_hash) == again


async def test_revoke_all_tokens(store: Store) -> None:
    """revoke_all deletes every token and says how many; names are free again afterwards."""
    records = [token(f"t{i}")[1] for i in range(3)]
    for record in records:
        await store.create_token(record)
    assert await store.revoke_all_tokens() == 3
    assert await store.list_tokens() == []
    for record in records:
        assert await store.token_by_hash(record.token_hash) is None
    assert await store.revoke_all_tokens() == 0
    await store.create_token(token("t0")[1])
    assert [r.name for r in await store.list_tokens()] == ["t0"]


async def test_touch_token_updates_last_used(store: Store) -> None:
    """touch_token records the use time on that token only; touching an unknown name is a no-op."""
    _, used = token("used")
    _, idle = token("idle")
    await store.create_token(used)
    await store.create_token(idle)
    assert (await store.token_by_hash(used.token_hash)).last_used is None

    when = time.time() + 0.5
    await store.touch_token("used", when)
    found = await store.token_by_hash(used.token_hash)
    assert found is not None
    assert found.last_used == when
    assert (found.name, found.scopes, found.created) == (used.name, used.scopes, used.created)
    assert (await store.token_by_hash(idle.token_hash)).last_used is None
    assert {r.name: r.last_used for r in await store.list_tokens()} == {"idle": None, "used": when}

    later = when + 60
    await store.touch_token("used", later)
    assert (await store.token_by_hash(used.token_hash)).last_used == later
    await store.touch_token("nobody", later)  # must not raise nor create anything
    assert [r.name for r in await store.list_tokens()] == ["idle", "used"]


# --- login sessions -------------------------------------------------------------------------------------------


async def test_sessions_create_get_delete(store: Store) -> None:
    """A session comes back whole by id hash; deleting it is reported once."""
    _, session = login()
    await store.create_session(session)
    assert await store.session_by_hash(session.id_hash) == session
    assert await store.session_by_hash(token_hash("unknown")) is None

    assert await store.delete_session(session.id_hash) is True
    assert await store.session_by_hash(session.id_hash) is None
    assert await store.delete_session(session.id_hash) is False


async def test_sessions_list_oldest_first_and_delete_all(store: Store) -> None:
    """Sessions list oldest first; delete_all ends every one and says how many."""
    now = time.time()
    sessions = [login(p, created=now - age)[1] for p, age in [("mid", 20.0), ("new", 10.0), ("old", 30.0)]]
    for session in sessions:
        await store.create_session(session)
    listed = await store.list_sessions()
    assert [s.principal for s in listed] == ["old", "mid", "new"]
    assert sorted(listed, key=lambda s: s.principal) == sorted(sessions, key=lambda s: s.principal)

    assert await store.delete_all_sessions() == 3
    assert await store.list_sessions() == []
    for session in sessions:
        assert await store.session_by_hash(session.id_hash) is None
    assert await store.delete_all_sessions() == 0


async def test_expired_session_still_retrievable_by_hash(store: Store) -> None:
    """The store does not judge expiry: a session stored with a past `expires` comes back; the caller decides."""
    now = time.time()
    _, expired = login("late", created=now - 7200, ttl=3600)  # expired an hour ago
    assert expired.expires < now
    await store.create_session(expired)
    found = await store.session_by_hash(expired.id_hash)
    assert found == expired
    assert found.expires < time.time()


async def test_two_store_instances_share_state(backend: str, url: str, store: Store) -> None:
    """The CLI and the server (or two instances) open the same URL: a revocation by one is seen by the other."""
    if backend == "memory":
        assert isinstance(store, MemoryStore)
        other = open_store(url)
        await store.create_token(token("solo")[1])
        assert await other.list_tokens() == []  # memory:// is per instance by design
        return
    other = open_store(url)
    try:
        _, record = token("shared")
        await store.create_token(record)
        assert await other.token_by_hash(record.token_hash) == record
        assert await other.revoke_token("shared") is True
        assert await store.token_by_hash(record.token_hash) is None
    finally:
        await other.close()


# --- backend specifics ----------------------------------------------------------------------------------------


async def test_sqlite_file_is_private(tmp_path: Path) -> None:
    """The SQLite file (and its WAL companions) are created 0600, even under a permissive umask."""
    path = tmp_path / "data" / "bastion.db"
    old_umask = os.umask(0o000)
    try:
        store = open_store(f"sqlite://{path}")
    finally:
        os.umask(old_umask)
    try:
        assert isinstance(store, SqliteStore)
        await store.create_token(token("one")[1])
        await store.create_session(login()[1])
        files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        assert path in files
        modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
        assert modes == dict.fromkeys(modes, "0o600")
    finally:
        await store.close()


async def test_redis_sessions_carry_a_ttl(redis_url: str) -> None:
    """Redis expires login sessions itself: the key's TTL matches the session's remaining lifetime."""
    store = open_store(redis_url)
    try:
        _, session = login(ttl=3600)
        await store.create_session(session)
        _, token_record = token("no-ttl")
        await store.create_token(token_record)
        with client(redis_url) as raw:
            session_keys = [k for k in raw.keys("*") if session.id_hash in k]
            assert len(session_keys) == 1
            assert 3590 <= raw.ttl(session_keys[0]) <= 3600
            token_keys = [k for k in raw.keys("*") if k not in session_keys]
            assert token_keys  # the token and its name claim
            assert all(raw.ttl(k) == -1 for k in token_keys)  # tokens without expiry never vanish
    finally:
        await store.close()


async def test_unknown_scheme_and_bad_sqlite_path_are_config_errors(tmp_path: Path) -> None:
    from mcp_bastion.errors import ConfigError

    with pytest.raises(ConfigError):
        open_store("postgres://localhost/db")
    with pytest.raises(ConfigError):
        open_store("sqlite://relative/path.db")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        open_store(f"sqlite://{blocker}/bastion.db")  # parent is a file: cannot be created


# --- no secret at rest ----------------------------------------------------------------------------------------


def stored_bytes(backend: str, store: Store, url: str) -> bytes:
    """Everything the backend holds, as bytes to grep."""
    if backend == "memory":
        assert isinstance(store, MemoryStore)
        return repr((store.tokens, store.sessions)).encode()
    if backend == "sqlite":
        assert isinstance(store, SqliteStore)
        files = [store.path, Path(f"{store.path}-wal"), Path(f"{store.path}-shm")]
        return b"".join(p.read_bytes() for p in files if p.exists())
    with client(url) as raw:
        parts: list[str] = []
        for key in raw.keys("*"):
            parts.append(key)
            parts.append(json.dumps(raw.get(key)) if raw.type(key) == "string" else repr(raw.dump(key)))
        return "\n".join(parts).encode()


def secure_settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=free_port(),
        insecure_no_auth=False,
        store_url="memory://",
        audit_log=tmp_path / "logs" / "audit.jsonl",
        log_dir=tmp_path / "logs",
        **extra,
    )


def audit_lines(settings: Settings) -> list[dict[str, Any]]:
    """Both audit files' lines: auth.* lines are in the security file (Issue 9 item 8)."""
    paths = [settings.audit_log, settings.security_audit_log]
    text = "".join(path.read_text() for path in paths if path.exists())
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_token_and_cookie_values_never_stored(backend: str, url: str, store: Store, tmp_path: Path) -> None:
    """Through the real gateway (bearer, login): the store holds hashes only, never a token, cookie or CSRF value."""
    value, record = token("laptop", scopes=("admin",))
    await store.create_token(record)
    app = create_app(secure_settings(tmp_path), {}, store=store)
    transport = httpx.ASGITransport(app=app, client=CLIENT_IP)
    with anyio.fail_after(STEP_TIMEOUT_S):
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            health = await http.get("/health", headers={"Authorization": f"Bearer {value}"})
            assert health.status_code == 200, health.text
            response = await http.post("/auth/login", json={"token": value})
            assert response.status_code == 200, response.text
            cookie = response.cookies["bastion_session"]
            csrf = response.json()["csrf_token"]
            me = await http.get("/auth/session")
            assert me.status_code == 200, me.text
            assert me.json()["principal"] == "laptop"

    touched = await store.token_by_hash(record.token_hash)
    assert touched is not None
    assert touched.last_used is not None  # the gateway recorded the use
    sessions = await store.list_sessions()
    assert [s.id_hash for s in sessions] == [token_hash(cookie)]
    assert sessions[0].csrf_hash == token_hash(csrf)

    blob = stored_bytes(backend, store, url)
    assert record.token_hash.encode() in blob  # looking at the right bytes: the hashes are there
    assert token_hash(cookie).encode() in blob
    for secret in (value, cookie, csrf):
        assert blob.count(secret.encode()) == 0


# --- an unreachable store -------------------------------------------------------------------------------------

STORE_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("create_token", (TokenRecord("x", token_hash("x"), ("admin",), 0.0),)),
    ("token_by_hash", (token_hash("x"),)),
    ("list_tokens", ()),
    ("revoke_token", ("x",)),
    ("revoke_all_tokens", ()),
    ("touch_token", ("x", 1.0)),
    ("create_session", (LoginSession(token_hash("s"), "p", ("admin",), 0.0, time.time() + 60),)),
    ("session_by_hash", (token_hash("s"),)),
    ("delete_session", (token_hash("s"),)),
    ("list_sessions", ()),
    ("delete_all_sessions", ()),
]


def closed_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # the port was just free: nothing listens there


@pytest.mark.parametrize(("method", "args"), STORE_CALLS, ids=[name for name, _ in STORE_CALLS])
async def test_unreachable_redis_raises_store_error(method: str, args: tuple[Any, ...]) -> None:
    """Every Store call on a Redis that cannot be reached raises StoreError (what auth fails closed on)."""
    store = open_store(closed_redis_url())
    try:
        with anyio.fail_after(STEP_TIMEOUT_S), pytest.raises(StoreError):
            await getattr(store, method)(*args)
    finally:
        await store.close()


async def test_gateway_fails_closed_when_the_store_is_unreachable(tmp_path: Path) -> None:
    """Bearer token or session cookie with the store down: 503 and an audit line, never 200 nor 401."""
    settings = secure_settings(tmp_path)
    app = create_app(settings, {}, store=open_store(closed_redis_url()))
    transport = httpx.ASGITransport(app=app, client=CLIENT_IP)
    some_token = new_token()
    with anyio.fail_after(STEP_TIMEOUT_S):
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            for path in ("/health", "/mcp/servers", "/admin/sessions"):
                response = await http.get(path, headers={"Authorization": f"Bearer {some_token}"})
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert response.json()["error"] == "Service unavailable"
            by_cookie = await http.get("/health", headers={"Cookie": f"bastion_session={new_session_id()}"})
            assert by_cookie.status_code == 503, by_cookie.text
            livez = await http.get("/livez")
            assert livez.status_code == 200  # public, needs no store

    failures = [line for line in audit_lines(settings) if line["event"] == "auth.failure"]
    assert [(f["reason"], f["path"], f["outcome"]) for f in failures] == [
        ("store unavailable", "/health", "denied"),
        ("store unavailable", "/mcp/servers", "denied"),
        ("store unavailable", "/admin/sessions", "denied"),
        ("store unavailable", "/health", "denied"),
    ]
    assert all(some_token not in json.dumps(line) for line in audit_lines(settings))


async def test_store_outage_does_not_count_as_failed_authentication(tmp_path: Path) -> None:
    """An outage is not the caller's fault: more requests than AUTH_FAILURE_LIMIT still get 503, not a 429 lockout."""
    settings = secure_settings(tmp_path, auth_failure_limit=2)
    app = create_app(settings, {}, store=open_store(closed_redis_url()))
    transport = httpx.ASGITransport(app=app, client=CLIENT_IP)
    with anyio.fail_after(STEP_TIMEOUT_S):
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            statuses = [
                (await http.get("/health", headers={"Authorization": f"Bearer {new_token()}"})).status_code
                for _ in range(4)
            ]
    assert statuses == [503] * 4


async def test_login_fails_closed_and_is_audited_when_the_store_is_unreachable(tmp_path: Path) -> None:
    """POST /auth/login with the store down: 503 (never a session) and an auth.failure audit line like every route."""
    settings = secure_settings(tmp_path)
    app = create_app(settings, {}, store=open_store(closed_redis_url()))
    transport = httpx.ASGITransport(app=app, client=CLIENT_IP)
    with anyio.fail_after(STEP_TIMEOUT_S):
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            response = await http.post("/auth/login", json={"token": new_token()})
    assert response.status_code == 503, response.text
    assert "set-cookie" not in response.headers
    reasons = [(line["reason"], line.get("path")) for line in audit_lines(settings) if line["event"] == "auth.failure"]
    assert reasons == [("store unavailable", "/auth/login")]


async def test_admin_token_login_with_store_down_creates_no_session(tmp_path: Path) -> None:
    """With the store down even the .env admin token is refused (it may have been revoked by `lockdown`, and only the
    store knows): fail closed with 503, and a login must not half-succeed: 503, no cookie."""
    admin = new_token()
    settings = secure_settings(tmp_path, auth_token=admin)
    app = create_app(settings, {}, store=open_store(closed_redis_url()))
    transport = httpx.ASGITransport(app=app, client=CLIENT_IP)
    with anyio.fail_after(STEP_TIMEOUT_S):
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            health = await http.get("/health", headers={"Authorization": f"Bearer {admin}"})
            assert health.status_code == 503  # its revocation can't be checked: fail closed
            other = await http.get("/health", headers={"Authorization": f"Bearer {new_token()}"})
            assert other.status_code == 503  # any other token needs the store: fail closed
            response = await http.post("/auth/login", json={"token": admin})
    assert response.status_code == 503, response.text
    assert "set-cookie" not in response.headers


# --- revoked hashes (the .env admin token after `mcp-bastion lockdown`) ----------------------------------------


async def test_revoked_hashes(backend: str, url: str, store: Store) -> None:
    """revoke_hash records a hash for good (idempotent); is_revoked sees it, and only it; it survives revoking
    every token and ending every session, is independent of named tokens, and a second instance on the same URL
    sees it (the CLI revokes, the running server refuses)."""
    old, other = token_hash(new_token()), token_hash(new_token())
    assert await store.is_revoked(old) is False
    await store.revoke_hash(old)
    await store.revoke_hash(old)
    assert await store.is_revoked(old) is True
    assert await store.is_revoked(other) is False

    _, record = token("named")
    await store.create_token(record)
    assert await store.is_revoked(record.token_hash) is False  # named tokens are revoked by deletion instead
    assert await store.token_by_hash(record.token_hash) == record
    await store.create_session(login()[1])
    await store.revoke_all_tokens()
    await store.delete_all_sessions()
    assert await store.is_revoked(old) is True
    assert await store.list_tokens() == []

    if backend == "memory":
        return
    second = open_store(url)
    try:
        assert await second.is_revoked(old) is True
        await second.revoke_hash(other)
        assert await store.is_revoked(other) is True
    finally:
        await second.close()


@pytest.mark.parametrize("method", ["revoke_hash", "is_revoked"])
async def test_unreachable_redis_revocation_calls_raise_store_error(method: str) -> None:
    """The revocation calls fail like every other Store call on an unreachable Redis: StoreError."""
    store = open_store(closed_redis_url())
    try:
        with anyio.fail_after(STEP_TIMEOUT_S), pytest.raises(StoreError):
            await getattr(store, method)(token_hash("x"))
    finally:
        await store.close()
