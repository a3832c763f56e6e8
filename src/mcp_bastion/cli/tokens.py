"""`token create|list|revoke|rotate|generate`: named bearer tokens in the store."""

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mcp_bastion.access.scopes import may_see_server, valid_scope
from mcp_bastion.authserver.grants import DISPLAY_PREFIX
from mcp_bastion.cli.authserver import grant_rows, revoke_grants
from mcp_bastion.cli.base import EnvFile, JsonFlag, cli, context, err, fail, out, run
from mcp_bastion.cli.output import Col, listing
from mcp_bastion.cluster.revocations import announce
from mcp_bastion.config import Settings, load_servers, variables
from mcp_bastion.errors import ConfigError
from mcp_bastion.security import ADMIN_SCOPE, new_token, token_hash, token_name_problem
from mcp_bastion.store import TokenRecord

token_cli = typer.Typer(
    help="Named bearer tokens, stored hashed; changes apply to a running server at once.", no_args_is_help=True
)
cli.add_typer(token_cli, name="token")
DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `3600s` → seconds."""
    unit = text[-1:].lower()
    if unit not in DURATION or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        fail(f"--expires {text!r} is not a lifetime", "use a number and a unit: s, m, h, d or w, e.g. 30d, 12h, 90m")
    return int(text[:-1]) * DURATION[unit]


@token_cli.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            "-s",
            help="admin, server:NAME, tool:SERVER/TOOL, resource:SERVER/URI, prompt:SERVER/PROMPT; "
            "repeatable [default: server:*].",
        ),
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d, 12h, 90m [default: never].")] = None,
    as_json: JsonFlag = False,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Create a token and print its value once (it is stored only as a hash).

    Example: mcp-bastion token create cursor-laptop --scope server:github --expires 30d
    """
    scopes = tuple(scope or ["server:*"])
    bad = [s for s in scopes if not valid_scope(s)]
    if bad:
        fail(
            f"--scope {bad[0]!r} is not a scope",
            "use admin, server:NAME, tool:SERVER/TOOL, resource:SERVER/URI or prompt:SERVER/PROMPT",
        )
    if (problem := token_name_problem(name)) is not None:
        fail(f"token name {name!r}: {problem}", "name it after who or what uses it, e.g. cursor-laptop or ci-bot")
    settings, store, audit = context(env_file)
    value = new_token()
    now = time.time()
    record = TokenRecord(name, token_hash(value), scopes, now, now + parse_duration(expires) if expires else None)
    run(store.create_token(record))
    audit.record(
        "token.created", outcome="ok", principal="cli", token=name, scopes=list(scopes), expires=record.expires
    )
    if as_json:
        out.print_json(json.dumps({"name": name, "token": value, "scopes": list(scopes), "expires": record.expires}))
    else:
        out.print(
            Text.assemble("Token ", (name, "bold"), f" ({', '.join(scopes)}). Copy it now, it is not shown again:")
        )
        out.print(value, markup=False, highlight=False)
    warn_unknown_servers(settings, env_file, scopes)


def warn_unknown_servers(settings: Settings, env_file: Path, scopes: tuple[str, ...]) -> None:
    """A warning for each scope (a glob) that reaches no server of the config: a typo, or a server not added yet."""
    try:
        servers = load_servers(settings.mcp_config, variables(env_file))
    except ConfigError:
        return  # a broken config is check-config's to report; the token is created all the same
    for scope in scopes:
        if scope != ADMIN_SCOPE and not any(may_see_server((scope,), name) for name in servers):
            names = ", ".join(servers) or "none"
            message = f" --scope {scope} matches no server in {settings.mcp_config} (configured: {names})"
            err.print(Text.assemble(("warning:", "bold yellow"), message), soft_wrap=True)


@token_cli.command("list")
def token_list(as_json: JsonFlag = False, env_file: EnvFile = Path(".env")) -> None:
    """List tokens: name, scopes, created, last used, expiry (never values).

    Example: mcp-bastion token list --json
    """
    _, store, _ = context(env_file)
    records = run(store.list_tokens())
    rows = [
        {"name": r.name, "scopes": list(r.scopes), "created": r.created, "last_used": r.last_used, "expires": r.expires}
        for r in records
    ]
    rows += run(grant_rows(store))  # Issue 14: the built-in authorization server's grants, as oauth:<client name>
    columns = [
        Col("name", "name"),
        Col("scopes", lambda row: ", ".join(row["scopes"])),
        Col("created", lambda row: _when(row["created"])),
        Col("last used", lambda row: _when(row["last_used"])),
        Col("expires", lambda row: _when(row["expires"])),
    ]
    listing(rows, columns, as_json=as_json, document={"tokens": rows})


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp)) + "Z" if stamp else "-"


@token_cli.command("revoke")
def token_revoke(name: str, env_file: EnvFile = Path(".env")) -> None:
    """Revoke a token; a running server refuses it from the next request on.

    Example: mcp-bastion token revoke cursor-laptop
    """
    settings, store, audit = context(env_file)
    if name.startswith(DISPLAY_PREFIX):  # Issue 14: every grant of that client (`oauth revoke` takes an id too)
        if not run(revoke_grants(store, audit, name, settings)):
            fail(f"no grant named {name!r}", "see `mcp-bastion token list`")
        out.print(f"revoked {name}")
        return
    if not run(store.revoke_token(name)):
        fail(f"no token named {name!r}", "see `mcp-bastion token list`")
    audit.record("token.revoked", outcome="ok", principal="cli", token=name)
    tell_cluster(settings)
    out.print(f"revoked {name}")


def tell_cluster(settings: Settings) -> None:
    """Cluster mode (Issue 12 item 4): every running instance ends what the token opened now, not at its next sweep."""
    if settings.redis_url is not None:
        run(announce(settings.redis_url.get_secret_value()))


@token_cli.command("rotate")
def token_rotate(name: str, as_json: JsonFlag = False, env_file: EnvFile = Path(".env")) -> None:
    """Replace a token's value, keeping its name, scopes and expiry; the old value stops working at once.

    Example: mcp-bastion token rotate cursor-laptop
    """
    settings, store, audit = context(env_file)
    records = {r.name: r for r in run(store.list_tokens())}
    old = records.get(name)
    if old is None:
        fail(f"no token named {name!r}", "see `mcp-bastion token list`")
        return
    value = new_token()
    run(store.revoke_token(name))
    run(store.create_token(TokenRecord(name, token_hash(value), old.scopes, time.time(), old.expires)))
    audit.record("token.revoked", outcome="ok", principal="cli", token=name, reason="rotated")
    tell_cluster(settings)
    audit.record("token.created", outcome="ok", principal="cli", token=name, scopes=list(old.scopes))
    if as_json:
        out.print_json(json.dumps({"name": name, "token": value}))
    else:
        out.print(Text.assemble("New value for ", (name, "bold"), "; copy it now:"))
        out.print(value, markup=False, highlight=False)


@token_cli.command("generate")
def token_generate() -> None:
    """Print a strong random value for AUTH_TOKEN (nothing is stored).

    Example: echo "AUTH_TOKEN=$(mcp-bastion token generate)" >> .env
    """
    out.print(new_token(), markup=False, highlight=False)
