"""The dashboard's server side through the real HTTP surface: the static shell, /api/overview, /api/audit and
/api/tokens, behind the security pipeline (bearer tokens, login cookies with CSRF, admin scope)."""

import http.client
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from mcp_bastion.dashboard import routes
from mcp_bastion.dashboard.routes import STATIC_DIR, DashboardRoutes, read_audit
from tests.harness import RunningGateway, spec, wait_until
from tests.security.support import (
    add_token,
    admin_token,
    assert_rejection,
    audit_lines,
    bearer,
    modern_call,
    secure_gateway,
)

POLL_S = 10.0


@dataclass
class Env:
    gw: RunningGateway
    admin: str
    logs: Path  # the tmp_path whose logs/audit.jsonl the gateway writes

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
        return httpx.get(self.gw.url + path, headers=headers, timeout=10, **kwargs)

    def send(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
        return httpx.request(method, self.gw.url + path, headers=headers, timeout=10, **kwargs)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("dashboard")
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp, auth_token=admin) as gw:
        yield Env(gw, admin, tmp)


def login(env: Env, token: str) -> tuple[dict[str, str], str]:
    """POST /auth/login; returns the Cookie header and the CSRF token."""
    answer = httpx.post(f"{env.gw.url}/auth/login", json={"token": token}, timeout=10)
    assert answer.status_code == 200, answer.text
    cookies = {}
    for header in answer.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        cookies[name] = rest.split(";", 1)[0]
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}, answer.json()["csrf_token"]


