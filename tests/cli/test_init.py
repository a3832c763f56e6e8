"""`mcp-bastion init`: the interactive path in a real terminal, the scripted path, refusals, and a server that starts.

Every run is the installed console script in a subprocess, with no gateway setting inherited from this process.
"""

import datetime
import ipaddress
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest
import trustme
from cryptography import x509
from dotenv import dotenv_values

from mcp_bastion.cli.setup import addresses_from_ip_json, find_secrets, looks_secret, render_env
from mcp_bastion.config import Settings
from tests.harness import default_sigint, free_port, serve_process

CLI = Path(sys.executable).with_name("mcp-bastion")
RUN_TIMEOUT_S = 30.0
TOKEN = re.compile(r"mcpb_[A-Za-z0-9_-]{40,}")
DEMO = {"command": sys.executable, "args": ["-m", "mcp_bastion.demo_server"]}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without gateway settings, with plain wide output so prompts are matched whole."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in settings}
    env.pop("MY_API_KEY", None)
    return {**env, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", **extra}


def init(directory: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "init", "--dir", str(directory), "--non-interactive", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        stdin=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_config(directory: Path, env: dict[str, str]) -> Path:
    path = directory / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"demo": {**DEMO, "env": env}}}, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def issued(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key from a throwaway CA, for `--tls files`."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "given.pem", tmp_path / "given.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


def test_interactive_init_asks_everything_and_stores_the_typed_api_key_in_env_only(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"API_KEY": "${MY_API_KEY}"})
    before = config.read_text(encoding="utf-8")
    typed_secret = "sk-typed-in-the-terminal-0123456789"
    child = pexpect.spawn(
        str(CLI),
        ["init", "--dir", str(tmp_path)],
        env=clean_env(),
        encoding="utf-8",
        timeout=RUN_TIMEOUT_S,
        dimensions=(50, 250),
    )
    try:
        child.expect("Addresses of this machine")
        child.expect(r"Bind address \(HOST\)")
        child.sendline("127.0.0.1")
        child.expect(r"Port \(PORT\)")
        child.sendline("3999")
        child.expect(r"Allowed client IPs \(ALLOWED_IPS\)")
        child.sendline("not-an-address")
        child.expect("is not an IP address or CIDR range")
        child.expect(r"Allowed client IPs \(ALLOWED_IPS\)")
        child.sendline("127.0.0.1,10.0.0.0/8")
        child.expect(r"ALLOWED_ORIGINS")
        child.sendline("https://app.example.com")
        child.expect(r"RATE_LIMIT_WINDOW_MS")
        child.sendline("60000")
        child.expect(r"RATE_LIMIT_MAX_REQUESTS")
        child.sendline("50")
        child.expect(r"TLS \(none, self-signed, files\)")
        child.sendline("self-signed")
        child.expect(r"Secret for server demo, API_KEY → \$\{MY_API_KEY\}")
        child.sendline(typed_secret)
        child.expect("Copy it now")
        child.expect(TOKEN)
        printed_token = child.after
        child.expect(pexpect.EOF)
        transcript = str(child.before)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, transcript
    assert typed_secret not in transcript  # hidden input: never echoed, never printed

    env_file = tmp_path / ".env"
    values = dotenv_values(env_file)
    assert mode(env_file) == 0o600
    assert mode(tmp_path / "tls" / "bastion.key") == 0o600
    assert values["AUTH_TOKEN"] == printed_token
    assert len(values["AUTH_TOKEN"] or "") >= 32
    assert len(values["SESSION_SECRET"] or "") >= 32
    assert values["SESSION_SECRET"] != values["AUTH_TOKEN"]
    assert values["ALLOWED_IPS"] == "127.0.0.1,10.0.0.0/8"
    assert values["ALLOWED_ORIGINS"] == "https://app.example.com"
    assert values["PORT"] == "3999"
    assert values["RATE_LIMIT_WINDOW_MS"] == "60000"
    assert values["RATE_LIMIT_MAX_REQUESTS"] == "50"
    assert values["MY_API_KEY"] == typed_secret
    assert values["TLS_CERT_FILE"] == str(tmp_path.resolve() / "tls" / "bastion.crt")
    assert config.read_text(encoding="utf-8") == before  # still `${MY_API_KEY}`, never the value


