"""`mcp-bastion oauth revoke` and `token revoke oauth:<client>` tell every running instance over Redis (review 3),
as `token revoke` does for a named token: the instances sweep at once instead of at their next REVOCATION_CHECK_S."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_bastion.cli import cli
from mcp_bastion.cluster.bus import CHANNEL
from tests.authserver.support import Browser, Builtin, builtin_gateway, issue_tokens
from tests.redis_server import client, redis_server

HEARD_WITHIN_S = 5.0  # a published message reaches a subscriber on loopback in milliseconds


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Builtin, Path, str]]:
    store_url = f"sqlite://{tmp_path / 'data' / 'bastion.db'}"
    with redis_server(tmp_path) as redis_url, builtin_gateway(tmp_path, store_url=store_url) as running:
        env_file = tmp_path / ".env"
        lines = [
            f"STORE_URL={store_url}",
            f"REDIS_URL={redis_url}",
            f"OAUTH_SIGNING_KEY_FILE={tmp_path / 'data' / 'oauth-keys.json'}",
            f"PUBLIC_URL={running.url}",
            "AUTHORIZATION_SERVER=builtin",
            f"AUDIT_LOG={tmp_path / 'logs' / 'audit.jsonl'}",
            f"SECURITY_LOG={tmp_path / 'logs' / 'audit.jsonl'}",
        ]
        env_file.write_text("\n".join(lines) + "\n")
        yield running, env_file, redis_url


@pytest.mark.parametrize("command", [["oauth", "revoke"], ["token", "revoke"]])
def test_revoking_a_grant_with_the_cli_is_announced_to_every_instance(
    env: tuple[Builtin, Path, str], command: list[str]
) -> None:
    gw, env_file, redis_url = env
    browser = Browser(gw)
    try:
        issue_tokens(gw, browser)
    finally:
        browser.close()
    with client(redis_url) as redis, redis.pubsub() as listener:
        listener.subscribe(CHANNEL)
        assert listener.get_message(timeout=HEARD_WITHIN_S)["type"] == "subscribe"
        argv = [*command, "oauth:Test Client", "--env-file", str(env_file)]
        result = CliRunner().invoke(cli, argv, env={"COLUMNS": "200"}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        heard = listener.get_message(timeout=HEARD_WITHIN_S)
    assert heard is not None, "the revocation was not announced"
    assert json.loads(heard["data"])["kind"] == "sweep"
