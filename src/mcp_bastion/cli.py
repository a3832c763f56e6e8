"""The `mcp-bastion` command: builds Settings at the edge, maps errors to exit codes, runs uvicorn."""

import asyncio
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mcp_bastion import __version__
from mcp_bastion.app import create_app
from mcp_bastion.audit import AuditLog
from mcp_bastion.config import (
    ServerSpec,
    Settings,
    default_store_url,
    is_loopback,
    load_servers,
    load_settings,
    split_list,
    variables,
)
from mcp_bastion.errors import ConfigError, GatewayError
from mcp_bastion.security import new_token, token_hash, valid_scope, weakness
from mcp_bastion.store import Store, TokenRecord, open_store

EXIT_CONFIG = 2
cli = typer.Typer(
    name="mcp-bastion",
    help="A secure, fast HTTP gateway for stdio MCP servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

EnvFile = Annotated[Path, typer.Option("--env-file", help="Settings and secrets file.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="The mcpServers file [env MCP_CONFIG].")]


def fail(message: str, hint: str | None = None) -> None:
    """One clear line (with its hint on the same line), exit code 2, no traceback. User text is never markup."""
    line = f"[bold red]error:[/] {escape(message)}"
    if hint:
        line += f" [dim](hint: {escape(hint)})[/]"
    err.print(line, soft_wrap=True)
    raise typer.Exit(EXIT_CONFIG)


def _load(env_file: Path, **flags: Any) -> tuple[Settings, dict[str, ServerSpec]]:
    try:
        settings = load_settings(env_file, **flags)
        servers = load_servers(settings.mcp_config, variables(env_file))
    except ConfigError as exc:
        fail(exc.message)
        raise  # unreachable: fail() exits
    return settings, servers


@cli.command()
def serve(
    env_file: EnvFile = Path(".env"),
    config: ConfigFile = None,
    host: Annotated[str | None, typer.Option(help="Bind address [env HOST, default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env PORT, default 3001].")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error [env LOG_LEVEL].")] = None,
) -> None:
    """Serve every server in the config over every MCP HTTP transport.

    Example: mcp-bastion serve --config mcp.json --port 3001
    """
    settings, servers = _load(env_file, mcp_config=config, host=host, port=port, log_level=log_level)
    store = _store(settings, env_file)
    try:
        for warning in preflight(settings, env_file, store):
            err.print(f"[bold yellow]warning:[/] {warning}", soft_wrap=True)
        app = create_app(settings, servers, store=store)
    except ConfigError as exc:
        fail(exc.message, "see `mcp-bastion serve --help` and the security section of the README")
        return
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    _banner(settings, servers)
    # Everything imported so far lives as long as the process: take it out of the cyclic collector's sight, so
    # the collections that load triggers walk only per-request garbage.
    gc.collect()
    gc.freeze()
    tls = (
        {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)} if settings.tls else {}
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # an access log would be one more place for query strings to leak; the audit log covers it
        proxy_headers=False,  # forwarded headers are trusted only from TRUSTED_PROXIES, by our own stage
        server_header=False,
        date_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **tls,  # type: ignore[arg-type]
    )


def _store(settings: Settings, env_file: Path) -> Store:
    url = settings.store_url.get_secret_value() if settings.store_url else default_store_url(env_file)
    try:
        return open_store(url)
    except GatewayError as exc:
        fail(exc.message, "set STORE_URL to sqlite:///absolute/path, redis://host:port/0 or memory://")
        raise


def preflight(settings: Settings, env_file: Path, store: Store) -> list[str]:
    """Refuse dangerous settings (ConfigError) and return the warnings to print loudly."""
    warnings: list[str] = []
    admin = settings.auth_token.get_secret_value() if settings.auth_token else None
    if admin is not None and (reason := weakness(admin)) is not None:
        raise ConfigError(f"AUTH_TOKEN is too weak: {reason}; generate one with `mcp-bastion token generate`")
    loopback = is_loopback(settings.host)
    if settings.insecure_no_auth:
        if not loopback:
            raise ConfigError(f"INSECURE_NO_AUTH cannot be used with a non-loopback bind ({settings.host})")
        warnings.append("INSECURE_NO_AUTH is on: every local process can use every server without a token")
    elif admin is None and not asyncio.run(_has_tokens(store)):
        if not loopback:
            raise ConfigError(
                f"refusing to bind {settings.host} with no token configured: set AUTH_TOKEN in .env "
                "or create one with `mcp-bastion token create NAME --scope admin`"
            )
        warnings.append(
            "no AUTH_TOKEN and no stored tokens: every request will be refused (401) until you "
            "create one with `mcp-bastion token create NAME --scope admin`"
        )
    if any(ip in ("0.0.0.0", "0.0.0.0/0", "::/0", "*") for ip in split_list(settings.allowed_ips)):
        warnings.append("ALLOWED_IPS=0.0.0.0 lets EVERY address on the network connect; list your clients instead")
    if not loopback and not settings.tls:
        warnings.append(
            f"serving plain HTTP on {settings.host}: tokens cross the network in clear text; set "
            "TLS_CERT_FILE/TLS_KEY_FILE or put a TLS proxy in front"
        )
    if env_file.exists() and env_file.stat().st_mode & 0o077:
        warnings.append(f"{env_file} is readable by group or others; fix it with `chmod 600 {env_file}`")
    return warnings


async def _has_tokens(store: Store) -> bool:
    return bool(await store.list_tokens())


def _banner(settings: Settings, servers: dict[str, ServerSpec]) -> None:
    base = f"{'https' if settings.tls else 'http'}://{settings.host}:{settings.port}"
    err.print(f"[bold]mcp-bastion {__version__}[/] serving {len(servers)} server(s) on {base}")
    for name, spec in servers.items():
        err.print(
            f"  [cyan]{name}[/] ({spec.isolation})  Streamable HTTP: {base}/mcp/{name}   SSE: {base}/mcp/{name}/sse"
        )
    if servers:
        name = next(iter(servers))
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/list",
                "params": {
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {},
                    }
                },
            }
        )
        err.print("Try it (the token is AUTH_TOKEN in your .env):", soft_wrap=True)
        err.print(
            f"  export AUTH_TOKEN=$(grep ^AUTH_TOKEN= .env | cut -d= -f2-)\n"
            f"  curl -s {base}/mcp/{name} -H \"Authorization: Bearer $AUTH_TOKEN\" -H 'Content-Type: application/json' "
            "-H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' "
            f"-H 'Mcp-Method: tools/list' -d '{body}'",
            soft_wrap=True,
            markup=False,
        )
        err.print(
            f"  npx @modelcontextprotocol/inspector --cli {base}/mcp/{name} --transport http --method tools/list "
            '--header "Authorization: Bearer $AUTH_TOKEN"',
            soft_wrap=True,
            markup=False,
        )