def test_interactive_init_declining_to_replace_env_writes_nothing(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("AUTH_TOKEN=keep-me\n", encoding="utf-8")
    child = pexpect.spawn(
        str(CLI),
        ["init", "--dir", str(tmp_path)],
        env=clean_env(),
        encoding="utf-8",
        timeout=RUN_TIMEOUT_S,
        dimensions=(50, 250),
    )
    try:
        child.expect(r"\.env exists\.\s+Replace it")
        child.sendline("n")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 2
    assert env_file.read_text(encoding="utf-8") == "AUTH_TOKEN=keep-me\n"
    assert not (tmp_path / "mcp.json").exists()


def test_interactive_init_interrupted_at_a_prompt_writes_nothing(tmp_path: Path) -> None:
    child = pexpect.spawn(
        str(CLI),
        ["init", "--dir", str(tmp_path)],
        env=clean_env(),
        encoding="utf-8",
        timeout=RUN_TIMEOUT_S,
        dimensions=(50, 250),
        preexec_fn=default_sigint,  # the test sends Ctrl-C; the suite may run with SIGINT ignored
    )
    try:
        child.expect(r"Bind address \(HOST\)")
        child.sendline("127.0.0.1")
        child.expect(r"Port \(PORT\)")
        child.sendintr()
        child.expect("interrupted")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 2
    assert list(tmp_path.iterdir()) == []


def test_init_without_a_terminal_or_non_interactive_refuses(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CLI), "init", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 2
    assert "--non-interactive" in done.stderr
    assert not (tmp_path / ".env").exists()


@pytest.mark.parametrize("tls", ["none", "self-signed", "files"])
def test_scripted_init_prints_json_with_the_token_and_writes_every_file(
    tmp_path: Path, tls: str, issued: tuple[Path, Path]
) -> None:
    workdir = tmp_path / "gw"
    workdir.mkdir()
    extra = ["--tls-cert", str(issued[0]), "--tls-key", str(issued[1])] if tls == "files" else []
    done = init(workdir, "--json", "--port", "4011", "--allowed-ips", "127.0.0.1,192.168.1.0/24", "--tls", tls, *extra)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    values = dotenv_values(workdir / ".env")
    assert result["token"] == values["AUTH_TOKEN"]
    assert len(result["token"]) >= 32
    assert result["env_file"] == str(workdir.resolve() / ".env")
    assert values["ALLOWED_IPS"] == "127.0.0.1,192.168.1.0/24"
    assert values["PORT"] == "4011"
    assert mode(workdir / ".env") == 0o600
    demo = json.loads((workdir / "mcp.json").read_text(encoding="utf-8"))["mcpServers"]["demo"]
    assert demo["args"] == ["-m", "mcp_bastion.demo_server"]
    assert Path(demo["command"]).resolve() == Path(sys.executable).resolve()
    if tls == "none":
        assert "TLS_CERT_FILE" not in values
        assert result["url"] == "http://127.0.0.1:4011"
        return
    assert result["url"] == "https://127.0.0.1:4011"
    assert values["TLS_CERT_FILE"] == result["tls_cert"]
    assert values["TLS_KEY_FILE"] == result["tls_key"]
    if tls == "files":
        assert result["tls_cert"] == str(issued[0].resolve())
        return
    key = Path(result["tls_key"])
    assert mode(key) == 0o600
    cert = x509.load_pem_x509_certificate(Path(result["tls_cert"]).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    assert b"PRIVATE KEY" not in Path(result["tls_cert"]).read_bytes()


def test_scripted_init_without_json_prints_the_token_once_with_a_copy_it_now_line(tmp_path: Path) -> None:
    done = init(tmp_path)
    assert done.returncode == 0, done.stderr
    token = dotenv_values(tmp_path / ".env")["AUTH_TOKEN"]
    assert token is not None
    assert done.stdout.count(token) == 1
    assert "Copy it now" in done.stdout
    assert dotenv_values(tmp_path / ".env")["SESSION_SECRET"] not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tls", "files", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], "readable"),
        (["--tls", "files"], "--tls-cert"),
        (["--tls-cert", "/etc/hostname"], "need --tls files"),
        (["--host", "0.0.0.0", "--allowed-ips", "0.0.0.0"], "--allow-any-ip"),
        (["--allowed-ips", "10.0.0.300"], "not an IP address"),
        (["--allowed-origins", "*"], "not an origin"),
    ],
)
def test_scripted_init_refuses_a_wrong_or_dangerous_combination_with_one_line(
    tmp_path: Path, args: list[str], says: str
) -> None:
    done = init(tmp_path, *args)
    assert done.returncode == 2
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".env").exists()
    assert not (tmp_path / "mcp.json").exists()


