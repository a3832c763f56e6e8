"""What every command shares: the Typer app, the consoles, error exits, loading settings, the store."""

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

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
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

EnvFile = Annotated[Path, typer.Option("--env-file", help="Settings and secrets file.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="The mcpServers file (env MCP_CONFIG).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def fail(message: str, hint: str | None = None) -> None:
    """One clear line (with its hint on the same line), exit code 2, no traceback. User text is never markup."""
    line = f"[bold red]error:[/] {escape(message)}"
    if hint:
        line += f" [dim](hint: {escape(hint)})[/]"
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
    audit = AuditLog(settings.audit_log, max_bytes=settings.audit_max_bytes, backups=settings.audit_backups)
    return settings, store_for(settings, env_file), audit


def run(coro: Any) -> Any:
    """Run a store coroutine; a store error becomes one error line and exit code 2."""
    try:
        return asyncio.run(coro)
    except GatewayError as exc:
        fail(exc.message)


def write_private(path: Path, text: str) -> None:
    """Create a file readable by its owner only (0600 whatever the umask), refusing to follow a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
