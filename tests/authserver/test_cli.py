"""The CLI on the store and key file a running gateway uses (Issue 14): `oauth rotate-key` (the old key stays
published, its tokens keep working, new tokens use the new key), grants in `token list`, and `token revoke
oauth:<client name>` ending them at once."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import Result
from typer.testing import CliRunner

from mcp_bastion.cli import cli
from tests.authserver.support import Browser, Builtin, builtin_gateway, issue_tokens
from tests.harness import wait_until
from tests.security.support import audit_events, modern_call


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Builtin, Path]]:
    settings = {
        "store_url": f"sqlite://{tmp_path / 'data' / 'bastion.db'}",
        "oauth_signing_key_file": tmp_path / "data" / "oauth-keys.json",
    }
    with builtin_gateway(tmp_path, **settings) as running:
        env_file = tmp_path / ".env"
        lines = [
            f"STORE_URL={settings['store_url']}",
            f"OAUTH_SIGNING_KEY_FILE={settings['oauth_signing_key_file']}",
            f"PUBLIC_URL={running.url}",
            "AUTHORIZATION_SERVER=builtin",
            f"AUDIT_LOG={tmp_path / 'logs' / 'audit.jsonl'}",
            f"SECURITY_LOG={tmp_path / 'logs' / 'audit.jsonl'}",
        ]
        env_file.write_text("\n".join(lines) + "\n")
        yield running, env_file


@pytest.fixture
def browser(env: tuple[Builtin, Path]) -> Iterator[Browser]:
    opened = Browser(env[0])
    try:
        yield opened
    finally:
        opened.close()


def invoke(env_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--env-file", str(env_file)], env={"COLUMNS": "200"}, catch_exceptions=False)


def as_json(env_file: Path, *args: str) -> Any:
    result = invoke(env_file, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def status_of(gw: Builtin, token: str) -> int:
    with httpx.Client(timeout=10) as client:
        return modern_call(client, gw.gw.mcp("toolbox"), token, "tools/list").status_code


def kids(gw: Builtin) -> list[str]:
    return [k["kid"] for k in httpx.get(f"{gw.url}/oauth/jwks", timeout=10).json()["keys"]]


def test_rotate_key_publishes_both_keys_and_signs_new_tokens_with_the_new_one(
    env: tuple[Builtin, Path], browser: Browser
) -> None:
    """Issue 14 item 6: rotate key publishes both keys and signs new tokens with the new one."""
    gw, env_file = env
    client_id, tokens = issue_tokens(gw, browser)
    [old] = kids(gw)
    rotated = as_json(env_file, "oauth", "rotate-key")
    assert rotated["published"] == [old, rotated["kid"]]
    wait_until(lambda: kids(gw) == [old, rotated["kid"]])
    assert status_of(gw, tokens["access_token"]) == 200  # signed with the old key, still valid
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
    newer = httpx.post(f"{gw.url}/oauth/token", data=form, timeout=10).json()
    assert jwt.get_unverified_header(newer["access_token"])["kid"] == rotated["kid"]
    assert status_of(gw, newer["access_token"]) == 200
    assert audit_events(gw.logs, "oauth.key.rotated")[-1]["kid"] == rotated["kid"]


def test_token_list_shows_grants_and_token_revoke_ends_them(env: tuple[Builtin, Path], browser: Browser) -> None:
    """Issue 14 item 5: token list shows grants and token revoke ends them."""
    gw, env_file = env
    _, tokens = issue_tokens(gw, browser)
    assert status_of(gw, tokens["access_token"]) == 200
    listed = as_json(env_file, "token", "list")["tokens"]
    [row] = [r for r in listed if r["name"] == "oauth:Test Client"]
    assert row["scopes"] == ["server:toolbox"]
    assert row["last_used"] is not None
    assert row["expires"] > row["created"]
    assert tokens["access_token"] not in json.dumps(listed)
    revoked = invoke(env_file, "token", "revoke", "oauth:Test Client")
    assert revoked.exit_code == 0, revoked.output
    assert status_of(gw, tokens["access_token"]) == 401
    assert audit_events(gw.logs, "oauth.grant.revoked")[-1]["principal"] == "cli"
    again = invoke(env_file, "token", "revoke", "oauth:Test Client")
    assert again.exit_code == 2
    assert "no grant named" in again.output


def test_lockdown_revokes_every_grant(env: tuple[Builtin, Path], browser: Browser) -> None:
    """Issue 14 item 5: lockdown revokes every grant."""
    gw, env_file = env
    _, tokens = issue_tokens(gw, browser)
    with env_file.open("a") as lines:
        lines.write(f"AUTH_TOKEN={gw.admin}\n")
    result = as_json(env_file, "lockdown", "--yes", "--url", gw.url)
    assert result["oauth_grants_revoked"] == 1
    steps = {step["name"]: step for step in result["steps"]}
    assert steps["OAuth grants revoked"] == {
        "name": "OAuth grants revoked",
        "status": "done",
        "detail": "1",
        "hint": "",
    }
    assert status_of(gw, tokens["access_token"]) == 401
    assert audit_events(gw.logs, "admin.lockdown")[-1]["oauth_grants_revoked"] == 1