def test_everyone_on_a_network_bind_is_written_only_with_its_confirmation_flag_and_a_warning(tmp_path: Path) -> None:
    done = init(tmp_path, "--host", "0.0.0.0", "--allowed-ips", "0.0.0.0", "--allow-any-ip", "--tls", "self-signed")
    assert done.returncode == 0, done.stderr
    assert "admits every address" in done.stderr
    assert dotenv_values(tmp_path / ".env")["ALLOWED_IPS"] == "0.0.0.0"


def test_existing_env_is_kept_without_yes_and_replaced_with_yes_keeping_unmanaged_settings(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    original = "AUTH_TOKEN=old-token-value\nLOG_LEVEL=warning\nOTHER_KEY='a b # c'\n"
    env_file.write_text(original, encoding="utf-8")
    os.chmod(env_file, 0o644)

    refused = init(tmp_path)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert env_file.read_text(encoding="utf-8") == original
    assert not (tmp_path / "mcp.json").exists()

    replaced = init(tmp_path, "--yes")
    assert replaced.returncode == 0, replaced.stderr
    values = dotenv_values(env_file)
    assert values["AUTH_TOKEN"] != "old-token-value"
    assert values["LOG_LEVEL"] == "warning"
    assert values["OTHER_KEY"] == "a b # c"
    assert mode(env_file) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_existing_self_signed_certificate_is_replaced_only_with_yes(tmp_path: Path) -> None:
    assert init(tmp_path, "--tls", "self-signed").returncode == 0
    cert = (tmp_path / "tls" / "bastion.crt").read_bytes()
    (tmp_path / ".env").unlink()
    refused = init(tmp_path, "--tls", "self-signed")
    assert refused.returncode == 2
    assert (tmp_path / "tls" / "bastion.crt").read_bytes() == cert
    assert not (tmp_path / ".env").exists()
    assert init(tmp_path, "--tls", "self-signed", "--yes").returncode == 0
    assert (tmp_path / "tls" / "bastion.crt").read_bytes() != cert


def test_literal_secret_in_mcp_json_moves_to_env_only_with_yes(tmp_path: Path) -> None:
    literal = "ghp_0123456789abcdefghijklmnopqrstuvwxyz"
    config = write_config(tmp_path, {"GITHUB_TOKEN": literal, "DEBUG": "true"})
    before = config.read_text(encoding="utf-8")

    refused = init(tmp_path)
    assert refused.returncode == 2
    assert config.read_text(encoding="utf-8") == before
    assert not (tmp_path / ".env").exists()

    done = init(tmp_path, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert literal not in done.stdout + done.stderr
    assert dotenv_values(tmp_path / ".env")["GITHUB_TOKEN"] == literal
    env = json.loads(config.read_text(encoding="utf-8"))["mcpServers"]["demo"]["env"]
    assert env == {"GITHUB_TOKEN": "${GITHUB_TOKEN}", "DEBUG": "true"}
    assert json.loads(done.stdout)["stored_secrets"] == ["GITHUB_TOKEN"]


def test_scripted_init_takes_a_missing_reference_from_the_environment_or_reports_it(tmp_path: Path) -> None:
    write_config(tmp_path, {"API_KEY": "${MY_API_KEY}"})
    missing = init(tmp_path, "--json")
    assert missing.returncode == 0, missing.stderr
    assert json.loads(missing.stdout)["missing_secrets"] == ["MY_API_KEY"]
    assert "MY_API_KEY is not set" in missing.stderr

    given = init(tmp_path, "--json", "--yes", env=clean_env(MY_API_KEY="from-the-environment-123"))
    assert given.returncode == 0, given.stderr
    assert "from-the-environment-123" not in given.stdout + given.stderr
    assert dotenv_values(tmp_path / ".env")["MY_API_KEY"] == "from-the-environment-123"


def test_a_child_variable_named_like_a_gateway_setting_gets_its_own_name(tmp_path: Path) -> None:
    refs, _ = find_secrets({"mcpServers": {"gh": {**DEMO, "env": {"AUTH_TOKEN": "sk-child-secret"}}}}, {})
    assert [(r.var, r.literal) for r in refs] == [("GH_AUTH_TOKEN", "sk-child-secret")]
    refs, warnings = find_secrets({"mcpServers": {"gh": {**DEMO, "env": {"X": "${AUTH_TOKEN}"}}}}, {})
    assert refs == []
    assert "gateway setting" in warnings[0]


@pytest.mark.parametrize(
    ("key", "value", "secret"),
    [
        ("GITHUB_PERSONAL_ACCESS_TOKEN", "abc", True),
        ("ANYTHING", "sk-proj-123", True),
        ("DATABASE_URL", "postgres://user:pw@db/app", True),
        ("API_KEY", "${API_KEY}", False),
        ("DEBUG", "true", False),
        ("ROOT", "/srv/data/some/long/path/1234567890", False),
    ],
)
def test_secret_looking_values_are_recognised(key: str, value: str, secret: bool) -> None:
    assert looks_secret(key, value) is secret


def test_interface_addresses_come_from_ip_json_without_loopback_or_link_local() -> None:
    sample = [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1"}, {"family": "inet6", "local": "::1"}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"family": "inet", "local": "192.168.1.20"},
                {"family": "inet6", "local": "fe80::1"},
                {"family": "inet6", "local": "2001:db8::20"},
            ],
        },
    ]
    assert addresses_from_ip_json(json.dumps(sample)) == ["192.168.1.20", "2001:db8::20"]
    assert addresses_from_ip_json("not json") == []


