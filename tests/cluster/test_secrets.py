"""Cluster mode's secrets (CLUSTER_SECRET, the REDIS_URL and STORE_URL passwords) never reach a log line or a repr."""

from pathlib import Path

from mcp_bastion.app import create_app
from mcp_bastion.cluster.settings import cluster_settings
from mcp_bastion.config import Settings

CLUSTER_SECRET = "cs-" + "q" * 40
REDIS_PASSWORD = "redis-pw-" + "z" * 12
STORE_PASSWORD = "store-pw-" + "y" * 12


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=39999,
        log_dir=tmp_path / "logs",
        audit_log=tmp_path / "logs" / "audit.jsonl",
        auth_token="a" * 40,
        redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
        store_url=f"redis://user:{STORE_PASSWORD}@127.0.0.1:1/1",
        cluster_secret=CLUSTER_SECRET,
    )


def test_the_cluster_secrets_are_masked_in_the_audit_log(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    app = create_app(settings, {})
    for secret in (CLUSTER_SECRET, REDIS_PASSWORD, STORE_PASSWORD):
        app.audit.record("test.leak", outcome="error", reason=f"dependency said {secret} somewhere")
    app.audit.close()
    text = "".join(path.read_text() for path in (tmp_path / "logs").glob("*.jsonl"))
    assert text.count("dependency said **** somewhere") == 3, text
    for secret in (CLUSTER_SECRET, REDIS_PASSWORD, STORE_PASSWORD):
        assert secret not in text


def test_cluster_settings_never_show_their_secrets(tmp_path: Path) -> None:
    config = cluster_settings(_settings(tmp_path))
    assert config is not None
    for shown in (repr(config), str(config), f"{config}"):
        assert CLUSTER_SECRET not in shown
        assert REDIS_PASSWORD not in shown
    assert config.secret.get_secret_value() == CLUSTER_SECRET
