"""Bench only: `mcp-bastion serve` with the security pipeline taken out, to measure what the pipeline costs.

The product has no switch for this on purpose; the bench swaps the app's pipeline for its bare router here.
Run by `bench/run.py --no-pipeline` with the same arguments as `mcp-bastion serve`.
"""

from typing import Any

import mcp_bastion.cli.serve as serve_command
from mcp_bastion.app import BastionApp, create_app
from mcp_bastion.cli import main


def create_app_without_pipeline(*args: Any, **kwargs: Any) -> BastionApp:
    """The normal app, answering with its router directly (no headers, allowlist, auth, limits stages)."""
    app = create_app(*args, **kwargs)
    app.pipeline = app._http
    return app


serve_command.create_app = create_app_without_pipeline
main()
