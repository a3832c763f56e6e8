"""`sessions list|revoke` and `lockdown`: incident response against a running server's store.

Login sessions, named tokens and revoked admin-token hashes live in the store the server shares with the CLI,
so changes there apply on the server's next request. MCP client sessions live only in the running server's
memory: they are listed and ended through its admin API (`GET`/`DELETE /admin/sessions`) with the .env admin
token. The CLI talks to that API with the standard library only and never follows a redirect, so the token goes
to the address given and nowhere else.
"""

import http.client
import json
import os
import re
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import typer
from dotenv import dotenv_values
from rich.text import Text

from mcp_bastion.authserver.grants import end_all_grants
from mcp_bastion.cli.base import EnvFile, JsonFlag, cli, context, err, fail, out, run
from mcp_bastion.cli.output import Col, listing
from mcp_bastion.cli.tokens import tell_cluster
from mcp_bastion.config import Settings, is_loopback
from mcp_bastion.files import write_private
from mcp_bastion.security import ADMIN_SCOPE, new_token, token_hash
from mcp_bastion.store import LoginSession, Store, TokenRecord

sessions_cli = typer.Typer(
    help="Login sessions (store) and MCP client sessions (running server); revocations apply at once.",
    no_args_is_help=True,
)
cli.add_typer(sessions_cli, name="sessions")

PUBLIC_ID = re.compile(r"[0-9a-f]{16}")  # what /admin/sessions names a session by: a prefix of its hash
PUBLIC_ID_CHARS = 16
API_TIMEOUT_S = 5.0
LOCKDOWN_TOKEN_NAME = "lockdown-admin"  # noqa: S105 - a token's name, not its value
ENV_TOKEN_LINE = re.compile(r"^\s*(export\s+)?AUTH_TOKEN\s*=")
EXIT_INCOMPLETE = 1  # a lockdown step failed: something is still open
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # wildcard binds, reached on loopback

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The running server, e.g. http://127.0.0.1:3001 [default: HOST:PORT from the settings, if it answers].",
    ),
]


class ServerUnavailable(Exception):
    """The running server could not be reached, refused the admin token, or answered with an error status."""

    def __init__(self, message: str, hint: str, *, reached: bool = True) -> None:
        super().__init__(message)
        self.hint = hint
        self.reached = reached  # False: nothing answered at the address (no server there, or the wrong address)


NOT_RUNNING_HINT = "is the server running? MCP client sessions exist only in its memory; pass --url"


@dataclass(frozen=True)
class AdminApi:
    """The running server's admin API, addressed by scheme, host, port and path prefix."""

    scheme: str
    host: str
    port: int
    prefix: str
    token: str | None
    explicit: bool  # --url given: an unreachable server is an error, not a note
    tls_context: ssl.SSLContext | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"

    def call(self, method: str, path: str) -> tuple[int, Any]:
        """One request; (status, parsed JSON body or None).

        Raises:
            ServerUnavailable: no admin token, nothing answers, TLS failed, or the token was refused.
        """
        if self.token is None:
            raise ServerUnavailable(
                "no AUTH_TOKEN in the settings to authenticate to the admin API",
                "set AUTH_TOKEN in the .env to the server's admin token",
                reached=self.answers(),
            )
        response, raw = self._send(method, path, {"Authorization": f"Bearer {self.token}"})
        if response.status in (401, 403):
            raise ServerUnavailable(
                f"{self.url} refused the admin token (HTTP {response.status})",
                "the .env's AUTH_TOKEN must be the running server's admin token",
            )
        if response.status == 429:
            wait = response.getheader("Retry-After") or "?"
            raise ServerUnavailable(
                f"{self.url} rate-limited the admin API (HTTP 429)",
                f"the server is rate limiting this address: retry after {wait} s",
            )
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return response.status, body

    def answers(self) -> bool:
        """Whether anything answers HTTP at the address (GET /livez, no credentials)."""
        try:
            self._send("GET", "/livez", {})
        except ServerUnavailable:
            return False
        return True

    def _send(self, method: str, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=API_TIMEOUT_S, context=self.tls_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=API_TIMEOUT_S)
        try:
            conn.request(method, self.prefix + path, headers=headers)
            response = conn.getresponse()
            return response, response.read()
        except (OSError, http.client.HTTPException) as exc:
            message = f"no answer from {self.url}: {type(exc).__name__}"
            raise ServerUnavailable(message, NOT_RUNNING_HINT, reached=False) from exc
        finally:
            conn.close()

    def mcp_sessions(self) -> list[dict[str, Any]]:
        """The server's MCP client sessions (its login sessions come from the store instead)."""
        status, body = self.call("GET", "/admin/sessions")
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("sessions"), list):
            raise ServerUnavailable(f"{self.url}/admin/sessions answered HTTP {status}", "see the server's log")
        return [s for s in body["sessions"] if isinstance(s, dict) and s.get("kind") == "mcp"]

    def end_session(self, public_id: str) -> bool:
        """DELETE /admin/sessions/{id}; False if the server knows no such session."""
        status, _ = self.call("DELETE", f"/admin/sessions/{public_id}")
        if status == 404:
            return False
        if status != 200:
            raise ServerUnavailable(
                f"{self.url} answered HTTP {status} to DELETE /admin/sessions/{public_id}", "see the server's log"
            )
        return True


