"""Settings precedence, pinned: CLI flag > environment > `.env` > default (PORT from all four sources)."""

from pathlib import Path

import pytest

from mcp_bastion.config import Settings, load_settings
from mcp_bastion.errors import ConfigError

DEFAULT_PORT = Settings.model_fields["port"].default


@pytest.fixture
def dotenv(tmp_path: Path) -> Path:
    return tmp_path / ".env"


@pytest.fixture(autouse=True)
def no_port_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("port", raising=False)


def test_the_flag_wins_over_environment_dotenv_and_default(dotenv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv.write_text("PORT=4003\n")
    monkeypatch.setenv("PORT", "4002")
    assert load_settings(dotenv, port=4001).port == 4001


def test_the_environment_wins_over_dotenv_and_default(dotenv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv.write_text("PORT=4003\n")
    monkeypatch.setenv("PORT", "4002")
    assert load_settings(dotenv, port=None).port == 4002


def test_dotenv_wins_over_the_default(dotenv: Path) -> None:
    dotenv.write_text("PORT=4003\n")
    assert load_settings(dotenv, port=None).port == 4003


def test_the_default_applies_when_no_source_sets_it(dotenv: Path) -> None:
    assert DEFAULT_PORT == 3001
    assert load_settings(dotenv, port=None).port == 3001
    assert load_settings(None).port == 3001


def test_a_missing_dotenv_file_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "4002")
    assert load_settings(tmp_path / "absent.env").port == 4002


def test_a_bad_value_names_the_setting(dotenv: Path) -> None:
    dotenv.write_text("PORT=not-a-port\n")
    with pytest.raises(ConfigError, match=r"^setting PORT: "):
        load_settings(dotenv)
