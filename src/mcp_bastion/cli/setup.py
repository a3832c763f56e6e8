"""`init`: interactive and scripted first-time setup (.env, mcp.json, TLS)."""

from mcp_bastion.cli.base import cli  # noqa: F401 - commands register on this app
