"""`oauth rotate-key|grants|revoke`: the built-in authorization server's keys and grants (Issue 14).

Grants also appear in `token list` as `oauth:<client name>`, and `token revoke oauth:<client name>` ends them: one
place to see and revoke access. A running server sees a revoked grant at its next request (every token is checked
against the store) and ends its sessions within REVOCATION_CHECK_S; in cluster mode it is told at once.
"""

import json
import os
import stat
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from mcp_bastion.audit import AuditLog
from mcp_bastion.authserver import display_name
from mcp_bastion.authserver.grants import all_grants, grant_fields
from mcp_bastion.authserver.keys import SigningKeys
from mcp_bastion.authserver.records import GRANT, Grant
from mcp_bastion.cli.base import EnvFile, JsonFlag, cli, context, fail, out, run, settings_from
from mcp_bastion.cli.output import Col, listing
from mcp_bastion.cluster.revocations import announce
from mcp_bastion.config import Settings
from mcp_bastion.errors import ConfigError
from mcp_bastion.files import PRIVATE_BITS
from mcp_bastion.store import Store

oauth_cli = typer.Typer(
    help="The built-in OAuth authorization server (AUTHORIZATION_SERVER=builtin): signing keys and grants.",
    no_args_is_help=True,
)
cli.add_typer(oauth_cli, name="oauth")


DoctorRow = tuple[str, Literal["PASS", "WARN", "FAIL"], str, str]  # check, status, detail, hint


def check_authserver(settings: Settings) -> list[DoctorRow]:
    """`doctor` with AUTHORIZATION_SERVER=builtin: the signing key file is usable and private, PUBLIC_URL is https."""
    if settings.authorization_server != "builtin":
        return []
    path = settings.oauth_signing_key_file
    checks = [_key_file_check(path, settings.oauth_access_token_ttl_s)]
    if (settings.public_url or "").startswith("http://"):
        why = "PUBLIC_URL is plain http: only clients on this machine can complete the OAuth flow"
        checks.append(("oauth public url", "WARN", why, "serve https (TLS_CERT_FILE) or behind a TLS proxy"))
    return checks


def _key_file_check(path: Path, ttl_s: float) -> DoctorRow:
    hint = f"fix or remove {path} (a new key is made at start; tokens signed by the old one stop working)"
    if not path.exists():
        directory = next((p for p in path.parents if p.exists()), Path("."))
        if not os.access(directory, os.W_OK):
            return ("oauth signing keys", "FAIL", f"cannot create {path}: {directory} is not writable", hint)
        return ("oauth signing keys", "PASS", f"{path} is created at first start", "")
    keys = SigningKeys(path, token_ttl_s=ttl_s)
    try:
        keys.ensure()
    except ConfigError as exc:
        return ("oauth signing keys", "FAIL", exc.message, hint)
    if stat.S_IMODE(path.stat().st_mode) & PRIVATE_BITS:
        return ("oauth signing keys", "WARN", f"{path} is readable by group or others", f"chmod 600 {path}")
    published = len(keys.published())
    return ("oauth signing keys", "PASS", f"signing with {keys.active().kid}; {published} key(s) published", "")


def grant_row(grant: Grant) -> dict[str, Any]:
    """A grant as `token list` and `oauth grants` show it (never a token)."""
    return {
        "name": display_name(grant),
        "grant": grant.id,
        "scopes": list(grant.scopes),
        "resource": grant.resource,
        "created": grant.created,
        "last_used": grant.last_used,
        "expires": grant.expires,
    }


async def grant_rows(store: Store) -> list[dict[str, Any]]:
    """Every grant in force, as rows."""
    return [grant_row(g) for g in await all_grants(store)]


async def revoke_grants(store: Store, audit: AuditLog, which: str, settings: Settings) -> list[Grant]:
    """Revoke the grants `which` names (a grant id, or `oauth:<client name>`: every grant of that client); audited.

    In cluster mode every running instance is told, so their sessions end now, not at their next sweep.
    """
    chosen = [g for g in await all_grants(store) if which in (g.id, display_name(g))]
    for grant in chosen:
        if await store.delete_record(GRANT, grant.id):
            audit.record(
                "oauth.grant.revoked",
                outcome="ok",
                principal="cli",
                reason="revoked with the CLI",
                **grant_fields(grant),
            )
    if chosen and settings.redis_url is not None:
        await announce(settings.redis_url.get_secret_value())
    return chosen


@oauth_cli.command("rotate-key")
def rotate_key(as_json: JsonFlag = False, env_file: EnvFile = Path(".env")) -> None:
    """Sign new access tokens with a fresh key; the old one stays in the JWKS until its tokens have expired.

    A running server picks the new key up within a second. Example: mcp-bastion oauth rotate-key
    """
    settings = settings_from(env_file)
    audit = AuditLog.from_settings(settings)
    keys = SigningKeys(settings.oauth_signing_key_file, token_ttl_s=settings.oauth_access_token_ttl_s)
    try:
        keys.ensure()
        key = keys.rotate()
    except (ConfigError, OSError) as exc:
        fail(f"cannot rotate the OAuth signing key: {exc}", "check OAUTH_SIGNING_KEY_FILE and its directory")
    published = [k.kid for k in keys.published()]
    audit.record("oauth.key.rotated", outcome="ok", principal="cli", kid=key.kid, published=published)
    if as_json:
        out.print_json(json.dumps({"kid": key.kid, "published": published}))
        return
    out.print(f"signing with {key.kid}; published: {', '.join(published)}")
    until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() + settings.oauth_access_token_ttl_s))
    out.print(f"the previous key stays published until {until}Z, when the last token it signed expires")


@oauth_cli.command("grants")
def grants(as_json: JsonFlag = False, env_file: EnvFile = Path(".env")) -> None:
    """List the grants clients hold (also in `token list`).

    Example: mcp-bastion oauth grants --json
    """
    _, store, _ = context(env_file)
    rows = run(grant_rows(store))
    columns = [
        Col("name", "name"),
        Col("grant", "grant"),
        Col("scopes", lambda row: ", ".join(row["scopes"])),
        Col("last used", lambda row: _when(row["last_used"])),
        Col("expires", lambda row: _when(row["expires"])),
    ]
    listing(rows, columns, as_json=as_json, document={"grants": rows})


@oauth_cli.command("revoke")
def revoke(
    which: Annotated[str, typer.Argument(help="A grant id, or oauth:<client name> for every grant of that client.")],
    env_file: EnvFile = Path(".env"),
) -> None:
    """Revoke grants: their tokens are refused at once and their sessions end.

    Example: mcp-bastion oauth revoke oauth:claude.ai
    """
    settings, store, audit = context(env_file)
    ended = run(revoke_grants(store, audit, which, settings))
    if not ended:
        fail(f"no grant {which!r}", "see `mcp-bastion oauth grants`")
    for grant in ended:
        out.print(f"revoked {display_name(grant)} ({grant.id})")


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp)) + "Z" if stamp else "-"
