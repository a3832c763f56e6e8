"""`audit`: answers to the operator's questions from the audit log (rotated files included)."""

from mcp_bastion.cli.base import cli  # noqa: F401 - commands register on this app
