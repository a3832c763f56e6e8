"""`mcp-bastion clients NAME`: ready-to-paste configuration for the MCP clients people use (Issue 11 item 8).

Each snippet names the file it goes in (per OS) on a comment line above it. No snippet holds a token value: each
client gets the token from an environment variable, a prompt, or a 0600 file, in the way it supports.
"""

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from mcp_bastion.cli.base import cli, fail, out
from mcp_bastion.cli.connect_wire import DEFAULT_TOKEN_ENV, check_url
from mcp_bastion.errors import ConfigError

DEFAULT_URL: Final = "http://127.0.0.1:3001"
TOKEN_PLACEHOLDER: Final = "<your mcp-bastion token>"  # noqa: S105 - shown to the user, never a credential
CLAUDE_DESKTOP: Final = (
    "macOS ~/Library/Application Support/Claude/claude_desktop_config.json; "
    "Windows %APPDATA%\\Claude\\claude_desktop_config.json; Linux ~/.config/Claude/claude_desktop_config.json"
)


@dataclass(frozen=True)
class Snippet:
    client: str
    where: str
    text: str
    syntax: str = "json"  # "json" or "shell"


def dump(value: Any) -> str:
    return json.dumps(value, indent=2)


def token_file_for(name: str) -> Path:
    return Path.home() / ".config" / "mcp-bastion" / f"{name}.token"


def snippets(name: str, base_url: str, token_env: str, command: list[str]) -> list[Snippet]:
    """One snippet per client for the gateway server `name` at `base_url`; `command` launches mcp-bastion."""
    url = f"{base_url.rstrip('/')}/mcp/{name}"
    token_file = token_file_for(name)
    connect_args = ["connect", url, "--token-file", str(token_file)]
    bearer = "Bearer ${" + token_env + "}"
    env_bearer = "Bearer ${env:" + token_env + "}"
    return [
        Snippet(
            "Claude Desktop (through mcp-bastion connect)",
            f"{CLAUDE_DESKTOP}; put the token in {token_file} (paste it, then Enter): "
            f'(umask 077; mkdir -p {token_file.parent}; read -rs T; printf %s "$T" > {token_file})',
            dump({"mcpServers": {name: {"command": command[0], "args": [*command[1:], *connect_args]}}}),
        ),
        Snippet(
            "Claude Desktop (through mcp-remote, needs Node.js)",
            f"{CLAUDE_DESKTOP}; mcp-remote reads the header from env (no space after the colon, for Windows)",
            dump(
                {
                    "mcpServers": {
                        name: {
                            "command": "npx",
                            "args": ["-y", "mcp-remote", url, "--header", "Authorization:${AUTH_HEADER}"],
                            "env": {"AUTH_HEADER": f"Bearer {TOKEN_PLACEHOLDER}"},
                        }
                    }
                }
            ),
        ),
        Snippet(
            "Claude Code",
            f"run in your project; it writes .mcp.json, which reads ${token_env} from the environment at start",
            f"claude mcp add --scope project --transport http {name} {url} --header 'Authorization: {bearer}'",
            "shell",
        ),
        Snippet(
            "Claude Code (.mcp.json)",
            f".mcp.json at the project root (or ~/.claude.json for every project); set {token_env} in the environment",
            dump({"mcpServers": {name: {"type": "http", "url": url, "headers": {"Authorization": bearer}}}}),
        ),
        Snippet(
            "Cursor",
            f"~/.cursor/mcp.json (every project) or .cursor/mcp.json (this project); set {token_env} in the "
            "environment",
            dump({"mcpServers": {name: {"url": url, "headers": {"Authorization": env_bearer}}}}),
        ),
        Snippet(
            "VS Code",
            ".vscode/mcp.json (this workspace), or the file `MCP: Open User Configuration` opens; asks once, stores "
            "it in VS Code's secret storage",
            dump(
                {
                    "inputs": [
                        {
                            "type": "promptString",
                            "id": "mcp-bastion-token",
                            "description": "mcp-bastion token",
                            "password": True,
                        }
                    ],
                    "servers": {
                        name: {
                            "type": "http",
                            "url": url,
                            "headers": {"Authorization": "Bearer ${input:mcp-bastion-token}"},
                        }
                    },
                }
            ),
        ),
        Snippet(
            "Windsurf",
            "macOS/Linux ~/.codeium/windsurf/mcp_config.json; Windows "
            f"%USERPROFILE%\\.codeium\\windsurf\\mcp_config.json; set {token_env} in the environment",
            dump({"mcpServers": {name: {"serverUrl": url, "headers": {"Authorization": env_bearer}}}}),
        ),
    ]


def launcher() -> list[str]:
    """How a client should start mcp-bastion, by full path (GUI apps have a short PATH): the script, or this Python."""
    script = shutil.which("mcp-bastion")
    return [script] if script else [sys.executable, "-m", "mcp_bastion"]


@cli.command()
def clients(
    name: Annotated[str, typer.Argument(help="The server's name in the gateway's mcp.json (the /mcp/NAME path).")],
    url: Annotated[str, typer.Option("--url", help="The gateway's base URL.")] = DEFAULT_URL,
    token_env: Annotated[
        str, typer.Option("--token-env", metavar="NAME", help="Environment variable the clients read the token from.")
    ] = DEFAULT_TOKEN_ENV,
) -> None:
    """Print ready-to-paste configuration for Claude Desktop, Claude Code, Cursor, VS Code and Windsurf.

    Never prints a token: each snippet reads it from an environment variable, a prompt or a 0600 file.

    Example: mcp-bastion clients files --url https://gateway.example
    """
    try:
        check_url(url)
    except ConfigError as exc:
        fail(exc.message, "pass --url with the gateway's https:// URL, or http:// on this machine")
    for snippet in snippets(name, url, token_env, launcher()):
        out.print(f"# {snippet.client}: {snippet.where}", soft_wrap=True, style="bold")
        out.print(snippet.text, soft_wrap=True)
        out.print()
