"""`sessions list|revoke` and `lockdown`: incident response against a running server's store."""

from mcp_bastion.cli.base import cli  # noqa: F401 - commands register on this app