def test_env_values_round_trip_through_dotenv_whatever_their_characters(tmp_path: Path) -> None:
    values = {"A": "plain-value_1.2", "B": 'it\'s a "quoted" #hash $HOME back\\slash {}', "C": ""}
    path = tmp_path / "x.env"
    path.write_text(render_env(values), encoding="utf-8")
    assert dotenv_values(path) == values


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Path | bool]]:
    """`init --non-interactive` then `serve` on its result (cwd the setup dir); yields (url, token, verify)."""
    port = free_port()
    done = init(tmp_path, "--json", "--port", str(port), "--tls", request.param)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    verify: Path | bool = Path(result["tls_cert"]) if result["tls_cert"] else True
    argv = [str(CLI), "serve", "--env-file", result["env_file"], "--config", result["config"], "--port", str(port)]

    def live() -> bool:
        return httpx.get(f"{result['url']}/livez", verify=str(verify) if verify is not True else True).is_success

    with serve_process(argv, cwd=tmp_path, env=clean_env(), log=tmp_path / "serve.log", ready=live):
        yield result["url"], result["token"], verify


@pytest.mark.parametrize("served", ["none", "self-signed"], indirect=True)
def test_the_server_starts_with_what_init_wrote_and_wants_its_token(served: tuple[str, str, Path | bool]) -> None:
    url, token, verify = served
    with httpx.Client(base_url=url, verify=str(verify) if verify is not True else True, timeout=5) as http:
        assert http.get("/health", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert http.get("/health").status_code == 401
        assert http.get("/health", headers={"Authorization": "Bearer mcpb_wrong"}).status_code == 401
