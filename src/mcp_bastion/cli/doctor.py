"""`doctor`: static checks of the installation, and `--live` security tests against a running server."""

from mcp_bastion.cli.base import cli  # noqa: F401 - commands register on this app