def raw_get(env: Env, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (httpx would normalise dot segments away)."""
    url = urlsplit(env.gw.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        conn.request("GET", target)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@pytest.fixture
def static_dir(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the running dashboard at a static folder of known files (plus a secret next to it)."""
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>t</title>", encoding="utf-8")
    (folder / "app.js").write_text("console.log('app');", encoding="utf-8")
    (folder / "app.css").write_text("body{}", encoding="utf-8")
    (folder / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>", encoding="utf-8")
    (folder / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "notes.txt").write_text("not a served type", encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.js").write_text("nested", encoding="utf-8")
    (tmp_path / "secret.js").write_text("SECRET-OUTSIDE", encoding="utf-8")
    os.symlink(tmp_path / "secret.js", folder / "link.js")
    monkeypatch.setattr(env.gw.app.dashboard, "static_dir", folder)
    return folder


# ---- static shell ---------------------------------------------------------------------------------------------


def test_static_files_have_their_content_types_and_no_cache(env: Env, static_dir: Path) -> None:
    expected = {
        "/": "text/html; charset=utf-8",
        "/static/index.html": "text/html; charset=utf-8",
        "/static/app.js": "application/javascript",
        "/static/app.css": "text/css",
        "/static/logo.svg": "image/svg+xml",
        "/static/pic.png": "image/png",
    }
    for path, content_type in expected.items():
        answer = env.get(path)  # no credentials: the shell is public
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"] == content_type, path
        assert answer.headers["cache-control"] == "no-cache", path
        assert "script-src 'self'" in answer.headers["content-security-policy"], path
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert env.get("/static/app.js").content == (static_dir / "app.js").read_bytes()
    assert env.get("/").content == (static_dir / "index.html").read_bytes()


def test_the_real_dashboard_page_is_served_from_the_package(env: Env) -> None:
    assert env.gw.app.dashboard.static_dir == STATIC_DIR
    assert STATIC_DIR == Path(routes.__file__).parent / "static"
    answer = env.get("/")
    if (STATIC_DIR / "index.html").is_file():
        assert answer.status_code == 200
        assert answer.content == (STATIC_DIR / "index.html").read_bytes()
    else:
        assert answer.status_code == 404


@pytest.mark.parametrize(
    "target",
    [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/%2e%2e%2fapp.py",
        "/static/..%2f..%2fpyproject.toml",
        "/static/..",
        "/static/%2e%2e",
        "/static/.",
        "/static/",
        "/static/sub/x.js",
        "/static/sub",
        "/static/link.js",
        "/static/notes.txt",
        "/static/unknown.js",
        "/static/app.js%00.png",
        "/static/.hidden.js",
    ],
)
def test_static_refuses_traversal_and_unknown_names(env: Env, static_dir: Path, target: str) -> None:
    """Non-canonical paths (dot segments, encoded separators, empty segments, NUL) are 400 at the route stage
    (issue 8 item 1); canonical names that are not a served file are 404."""
    (static_dir / ".hidden.js").write_text("hidden", encoding="utf-8")
    status, body = raw_get(env, target)
    canonical = target in (
        "/static/sub/x.js",
        "/static/sub",
        "/static/link.js",
        "/static/notes.txt",
        "/static/unknown.js",
        "/static/.hidden.js",
    )
    assert status == (404 if canonical else 400), (target, status, body[:200])
    assert b"SECRET-OUTSIDE" not in body
    assert b"import" not in body
    assert b"nested" not in body


def test_static_takes_only_get(env: Env, static_dir: Path) -> None:
    answer = env.send("POST", "/static/app.js", env.admin)
    assert answer.status_code == 405
    assert env.send("DELETE", "/", env.admin).status_code == 405


# ---- authentication of the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/overview", "/api/audit", "/api/tokens"])
def test_api_needs_credentials(env: Env, path: str) -> None:
    assert_rejection(env.get(path), 401, "Unauthorized")
    assert_rejection(env.get(path, "not-a-token-" + "x" * 40), 401, "Unauthorized")
    assert env.get(path, env.admin).status_code == 200
    cookie, _ = login(env, env.admin)
    assert env.get(path, headers=cookie).status_code == 200


def test_cookie_writes_need_the_csrf_header(env: Env) -> None:
    cookie, csrf = login(env, env.admin)
    body = {"name": "csrf-probe", "scopes": ["server:toolbox"]}
    assert_rejection(env.send("POST", "/api/tokens", headers=cookie, json=body), 403, "Forbidden")
    wrong = {**cookie, "X-CSRF-Token": "wrong"}
    assert_rejection(env.send("POST", "/api/tokens", headers=wrong, json=body), 403, "Forbidden")
    assert "csrf-probe" not in [t["name"] for t in env.get("/api/tokens", env.admin).json()["tokens"]]
    ok = {**cookie, "X-CSRF-Token": csrf}
    created = env.send("POST", "/api/tokens", headers=ok, json=body)
    assert created.status_code == 201, created.text
    assert_rejection(env.send("DELETE", "/api/tokens/csrf-probe", headers=cookie), 403, "Forbidden")
    revoked = env.send("DELETE", "/api/tokens/csrf-probe", headers=ok)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked": "csrf-probe"}


def test_non_admin_token_cannot_manage_tokens_or_servers(env: Env) -> None:
    user = add_token(env.gw, "viewer", "server:toolbox")
    assert_rejection(env.get("/api/tokens", user), 403, "Forbidden")
    created = env.send("POST", "/api/tokens", user, json={"name": "sneaky", "scopes": ["admin"]})
    assert_rejection(created, 403, "Forbidden")
    assert "sneaky" not in [t["name"] for t in env.get("/api/tokens", env.admin).json()["tokens"]]
    assert_rejection(env.send("DELETE", "/api/tokens/viewer", user), 403, "Forbidden")
    assert_rejection(env.send("POST", "/mcp/toolbox/restart", user), 403, "Forbidden")
    assert_rejection(env.send("POST", "/mcp/toolbox/stop", user), 403, "Forbidden")
    assert env.gw.state("toolbox") == "running"
    cookie, csrf = login(env, user)
    assert_rejection(env.get("/api/tokens", headers=cookie), 403, "Forbidden")
    assert_rejection(
        env.send("POST", "/mcp/toolbox/restart", headers={**cookie, "X-CSRF-Token": csrf}), 403, "Forbidden"
    )
    overview = env.get("/api/overview", user)
    assert overview.status_code == 200
    assert (overview.json()["principal"], overview.json()["scopes"]) == ("viewer", ["server:toolbox"])


def test_unknown_api_routes_and_methods(env: Env) -> None:
    assert_rejection(env.get("/api/nothing", env.admin), 404, "Not found")
    put = env.send("PUT", "/api/tokens", env.admin, json={})
    assert put.status_code == 405
    assert put.headers["allow"] == "GET, POST"
    assert env.send("POST", "/api/overview", env.admin).status_code == 405


# ---- overview -------------------------------------------------------------------------------------------------


def test_overview_reports_servers_and_a_growing_call_rate(env: Env) -> None:
    first = env.get("/api/overview", env.admin)
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"version", "status", "principal", "scopes", "servers", "instance", "source", "instances"}
    assert (body["principal"], body["scopes"], body["status"]) == ("admin", ["admin"], "ok")
    [server] = body["servers"]
    assert set(server) == {
        "name",
        "state",
        "isolation",
        "pid",
        "restarts",
        "uptime_s",
        "sessions",
        "pending",
        "calls",
        "calls_per_minute",
        "last_error",
    }
    assert (server["name"], server["state"], server["isolation"]) == ("toolbox", "running", "shared")
    assert isinstance(server["pid"], int)
    assert "command" not in json.dumps(body)
    with httpx.Client(timeout=10) as client:
        for n in range(5):
            answer = modern_call(
                client, env.gw.mcp("toolbox"), env.admin, "tools/call", {"name": "echo", "arguments": {"text": f"m{n}"}}
            )
            assert answer.status_code == 200, answer.text

    def grown() -> bool:
        now = env.get("/api/overview", env.admin).json()["servers"][0]
        return bool(now["calls"] >= server["calls"] + 5 and now["calls_per_minute"] > server["calls_per_minute"])

    wait_until(grown, POLL_S)


def test_calls_per_minute_counts_the_last_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(routes.time, "monotonic", lambda: clock[0])

    backend = SimpleNamespace(calls=0)
    gateway: Any = SimpleNamespace(specs={"s": None}, backends={"s": backend})
    dash = DashboardRoutes(gateway=gateway, store=None, audit=None)  # type: ignore[arg-type]
    assert dash.calls_per_minute("s", 0) == 0.0
    clock[0] += 30
    backend.calls = 30
    dash.sample()
    assert dash.calls_per_minute("s", 30) == 60.0  # 30 calls in 30 s
    clock[0] += 60
    backend.calls = 40
    dash.sample()
    assert dash.calls_per_minute("s", 40) == 10.0  # only the last minute counts
    clock[0] += 2
    assert dash.calls_per_minute("s", 40) < 10.0
    fresh = DashboardRoutes(gateway=gateway, store=None, audit=None)  # type: ignore[arg-type]
    clock[0] += 1
    assert fresh.calls_per_minute("s", 45) == 45 * 60 / 10  # a young history is scaled from at least 10 s


# ---- audit ----------------------------------------------------------------------------------------------------


def audit_page(env: Env, token: str | None = None, **params: Any) -> dict[str, Any]:
    answer = env.get("/api/audit", token or env.admin, params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    return dict(answer.json())


def test_audit_polling_returns_only_new_events_and_keeps_html_as_data(env: Env) -> None:
    first = audit_page(env, limit=5)
    assert len(first["events"]) <= 5
    assert all("line" in e and "event" in e and "time" in e for e in first["events"])
    quiet = audit_page(env, after=first["cursor"], event="dashboard.none.")
    assert quiet["events"] == []
    evil = "/api/x<script>alert(1)</script>"
    assert env.get(evil).status_code == 400  # not a canonical path: audited as http.refused with that path

    found: list[dict[str, Any]] = []
    cursor = [first["cursor"]]

    def arrived() -> bool:
        page = audit_page(env, after=cursor[0], event="http.", outcome="denied")
        found.extend(page["events"])
        cursor[0] = page["cursor"]
        return any(e.get("path") == evil for e in found)

    wait_until(arrived, POLL_S)
    old_ids = {e["line"] for e in first["events"]}
    assert all(e["line"] not in old_ids for e in found)
    assert all(e["event"].startswith("http.") and e["outcome"] == "denied" for e in found)
    raw = env.get("/api/audit", env.admin, params={"event": "http.refused"}).text
    assert "<script>alert(1)</script>" in raw  # a JSON string, served as application/json: data, not markup
    later = audit_page(env, after=cursor[0], event="http.")
    assert all(e.get("path") != evil for e in later["events"])


def test_audit_filters_and_limits(env: Env) -> None:
    add_token(env.gw, "filter-user", "server:toolbox")
    user = add_token(env.gw, "filter-user2", "server:toolbox")
    env.get("/api/overview", user)  # auth.success for filter-user2
    wait_until(
        lambda: any(e.get("principal") == "filter-user2" for e in audit_page(env, principal="filter-user2")["events"]),
        POLL_S,
    )
    mine = audit_page(env, principal="filter-user2")["events"]
    assert mine
    assert all(e["principal"] == "filter-user2" for e in mine)
    exact = audit_page(env, event="auth.success")["events"]
    assert exact
    assert all(e["event"] == "auth.success" for e in exact)
    assert audit_page(env, event="auth")["events"] == []  # no prefix without the trailing dot
    assert all(e["outcome"] == "ok" for e in audit_page(env, outcome="ok")["events"])
    assert audit_page(env, server="no-such-server")["events"] == []
    assert len(audit_page(env, limit=2)["events"]) <= 2
    assert len(audit_page(env, limit=100000)["events"]) <= 500
    for bad in ({"limit": "0"}, {"limit": "x"}, {"limit": "-3"}, {"after": "garbage"}):
        assert_rejection(env.get("/api/audit", env.admin, params=bad), 400, "Bad request")


def test_audit_shows_a_non_admin_only_its_own_events(env: Env) -> None:
    user = add_token(env.gw, "auditee", "server:toolbox")
    assert env.get("/api/tokens", user).status_code == 403  # an auth.forbidden line of its own
    events = audit_page(env, user)["events"]
    assert events
    assert {e.get("principal") for e in events} == {"auditee"}
    assert audit_page(env, user, principal="admin")["events"] == []


def test_read_audit_follows_rotation_skips_bad_lines_and_waits_for_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"

    def line(n: int) -> bytes:
        return json.dumps({"time": "t", "event": f"test.e{n}", "n": n}).encode() + b"\n"

    def anything(entry: dict[str, Any]) -> bool:
        return True

    log.write_bytes(line(1) + b"not json\n" + b"[1,2]\n" + line(2))
    page = read_audit([log], 10, None, anything)
    assert [e["n"] for e in page.events] == [1, 2]
    cursor = routes._cursor(page.cursor)
    with log.open("ab") as f:
        f.write(line(3) + line(4)[:10])  # the last line is still being written
    page = read_audit([log], 10, cursor, anything)
    assert [e["n"] for e in page.events] == [3]
    cursor = routes._cursor(page.cursor)
    with log.open("ab") as f:
        f.write(line(4)[10:])
    log.replace(tmp_path / "audit.jsonl.1")  # rotated after line 4
    log.write_bytes(line(5))
    page = read_audit([log], 10, cursor, anything)
    assert [e["n"] for e in page.events] == [4, 5]
    assert read_audit([log], 10, routes._cursor(page.cursor), anything).events == []
    newest = read_audit([log], 3, None, anything).events  # spans the backup when the current file is short
    assert [e["n"] for e in newest] == [3, 4, 5]
    assert len({e["line"] for e in newest}) == 3


# ---- tokens ---------------------------------------------------------------------------------------------------


def test_token_create_shows_the_value_once_works_at_once_and_revoke_is_immediate(env: Env) -> None:
    created = env.send(
        "POST", "/api/tokens", env.admin, json={"name": "ci-bot", "scopes": ["server:toolbox"], "expires_days": 30}
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    assert set(body) == {"name", "token", "scopes", "expires"}
    value = body["token"]
    assert (body["name"], body["scopes"]) == ("ci-bot", ["server:toolbox"])
    assert abs(body["expires"] - (time.time() + 30 * 86400)) < 60
    listing = env.get("/api/tokens", env.admin)
    assert value not in listing.text
    [row] = [t for t in listing.json()["tokens"] if t["name"] == "ci-bot"]
    assert set(row) == {"name", "scopes", "created", "last_used", "expires"}
    assert env.get("/api/overview", value).json()["principal"] == "ci-bot"
    with httpx.Client(timeout=10) as client:
        call = modern_call(
            client, env.gw.mcp("toolbox"), value, "tools/call", {"name": "echo", "arguments": {"text": "hi"}}
        )
    assert call.status_code == 200, call.text
    revoked = env.send("DELETE", "/api/tokens/ci-bot", env.admin)
    assert revoked.json() == {"revoked": "ci-bot"}
    assert_rejection(env.get("/api/overview", value), 401, "Unauthorized")
    assert_rejection(env.send("DELETE", "/api/tokens/ci-bot", env.admin), 404, "Not found")
    lines = audit_lines(env.logs)
    assert value not in json.dumps(lines)
    made = [e for e in lines if e["event"] == "token.created" and e.get("token") == "ci-bot"]
    gone = [e for e in lines if e["event"] == "token.revoked" and e.get("token") == "ci-bot"]
    assert [(e["principal"], e["outcome"]) for e in made + gone] == [("admin", "ok"), ("admin", "ok")]


def test_token_defaults_duplicates_and_validation(env: Env) -> None:
    made = env.send("POST", "/api/tokens", env.admin, json={"name": "defaults.1"})
    assert made.status_code == 201, made.text
    assert (made.json()["scopes"], made.json()["expires"]) == (["server:*"], None)
    dup = env.send("POST", "/api/tokens", env.admin, json={"name": "defaults.1"})
    assert_rejection(dup, 409, "Conflict")
    bad_bodies: list[Any] = [
        {"name": ""},
        {"name": "a b"},
        {"name": "x" * 65},
        {"name": "<script>"},
        {"name": 5},
        {"scopes": ["admin"]},
        {"name": "ok1", "scopes": ["root"]},
        {"name": "ok1", "scopes": ["server:"]},
        {"name": "ok1", "scopes": []},
        {"name": "ok1", "scopes": "admin"},
        {"name": "ok1", "expires_days": 0},
        {"name": "ok1", "expires_days": -1},
        {"name": "ok1", "expires_days": "3"},
        {"name": "ok1", "expires_days": True},
        {"name": "ok1", "expires_days": 1.5},
        [1, 2],
    ]
    for bad in bad_bodies:
        assert_rejection(env.send("POST", "/api/tokens", env.admin, json=bad), 400, "Bad request")
    garbage = env.send(
        "POST", "/api/tokens", env.admin, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_rejection(garbage, 400, "Bad request")
    names = [t["name"] for t in env.get("/api/tokens", env.admin).json()["tokens"]]
    assert "ok1" not in names
    assert_rejection(env.send("DELETE", "/api/tokens/no-such-token", env.admin), 404, "Not found")
