"""Issue 8 item 11: CLI tables and lines print data as the characters it is, never as Rich markup or emoji codes.

A client chooses its `clientInfo.name`, an attacker chooses the paths and reasons that reach the audit log, and a
store written by an older version may hold any token name: each is shown literally by the real console script.
"""

import json
import sqlite3
import time
from pathlib import Path

import httpx

from mcp_bastion.audit import AuditLog
from mcp_bastion.security import token_hash
from tests.harness import spec
from tests.security.support import (
    admin_token,
    open_legacy_session,
    run_cli,
    secure_gateway,
    write_env,
)

MARKUP = "[/bold]x[red]"  # a closing tag with nothing open: Rich raises MarkupError if it reads this as markup
EMOJI = ":warning:"  # Rich would print ⚠ for it
WIDE = {"COLUMNS": "250"}  # no cell is wrapped, so each value appears whole on one line


def initialize_as(client: httpx.Client, url: str, token: str, name: str) -> str:
    """A Streamable HTTP session whose clientInfo.name is `name`; returns its Mcp-Session-Id."""
    return open_legacy_session(client, url, token, client_name=name)


def test_sessions_list_shows_a_client_name_made_of_markup_literally(tmp_path: Path) -> None:
    """Issue 8 item 11: a live MCP session whose clientInfo.name is `[/bold]x[red]` is listed by `sessions list`
    (exit 0) with that name verbatim; before, Rich read it as a closing tag and the command crashed."""
    admin = admin_token()
    with secure_gateway([spec("toolbox")], tmp_path, auth_token=admin, store_url=f"sqlite:///{tmp_path}/s.db") as gw:
        env_file = write_env(tmp_path, AUTH_TOKEN=admin, HOST="127.0.0.1", PORT=gw.url.rsplit(":", 1)[1])
        with httpx.Client(timeout=10) as client:
            initialize_as(client, gw.mcp("toolbox"), admin, f"{MARKUP} {EMOJI}")
        listed = run_cli(tmp_path, env_file, "sessions", "list", **WIDE)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    assert f"toolbox ({MARKUP} {EMOJI})" in listed.stdout
    assert "⚠" not in listed.stdout


def store_token_named(db: Path, name: str, scope: str) -> None:
    """A token row as an older version (which accepted any name) may have left it in the SQLite store."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO tokens VALUES (?,?,?,?,?,?)",
            (token_hash(name), name, json.dumps([scope]), time.time(), None, None),
        )


def test_token_list_and_errors_show_a_name_made_of_markup_literally(tmp_path: Path) -> None:
    """Issue 8 item 11: `token list` prints a stored name and scope containing markup and an emoji code verbatim;
    the error line of `token revoke` quotes a markup name verbatim too."""
    env_file = write_env(tmp_path, AUTH_TOKEN=admin_token())
    created = run_cli(tmp_path, env_file, "token", "create", "plain", "--json")  # creates the store and its schema
    assert created.returncode == 0, created.stderr
    store_token_named(tmp_path / "s.db", f"{MARKUP}{EMOJI}", f"server:{MARKUP}")
    listed = run_cli(tmp_path, env_file, "token", "list", **WIDE)
    assert listed.returncode == 0, listed.stderr
    assert f"{MARKUP}{EMOJI}" in listed.stdout
    assert f"server:{MARKUP}" in listed.stdout
    assert "⚠" not in listed.stdout
    missing = run_cli(tmp_path, env_file, "token", "revoke", f"[bold]{MARKUP}", **WIDE)
    assert missing.returncode == 2
    assert f"no token named '[bold]{MARKUP}'" in missing.stderr


def test_audit_tables_show_fields_made_of_markup_literally(tmp_path: Path) -> None:
    """Issue 8 item 11: a failed login whose reason and principal are markup (as a client can make them) appears
    verbatim in `audit failures` and `audit summary`."""
    log = tmp_path / "logs" / "audit.jsonl"
    audit = AuditLog(log, max_bytes=1 << 20, backups=1)
    audit.record("auth.failure", outcome="denied", reason=MARKUP, ip="203.0.113.9", principal=f"{MARKUP}{EMOJI}")
    audit.close()
    env_file = write_env(tmp_path, AUTH_TOKEN=admin_token(), AUDIT_LOG=str(log))
    failures = run_cli(tmp_path, env_file, "audit", "failures", **WIDE)
    assert failures.returncode == 0, failures.stderr
    assert MARKUP in failures.stdout
    assert f"{MARKUP}{EMOJI}" in failures.stdout
    summary = run_cli(tmp_path, env_file, "audit", "summary", **WIDE)
    assert f"{MARKUP}{EMOJI}" in summary.stdout
    assert "⚠" not in failures.stdout + summary.stdout


def test_doctor_shows_a_path_made_of_markup_literally(tmp_path: Path) -> None:
    """Issue 8 item 11: doctor's table names the .env by its path, printed verbatim even when the directory name
    is markup (opening tags only: a path cannot hold the `/` of a closing one)."""
    home = tmp_path / "cfg[bold]x[red]"
    home.mkdir()
    env_file = home / ".env"
    env_file.write_text(f"AUTH_TOKEN={admin_token()}\nSTORE_URL=memory://\n", encoding="utf-8")
    env_file.chmod(0o600)
    done = run_cli(home, env_file, "doctor", **WIDE)
    assert "Traceback" not in done.stderr
    assert f"{env_file} is private" in done.stdout