def admin_api(settings: Settings, url: str | None) -> AdminApi:
    """The admin API of the server `--url` names, or of the one the settings describe."""
    token = settings.auth_token.get_secret_value() if settings.auth_token else None
    if url is None:
        host = WILDCARD_HOSTS.get(settings.host, settings.host)
        scheme = "https" if settings.tls else "http"
        context = _tls_context(settings) if settings.tls else None
        return AdminApi(scheme, host, settings.port, "", token, explicit=False, tls_context=context)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        fail(f"--url {url!r} is not a URL", "e.g. http://127.0.0.1:3001")
        raise
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.query or parts.fragment:
        fail(f"--url {url!r}: use http(s)://HOST:PORT[/prefix]", "e.g. http://127.0.0.1:3001")
    host = parts.hostname or ""
    if parts.scheme == "http" and not is_loopback(host):
        fail(f"--url {url!r} would send the admin token unencrypted off this machine", "use https://")
    context = ssl.create_default_context() if parts.scheme == "https" else None
    if context is not None and settings.tls and settings.tls_cert_file and is_loopback(host):
        context = _tls_context(settings)  # our own (possibly self-signed) certificate, trusted as is
    default_port = 443 if parts.scheme == "https" else 80
    prefix = parts.path.rstrip("/")
    return AdminApi(parts.scheme, host, port or default_port, prefix, token, explicit=True, tls_context=context)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.tls_cert_file is not None:
        try:
            context.load_verify_locations(cafile=str(settings.tls_cert_file))
        except (OSError, ssl.SSLError):
            pass  # the system trust store alone then
    return context


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp)) + "Z" if stamp else "-"


def _login(row: dict[str, Any]) -> bool:
    return row.get("kind") == "login"


SESSION_COLUMNS = [
    Col("id", "id", no_wrap=True),  # always copyable whole
    Col("kind", "kind"),
    Col("principal", "principal"),
    Col("client / server", lambda r: r["client_ip"] if _login(r) else f"{r.get('server')} ({r.get('client') or '?'})"),
    Col("created / age", lambda r: _when(r["created"]) if _login(r) else f"{r.get('age_s')} s"),
    Col("expires", lambda r: _when(r["expires"]) if _login(r) else "-"),
]


def _login_row(session: LoginSession) -> dict[str, Any]:
    return {
        "id": session.id_hash[:PUBLIC_ID_CHARS],
        "kind": "login",
        "principal": session.principal,
        "client_ip": session.client_ip,
        "created": session.created,
        "expires": session.expires,
    }


