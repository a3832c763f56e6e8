"""Issue 10 item 10: listings never cut data (tables fold, and take their natural width off a terminal), and
`token create` warns when a scope reaches no configured server."""

import json
import sys
from pathlib import Path

from tests.security.support import run_cli, write_env

SERVERS = {"toolbox": {"command": sys.executable, "args": ["-c", "pass"]}, "files": {"command": sys.executable}}


def env_with_servers(tmp_path: Path) -> Path:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": SERVERS}), encoding="utf-8")
    return write_env(tmp_path, MCP_CONFIG=str(config))


def test_token_list_in_a_pipe_shows_every_scope_whole(tmp_path: Path) -> None:
    """Issue 10 item 10: a token with many long scopes, listed into a pipe (Rich would assume 80 columns), shows
    each scope in full on one line: no `…`, nothing folded away."""
    env_file = env_with_servers(tmp_path)
    scopes = [f"tool:toolbox/a-rather-long-tool-name-number-{n}" for n in range(6)]
    created = run_cli(tmp_path, env_file, "token", "create", "wide", *[a for s in scopes for a in ("--scope", s)])
    assert created.returncode == 0, created.stderr
    listed = run_cli(tmp_path, env_file, "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert "…" not in listed.stdout
    assert ", ".join(scopes) in listed.stdout
    as_json = run_cli(tmp_path, env_file, "token", "list", "--json")
    assert json.loads(as_json.stdout)["tokens"][0]["scopes"] == scopes


def test_token_create_warns_when_a_scope_reaches_no_configured_server(tmp_path: Path) -> None:
    """Issue 10 item 10: `--scope server:NAME` (or tool:, resource:, prompt:) for a server the config lacks is
    created (exit 0) with a warning naming the configured servers; a glob that matches one, and admin, are not."""
    env_file = env_with_servers(tmp_path)
    typo = run_cli(tmp_path, env_file, "token", "create", "ci", "--scope", "server:tolbox", "--scope", "tool:gh*/x")
    assert typo.returncode == 0, typo.stderr
    warnings = [line for line in typo.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, typo.stderr
    assert "--scope server:tolbox matches no server" in warnings[0]
    assert "configured: toolbox, files" in warnings[0]
    assert "--scope tool:gh*/x matches no server" in warnings[1]
    listed = json.loads(run_cli(tmp_path, env_file, "token", "list", "--json").stdout)
    assert [t["name"] for t in listed["tokens"]] == ["ci"]
    fine = run_cli(tmp_path, env_file, "token", "create", "ok", "--scope", "server:tool*", "--scope", "admin")
    assert fine.returncode == 0, fine.stderr
    assert "warning:" not in fine.stderr
