"""The `mcp-bastion` command: builds Settings at the edge, maps errors to exit codes, runs uvicorn."""

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console

from mcp_bastion import __version__
from mcp_bastion.app import create_app
from mcp_bastion.config import ServerSpec, Settings, is_loopback, load_servers, load_settings, variables
from mcp_bastion.errors import ConfigError

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
    """One clear line (and a hint), exit code 2, no traceback."""
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    if hint:
        err.print(f"[dim]hint: {hint}[/]", soft_wrap=True)
    raise typer.Exit(EXIT_CONFIG)


def _load(env_file: Path, **flags: Any) -> tuple[Settings, dict[str, ServerSpec]]:
    try:
        settings = load_settings(env_file, **flags)
        servers = load_servers(settings.mcp_config, variables(env_file))
    except ConfigError as exc:
        fail(exc.message, "fix the file named above, or run `mcp-bastion demo` for a working example")
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
    if not is_loopback(settings.host):
        fail(
            f"refusing to bind {settings.host}: this version serves loopback only (127.0.0.1, ::1)",
            "authentication is not configured; bind 127.0.0.1 and put a TLS proxy with auth in front",
        )
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    _banner(settings, servers)
    app = create_app(settings, servers)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


def _banner(settings: Settings, servers: dict[str, ServerSpec]) -> None:
    base = f"http://{settings.host}:{settings.port}"
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
        err.print("Try it:", soft_wrap=True)
        err.print(
            f"  curl -s {base}/mcp/{name} -H 'Content-Type: application/json' "
            "-H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' "
            f"-H 'Mcp-Method: tools/list' -d '{body}'",
            soft_wrap=True,
            markup=False,
        )
        err.print(
            f"  npx @modelcontextprotocol/inspector --cli {base}/mcp/{name} --transport http --method tools/list",
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
) -> None:
    """Write an mcpServers file that runs the bundled demo server.

    Example: mcp-bastion demo --config mcp.json
    """
    if path.exists() and not force:
        out.print(f"{path} exists; keeping it (use --force to overwrite)")
        return
    document = {"mcpServers": {"demo": {"command": sys.executable, "args": ["-m", "mcp_bastion.demo_server"]}}}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    out.print(f"wrote {path}")


@cli.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    """Entry point of the console script."""
    cli()