@cli.command("check-config")
def check_config(env_file: EnvFile = Path(".env"), config: ConfigFile = None) -> None:
    """Validate the settings and the mcpServers file without starting anything.

    Example: mcp-bastion check-config --config mcp.json
    """
    settings, servers = _load(env_file, mcp_config=config)
    out.print(f"{settings.mcp_config}: {len(servers)} server(s) OK: {', '.join(servers) or '(none)'}")


@cli.command()
def demo(
    path: Annotated[Path, typer.Option("--config", "-c", help="Where to write the demo mcpServers file.")] = Path(
        "mcp.json"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Write an mcpServers file that runs the bundled demo server, and a .env with a new AUTH_TOKEN if none exists.

    Example: mcp-bastion demo --config mcp.json
    """
    if path.exists() and not force:
        out.print(f"{path} exists; keeping it (use --force to overwrite)")
    else:
        document = {"mcpServers": {"demo": {"command": sys.executable, "args": ["-m", "mcp_bastion.demo_server"]}}}
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        out.print(f"wrote {path}")
    if not env_file.exists():
        write_private(
            env_file,
            f"# mcp-bastion settings and secrets (keep this file mode 0600)\n"
            f"AUTH_TOKEN={new_token()}\nSESSION_SECRET={new_token()}\n",
        )
        out.print(f"wrote {env_file} with a new AUTH_TOKEN (mode 0600)")


token_cli = typer.Typer(
    help="Named bearer tokens, stored hashed; changes apply to a running server at once.", no_args_is_help=True
)
cli.add_typer(token_cli, name="token")
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `3600s` → seconds."""
    unit = text[-1:].lower()
    if unit not in DURATION or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        fail(f"--expires {text!r}: use a number and a unit, e.g. 30d, 12h, 90m")
    return int(text[:-1]) * DURATION[unit]


def _token_env(env_file: Path) -> tuple[Settings, Store, AuditLog]:
    try:
        settings = load_settings(env_file)
    except ConfigError as exc:
        fail(exc.message)
        raise
    audit = AuditLog(settings.audit_log, max_bytes=settings.audit_max_bytes, backups=settings.audit_backups)
    return settings, _store(settings, env_file), audit


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except GatewayError as exc:
        fail(exc.message)


@token_cli.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", "-s", help="admin, server:NAME or tool:SERVER/PATTERN; repeatable [default: server:*]."
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
        fail(f"--scope {bad[0]!r} is not a scope", "use admin, server:NAME or tool:SERVER/PATTERN")
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        fail(f"token name {name!r}: use 1-64 letters, digits, - _ .")
    _, store, audit = _token_env(env_file)
    value = new_token()
    now = time.time()
    record = TokenRecord(name, token_hash(value), scopes, now, now + parse_duration(expires) if expires else None)
    _run(store.create_token(record))
    audit.record(
        "token.created", outcome="ok", principal="cli", token=name, scopes=list(scopes), expires=record.expires
    )
    if as_json:
        out.print_json(json.dumps({"name": name, "token": value, "scopes": list(scopes), "expires": record.expires}))
    else:
        out.print(f"Token [bold]{name}[/] ({', '.join(scopes)}). Copy it now, it is not shown again:")
        out.print(value, markup=False, highlight=False)


@token_cli.command("list")
def token_list(as_json: JsonFlag = False, env_file: EnvFile = Path(".env")) -> None:
    """List tokens: name, scopes, created, last used, expiry (never values).

    Example: mcp-bastion token list --json
    """
    _, store, _ = _token_env(env_file)
    records = _run(store.list_tokens())
    rows = [
        {"name": r.name, "scopes": list(r.scopes), "created": r.created, "last_used": r.last_used, "expires": r.expires}
        for r in records
    ]
    if as_json:
        out.print_json(json.dumps({"tokens": rows}))
        return
    table = Table("name", "scopes", "created", "last used", "expires")
    for row in rows:
        table.add_row(
            row["name"], ", ".join(row["scopes"]), _when(row["created"]), _when(row["last_used"]), _when(row["expires"])
        )
    out.print(table)


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp)) + "Z" if stamp else "-"


