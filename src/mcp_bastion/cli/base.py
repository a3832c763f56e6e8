"""What every command shares: the Typer app, the consoles, error exits, loading settings, the store."""

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

# Typer vendors Click as typer._click (the exceptions its commands raise); Typer's own core imports them the same way.
from typer._click import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from mcp_bastion import __version__
from mcp_bastion.audit import AuditLog
from mcp_bastion.config import ServerSpec, Settings, default_store_url, load_servers, load_settings, variables
from mcp_bastion.errors import ConfigError, DependencyUnavailable, GatewayError
from mcp_bastion.store import Store, open_store

EXIT_CONFIG = 2
EXIT_ABORTED = 1  # Ctrl-C or end of input at a prompt, as Click has it


class OneLineErrors(TyperGroup):
    """The top-level group: a usage error (missing argument, unknown option, bad value) is one line with a hint.

    Click and Typer would print a usage line, a "Try --help" line and a framed panel; we print `error: ...` with
    the command's own example as the hint, exit code 2, like every other error of the CLI.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:  # the help is already printed
            sys.exit(exc.exit_code)
        except ClickException as exc:
            usage_error(exc)
        except typer.Abort:
            err.print("Aborted!")
            sys.exit(EXIT_ABORTED)
        sys.exit(code if isinstance(code, int) else 0)


cli = typer.Typer(
    name="mcp-bastion",
    help="A secure, fast HTTP gateway for stdio MCP servers.",
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Markup and emoji codes are off: a client name, a token name or an audit field is printed as the bytes it is,
# never read as `[bold]` or `:smile:`. Styling is explicit (`style=`, `Text`), so data can never carry any.
# Piped or redirected (not a terminal), a line is never broken at the console width: a long path stays one word
# for grep and scripts.
err = Console(stderr=True, highlight=False, markup=False, emoji=False, soft_wrap=not sys.stderr.isatty())
out = Console(highlight=False, markup=False, emoji=False, soft_wrap=not sys.stdout.isatty())

EnvFile = Annotated[Path, typer.Option("--env-file", help="Settings and secrets file.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="The mcpServers file (env MCP_CONFIG).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def error_line(message: str, hint: str | None = None) -> Text:
    """`error: MESSAGE (hint: HINT)`, styled; user text is never markup."""
    line = Text.assemble(("error:", "bold red"), " ", message)
    if hint:
        line.append(f" (hint: {hint})", style="dim")
    return line


def fail(message: str, hint: str) -> NoReturn:
    """One clear line (with its hint on the same line), exit code 2, no traceback. User text is never markup."""
    err.print(error_line(message, hint), soft_wrap=True)
    raise typer.Exit(EXIT_CONFIG)


def usage_error(exc: ClickException) -> NoReturn:
    """A Click usage error as one line; the hint is the command's example (from its docstring), else its --help."""
    ctx: Context | None = getattr(exc, "ctx", None)
    message = exc.format_message().replace("\n", " ")
    hint = None
    if ctx is not None:
        examples = [line.strip() for line in (ctx.command.help or "").splitlines() if line.strip()]
        example = next((line.removeprefix("Example:").strip() for line in examples if line.startswith("Example:")), "")
        more = f"`{ctx.command_path} --help`"
        hint = f"e.g. `{example}`; more in {more}" if example else f"see {more}"
    err.print(error_line(message, hint), soft_wrap=True)
    sys.exit(exc.exit_code if isinstance(exc, UsageError) else EXIT_CONFIG)


def show_version(value: bool) -> None:
    """`--version` / `-V`: print the version and exit, whatever else is on the line."""
    if value:
        out.print(__version__)
        raise typer.Exit


@cli.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", "-V", is_eager=True, callback=show_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """A secure, fast HTTP gateway for stdio MCP servers."""


def check_env_file(env_file: Path) -> None:
    """A settings file that exists must be a readable UTF-8 file: never silently ignored, never a traceback."""
    if not env_file.exists():
        return
    hint = "pass --env-file PATH, or move it away to use the environment and defaults"
    try:
        env_file.read_bytes().decode("utf-8")
    except IsADirectoryError:
        fail(f"the settings file {env_file} is a directory", hint)
    except OSError as exc:
        fail(
            f"cannot read the settings file {env_file}: {exc.strerror}",
            f"`chmod 600 {env_file}` as its owner; or {hint}",
        )
    except UnicodeDecodeError as exc:
        fail(f"the settings file {env_file} is not UTF-8 text (byte {exc.start})", "save it as UTF-8")


def settings_from(env_file: Path, **flags: Any) -> Settings:
    """Settings from flags, environment and the env file; a bad value is one line naming the setting."""
    check_env_file(env_file)
    try:
        return load_settings(env_file, **flags)
    except ConfigError as exc:
        fail(exc.message, f"fix it in {env_file}, the environment or the flag; `mcp-bastion COMMAND --help` lists them")


def load(env_file: Path, **flags: Any) -> tuple[Settings, dict[str, ServerSpec]]:
    """Settings and the servers of the mcpServers file; a missing file says how to write one."""
    settings = settings_from(env_file, **flags)
    path = settings.mcp_config
    if not path.exists():
        fail(
            f"no server file at {path}",
            "`mcp-bastion demo` writes one that runs the bundled demo server, `mcp-bastion init` sets up your own; "
            "or pass --config PATH (env MCP_CONFIG)",
        )
    try:
        servers = load_servers(path, variables(env_file))
    except ConfigError as exc:
        fail(exc.message, f"fix {path}; `mcp-bastion check-config` checks it without starting anything")
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
    settings = settings_from(env_file)
    audit = AuditLog.from_settings(settings)  # token.* and session.* lines land in the security file
    return settings, store_for(settings, env_file), audit


def run(coro: Any) -> Any:
    """Run a store coroutine; a store error becomes one error line and exit code 2."""
    try:
        return asyncio.run(coro)
    except DependencyUnavailable as exc:
        fail(exc.message, "is the store STORE_URL names running and reachable? `mcp-bastion doctor` checks it")
    except GatewayError as exc:
        fail(exc.message, "`mcp-bastion doctor` checks the settings and the store")