def _live_logins(store: Store) -> list[LoginSession]:
    now = time.time()
    return [s for s in run(store.list_sessions()) if s.expires > now]


@sessions_cli.command("list")
def sessions_list(as_json: JsonFlag = False, url: UrlOption = None, env_file: EnvFile = Path(".env")) -> None:
    """List login sessions (from the store) and MCP client sessions (from the running server's admin API).

    Example: mcp-bastion sessions list --url http://127.0.0.1:3001
    """
    settings, store, _ = context(env_file)
    rows = [_login_row(s) for s in _live_logins(store)]
    api = admin_api(settings, url)
    server: dict[str, Any] = {"url": api.url, "status": "ok"}
    try:
        rows += api.mcp_sessions()
    except ServerUnavailable as exc:
        if api.explicit:
            fail(str(exc), exc.hint)
        server.update(status="unavailable", reason=str(exc), hint=exc.hint)
    listing(rows, SESSION_COLUMNS, as_json=as_json, document={"sessions": rows, "server": server})
    if server["status"] != "ok":
        err.print(f"note: MCP client sessions not listed ({server['reason']}); {server['hint']}", markup=False)


@sessions_cli.command("revoke")
def sessions_revoke(
    session_id: Annotated[str, typer.Argument(metavar="ID", help="The session's id from `sessions list`.")],
    url: UrlOption = None,
    env_file: EnvFile = Path(".env"),
) -> None:
    """End a login session (its cookie is refused from the next request on) or an MCP client session.

    Example: mcp-bastion sessions revoke 3f9a0c1d2e4b5a69
    """
    public_id = session_id.strip().lower()
    if not PUBLIC_ID.fullmatch(public_id):
        fail(f"session id {session_id!r}: expected 16 hex characters", "see `mcp-bastion sessions list`")
    settings, store, audit = context(env_file)
    for login in run(store.list_sessions()):
        if login.id_hash[:PUBLIC_ID_CHARS] == public_id:
            run(store.delete_session(login.id_hash))
            audit.record(
                "session.revoked", outcome="ok", principal="cli", session=public_id, kind="login", owner=login.principal
            )
            out.print(f"revoked login session {public_id} ({login.principal})", markup=False)
            return
    api = admin_api(settings, url)
    try:
        ended = api.end_session(public_id)
    except ServerUnavailable as exc:
        fail(
            f"no login session {public_id} in the store, and MCP sessions cannot be checked: {exc}",
            "start the gateway, or pass --url with its address",
        )
        return
    if not ended:
        fail(f"no session {public_id}", "see `mcp-bastion sessions list`")
    out.print(f"ended MCP client session {public_id}", markup=False)


