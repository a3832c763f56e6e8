"""What every command shares: the Typer app, the consoles, error exits, loading settings, the store."""

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from mcp_bastion.audit import AuditLog
from mcp_bastion.config import ServerSpec, Settings, default_store_url, load_servers, load_settings, variables
from mcp_bastion.errors import ConfigError, GatewayError
from mcp_bastion.store import Store, open_store

EXIT_CONFIG = 2
cli = typer.Typer(
    name="mcp-bastion",
    help="A secure, fast HTTP gateway for stdio MCP servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Markup and emoji codes are off: a client name, a token name or an audit field is printed as the bytes it is,
# never read as `[bold]` or `:smile:`. Styling is explicit (`style=`, `Text`), so data can never carry any.
err = Console(stderr=True, highlight=False, markup=False, emoji=False)
out = Console(highlight=False, markup=False, emoji=False)

EnvFile = Annotated[Path, typer.Option("--env-file", help="Settings and secrets file.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="The mcpServers file (env MCP_CONFIG).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def fail(message: str, hint: str | None = None) -> None:
    """One clear line (with its hint on the same line), exit code 2, no traceback. User text is never markup."""
    line = Text.assemble(("error:", "bold red"), " ", message)
    if hint:
        line.append(f" (hint: {hint})", style="dim")
    err.print(line, soft_wrap=True)
    raise typer.Exit(EXIT_CONFIG)


def load(env_file: Path, **flags: Any) -> tuple[Settings, dict[str, ServerSpec]]:
    try:
        settings = load_settings(env_file, **flags)
        servers = load_servers(settings.mcp_config, variables(env_file))
    except ConfigError as exc:
        fail(exc.message)
        raise  # unreachable: fail() exits
    return settings, servers


def store_for(settings: Settings, env_file: Path) -> Store:
    url = settings.store_url.get_secret_value() if settings.store_url else default_store_url(env_file)
    try:
        return open_store(url)
    except GatewayError as exc:
        fail(exc.message, "set STORE_URL to sqlite:///absolute/path, redis://host:port/0 or memory://")
        raise


def context(env_file: Path) -> tuple[Settings, Store, AuditLog]:
    """Settings, store and audit log for a command that works on the state a running server uses."""
    try:
        settings = load_settings(env_file)
    except ConfigError as exc:
        fail(exc.message)
        raise
    audit = AuditLog.from_settings(settings)  # token.* and session.* lines land in the security file
    return settings, store_for(settings, env_file), audit


def run(coro: Any) -> Any:
    """Run a store coroutine; a store error becomes one error line and exit code 2."""
    try:
        return asyncio.run(coro)
    except GatewayError as exc:
        fail(exc.message)
