"""`python -m mcp_bastion` runs the CLI."""

from mcp_bastion.cli import main

main()
