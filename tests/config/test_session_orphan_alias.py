"""SESSION_ORPHAN_TIMEOUT_S, the name issue 9 item 7 uses, is read as SESSION_IDLE_NO_STREAM_S."""

from pathlib import Path

import pytest

from mcp_bastion.config import load_settings
from mcp_bastion.errors import ConfigError


def test_session_orphan_timeout_s_from_the_environment_sets_the_stream_less_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 9 item 7: the alias works from the environment, and the default is a few minutes."""
    monkeypatch.delenv("SESSION_IDLE_NO_STREAM_S", raising=False)
    monkeypatch.delenv("SESSION_ORPHAN_TIMEOUT_S", raising=False)
    assert load_settings(None).session_idle_no_stream_s == 300.0
    monkeypatch.setenv("SESSION_ORPHAN_TIMEOUT_S", "42")
    assert load_settings(None).session_idle_no_stream_s == 42.0


def test_session_orphan_timeout_s_in_the_env_file_is_read_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9 item 7: the alias works in `.env` too, and a bad value is refused naming the setting."""
    monkeypatch.delenv("SESSION_IDLE_NO_STREAM_S", raising=False)
    monkeypatch.delenv("SESSION_ORPHAN_TIMEOUT_S", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("SESSION_ORPHAN_TIMEOUT_S=90\n")
    assert load_settings(env_file).session_idle_no_stream_s == 90.0
    env_file.write_text("SESSION_ORPHAN_TIMEOUT_S=0\n")
    with pytest.raises(ConfigError, match="SESSION_"):
        load_settings(env_file)
