"""The `mcp-bastion` command. Each module registers its commands on the one Typer app in `base`.

Settings are built here, at the edge; errors become one line and exit code 2; uvicorn runs here.
"""

from mcp_bastion.cli import (  # noqa: F401 - importing registers the commands
    audit_query,
    audit_tail,
    authserver,
    clients,
    connect,
    doctor,
    incident,
    serve,
    service,
    setup,
    status,
    tokens,
)
from mcp_bastion.cli.base import cli


def main() -> None:
    """Entry point of the console script."""
    cli()


__all__ = ["cli", "main"]
