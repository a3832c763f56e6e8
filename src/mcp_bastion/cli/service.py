"""`service systemd|pm2`: production service definitions."""

from mcp_bastion.cli.base import cli  # noqa: F401 - commands register on this app
