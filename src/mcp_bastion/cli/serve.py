"""`serve`, `check-config`, `demo`, `version`: running the gateway and checking its configuration."""

import asyncio
import gc
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from mcp_bastion import __version__
from mcp_bastion.app import create_app
from mcp_bastion.cli.base import ConfigFile, EnvFile, cli, err, fail, load, out, store_for, write_private
from mcp_bastion.config import ServerSpec, Settings, is_loopback, split_list
from mcp_bastion.errors import ConfigError
from mcp_bastion.security import new_token, weakness
from mcp_bastion.store import Store


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
    settings, servers = load(env_file, mcp_config=config, host=host, port=port, log_level=log_level)
    store = store_for(settings, env_file)
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
    settings, servers = load(env_file, mcp_config=config)
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


@cli.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)