@cli.command("lockdown")
def lockdown(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Contain a suspected compromise without a restart: revoke every token and session, replace AUTH_TOKEN.

    Ends the running server's MCP client sessions, revokes every named token and login session, revokes the
    current AUTH_TOKEN (the running server refuses it from the next request on), and writes a fresh one to the
    .env, printed once. The running server accepts the fresh token at once (as the named admin token
    `lockdown-admin`) and, after a restart, as AUTH_TOKEN.

    Example: mcp-bastion lockdown --yes
    """
    settings, store, audit = context(env_file)
    if not yes and not typer.confirm(
        "Revoke EVERY token and session and replace AUTH_TOKEN? Every client must be given a new token.",
        default=False,
        err=True,
    ):
        err.print("lockdown cancelled; nothing changed", markup=False)
        raise typer.Exit(1)
    old_tokens = _admin_tokens(settings, env_file)
    mcp = _end_mcp_sessions(admin_api(settings, url))
    result = run(_contain(store, old_tokens))
    tell_cluster(settings)  # cluster mode: every instance ends what the revoked tokens and sessions opened, now
    value: str = result.pop("token")
    env_written: str | None = None
    try:
        write_env_token(env_file, value)
    except OSError as exc:
        env_written = f"{type(exc).__name__}: {exc.strerror or exc}"
    steps = _steps(result, mcp, env_file, env_written)
    still_open = [step for step in steps if step.status == "failed"]
    summary = {**result, "mcp_sessions_ended": mcp.ended, "server": mcp.server, "env_file": str(env_file)}
    audit.record(
        "admin.lockdown",
        outcome="error" if still_open else "ok",
        reason="; ".join(f"{step.name}: {step.detail}" for step in still_open) or None,
        principal="cli",
        tokens_revoked=result["tokens_revoked"],
        login_sessions_ended=result["login_sessions_ended"],
        oauth_grants_revoked=result["oauth_grants_revoked"],
        mcp_sessions_ended=mcp.ended,
        admin_tokens_revoked=result["admin_tokens_revoked"],
        new_token=LOCKDOWN_TOKEN_NAME,
    )
    if as_json:
        steps_json = [asdict(step) for step in steps]
        document = {**summary, "token": value, "env_written": env_written is None, "steps": steps_json}
        typer.echo(json.dumps({**document, "complete": not still_open}))
    else:
        _report(steps, value, env_file)
    if "AUTH_TOKEN" in os.environ:
        err.print("warning: AUTH_TOKEN is also set in the environment; it overrides the .env on restart", markup=False)
    if env_written is not None:
        fail(f"the new AUTH_TOKEN could not be written to {env_file}: {env_written}", "put the value above there")
    if still_open:
        _incomplete(still_open)


@dataclass(frozen=True)
class Step:
    """One part of a lockdown and how it went: done, skipped (nothing to do) or failed (something is still open)."""

    name: str
    status: Literal["done", "skipped", "failed"]
    detail: str
    hint: str = ""


@dataclass(frozen=True)
class McpOutcome:
    """What ending the running server's MCP client sessions did."""

    ended: int
    left: int | None  # sessions known to be still open (None: unknown, the list could not be read)
    server: dict[str, Any]
    error: ServerUnavailable | None = None


def _steps(result: dict[str, Any], mcp: McpOutcome, env_file: Path, env_error: str | None) -> list[Step]:
    """Every step of the lockdown with its outcome, in the order they are reported."""
    steps = [
        Step("named tokens revoked", "done", str(result["tokens_revoked"])),
        Step("login sessions ended", "done", str(result["login_sessions_ended"])),
        Step("OAuth grants revoked", "done", str(result["oauth_grants_revoked"])),
        _mcp_step(mcp),
        Step("old AUTH_TOKEN revoked", "done", "yes")
        if result["admin_tokens_revoked"]
        else Step("old AUTH_TOKEN revoked", "skipped", "none was set"),
    ]
    if env_error is None:
        steps.append(Step("AUTH_TOKEN replaced", "done", f"new value written to {env_file}"))
    else:
        steps.append(Step("AUTH_TOKEN replaced", "failed", f"NOT written to {env_file}: {env_error}", "put it there"))
    return steps


def _mcp_step(mcp: McpOutcome) -> Step:
    name = "MCP client sessions ended"
    if mcp.error is None:
        return Step(name, "done", str(mcp.ended))
    if not mcp.error.reached and not mcp.server.get("explicit"):
        return Step(name, "skipped", f"no server answers at {mcp.server['url']}: {mcp.ended} ended", mcp.error.hint)
    left = "unknown" if mcp.left is None else str(mcp.left)
    then = "then `mcp-bastion sessions list` and `sessions revoke ID` for each (the new AUTH_TOKEN is admin)"
    detail = f"NOT all ended ({mcp.error}): {mcp.ended} ended, {left} still open"
    return Step(name, "failed", detail, f"{mcp.error.hint}; {then}")


def _admin_tokens(settings: Settings, env_file: Path) -> list[str]:
    """The admin token in effect (environment or .env) and the .env's own, if they differ."""
    found = [settings.auth_token.get_secret_value()] if settings.auth_token else []
    if env_file.exists():
        in_file = dotenv_values(env_file).get("AUTH_TOKEN")
        if in_file and in_file not in found:
            found.append(in_file)
    return found


def _end_mcp_sessions(api: AdminApi) -> McpOutcome:
    """End every MCP client session of the running server (before its admin token is revoked)."""
    server: dict[str, Any] = {"url": api.url, "status": "ok", "explicit": api.explicit}
    ended, listed = 0, None
    try:
        sessions = api.mcp_sessions()
        listed = len(sessions)
        for session in sessions:
            public_id = str(session.get("id", ""))
            if PUBLIC_ID.fullmatch(public_id) and api.end_session(public_id):
                ended += 1
    except ServerUnavailable as exc:
        server.update(status="unavailable", reason=str(exc), hint=exc.hint)
        return McpOutcome(ended, None if listed is None else listed - ended, server, exc)
    return McpOutcome(ended, 0, server)


async def _contain(store: Store, old_admin_tokens: list[str]) -> dict[str, Any]:
    """The store side of a lockdown; returns the counts and the fresh token's value."""
    for old in old_admin_tokens:
        await store.revoke_hash(token_hash(old))
    tokens_revoked = await store.revoke_all_tokens()
    sessions_ended = await store.delete_all_sessions()
    grants_revoked = await end_all_grants(store)  # Issue 14: the built-in authorization server's clients too
    value = new_token()
    await store.create_token(TokenRecord(LOCKDOWN_TOKEN_NAME, token_hash(value), (ADMIN_SCOPE,), time.time()))
    await store.close()
    return {
        "tokens_revoked": tokens_revoked,
        "login_sessions_ended": sessions_ended,
        "oauth_grants_revoked": grants_revoked,
        "admin_tokens_revoked": len(old_admin_tokens),
        "name": LOCKDOWN_TOKEN_NAME,
        "token": value,
    }


def write_env_token(env_file: Path, value: str) -> None:
    """Set AUTH_TOKEN in the .env, keeping every other line; the file is replaced whole, atomically, mode 0600.

    Raises:
        OSError: the file could not be read or replaced, or is a symlink (the old one is then left as it was).
    """
    lines = env_file.read_text(encoding="utf-8").splitlines(keepends=True) if env_file.exists() else []
    kept: list[str] = []
    written = False
    for line in lines:
        if not ENV_TOKEN_LINE.match(line):
            kept.append(line)
        elif not written:
            kept.append(f"AUTH_TOKEN={value}\n")
            written = True
    if not written:
        if kept and not kept[-1].endswith("\n"):
            kept[-1] += "\n"
        kept.append(f"AUTH_TOKEN={value}\n")
    write_private(env_file, "".join(kept))


MARKS = {"done": ("✓", "green"), "skipped": ("-", "dim"), "failed": ("✗", "bold red")}


def _report(steps: list[Step], value: str, env_file: Path) -> None:
    failed = any(step.status == "failed" for step in steps)
    out.print("Lockdown INCOMPLETE: see below." if failed else "Lockdown done.", style="bold red" if failed else "bold")
    for step in steps:
        out.print(Text.assemble("  ", MARKS[step.status], f" {step.name + ':':<28}{step.detail}"), soft_wrap=True)
    out.print(f"New AUTH_TOKEN, written to {env_file}; copy it now, it is not shown again:", markup=False)
    out.print(value, markup=False, highlight=False)
    out.print(
        "Give each client a new token (`mcp-bastion token create`), rotate the API keys your servers hold, and "
        "review `mcp-bastion audit`: see docs/incident-response.md.",
        markup=False,
    )


def _incomplete(still_open: list[Step]) -> None:
    """Say what is still open, on stderr, and exit 1: a lockdown that left something open has not succeeded."""
    for step in still_open:
        line = Text.assemble(("error:", "bold red"), f" lockdown incomplete: {step.name}: {step.detail}")
        if step.hint:
            line.append(f" (hint: {step.hint})", style="dim")
        err.print(line, soft_wrap=True)
    raise typer.Exit(EXIT_INCOMPLETE)
