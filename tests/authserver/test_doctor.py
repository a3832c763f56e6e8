"""`doctor` with AUTHORIZATION_SERVER=builtin (Issue 14): the signing key file and PUBLIC_URL."""

import os
from pathlib import Path

from mcp_bastion.authserver.keys import SigningKeys
from mcp_bastion.cli.authserver import check_authserver
from mcp_bastion.config import load_settings

PUBLIC = "https://mcp.example.test"


def checks(tmp_path: Path, public_url: str = PUBLIC) -> dict[str, tuple[str, str]]:
    settings = load_settings(
        None,
        public_url=public_url,
        authorization_server="builtin",
        oauth_signing_key_file=tmp_path / "data" / "keys.json",
    )
    return {name: (status, detail) for name, status, detail, _ in check_authserver(settings)}


def test_a_missing_key_file_is_made_at_start_and_a_present_one_is_read(tmp_path: Path) -> None:
    assert checks(tmp_path) == {
        "oauth signing keys": ("PASS", f"{tmp_path / 'data' / 'keys.json'} is created at first start")
    }
    keys = SigningKeys(tmp_path / "data" / "keys.json", token_ttl_s=60)
    keys.ensure()
    assert checks(tmp_path)["oauth signing keys"] == ("PASS", f"signing with {keys.active().kid}; 1 key(s) published")


def test_a_wide_or_damaged_key_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys.json"
    SigningKeys(path, token_ttl_s=60).ensure()
    os.chmod(path, 0o644)
    assert checks(tmp_path)["oauth signing keys"][0] == "WARN"
    path.write_text("{}")
    status, detail = checks(tmp_path)["oauth signing keys"]
    assert status == "FAIL"
    assert "cannot read the OAuth signing keys" in detail


def test_plain_http_public_url_is_a_warning_and_off_is_silent(tmp_path: Path) -> None:
    assert checks(tmp_path, "http://127.0.0.1:3001")["oauth public url"][0] == "WARN"
    assert check_authserver(load_settings(None)) == []