@token_cli.command("revoke")
def token_revoke(name: str, env_file: EnvFile = Path(".env")) -> None:
    """Revoke a token; a running server refuses it from the next request on.

    Example: mcp-bastion token revoke cursor-laptop
    """
    _, store, audit = _token_env(env_file)
    if not _run(store.revoke_token(name)):
        fail(f"no token named {name!r}", "see `mcp-bastion token list`")
    audit.record("token.revoked", outcome="ok", principal="cli", token=name)
    out.print(f"revoked {name}")


@token_cli.command("rotate")
def token_rotate(name: str, as_json: JsonFlag = False, env_file: EnvFile = Path(".env")) -> None:
    """Replace a token's value, keeping its name, scopes and expiry; the old value stops working at once.

    Example: mcp-bastion token rotate cursor-laptop
    """
    _, store, audit = _token_env(env_file)
    records = {r.name: r for r in _run(store.list_tokens())}
    old = records.get(name)
    if old is None:
        fail(f"no token named {name!r}", "see `mcp-bastion token list`")
        return
    value = new_token()
    _run(store.revoke_token(name))
    _run(store.create_token(TokenRecord(name, token_hash(value), old.scopes, time.time(), old.expires)))
    audit.record("token.revoked", outcome="ok", principal="cli", token=name, reason="rotated")
    audit.record("token.created", outcome="ok", principal="cli", token=name, scopes=list(old.scopes))
    if as_json:
        out.print_json(json.dumps({"name": name, "token": value}))
    else:
        out.print(f"New value for [bold]{name}[/]; copy it now:")
        out.print(value, markup=False, highlight=False)


@token_cli.command("generate")
def token_generate() -> None:
    """Print a strong random value for AUTH_TOKEN (nothing is stored).

    Example: echo "AUTH_TOKEN=$(mcp-bastion token generate)" >> .env
    """
    out.print(new_token(), markup=False, highlight=False)


@cli.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def write_private(path: Path, text: str) -> None:
    """Create a file readable by its owner only (0600 whatever the umask), refusing to follow a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def main() -> None:
    """Entry point of the console script."""
    cli()
