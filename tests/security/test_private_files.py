"""Issue 8 item 12: every file the gateway creates is its owner's only (0600, directories 0700), written through
one helper (`mcp_bastion.files`) that writes whole files atomically and never follows a symlink.

The end-to-end tests run the real CLI (`demo` writes the .env, `serve` the logs and the store) under a permissive
umask, so a mode that depends on the umask would show.
"""

import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values

from mcp_bastion.files import UnsafeFile, open_append, write_private
from tests.harness import FIXTURES, free_port, serve_process, wait_until
from tests.security.support import CLI, CLI_TIMEOUT_S, bearer, clean_env, modern_call

PERMISSIVE_UMASK = 0o002  # group-writable, world-readable: what a careless shell or service manager hands us
# A child that writes to stderr as it starts, then serves as the toolbox fixture does.
NOISY = [
    sys.executable,
    "-c",
    "import runpy, sys; sys.stderr.write('noisy: starting\\n'); sys.stderr.flush(); "
    f"runpy.run_path({str(FIXTURES / 'toolbox.py')!r}, run_name='__main__')",
]
WAIT_S = 20.0


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process umask (inherited by the CLI subprocesses started inside) for the duration."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def install(tmp_path: Path) -> Path:
    """A directory set up by the real `mcp-bastion demo` (.env and mcp.json), serving the noisy child."""
    home = tmp_path / "install"
    home.mkdir()
    done = subprocess.run(
        [str(CLI), "demo", "--config", "mcp.json", "--env-file", ".env"],
        cwd=home,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    servers = {"mcpServers": {"noisy": {"command": NOISY[0], "args": NOISY[1:]}}}
    (home / "servers.json").write_text(json.dumps(servers), encoding="utf-8")
    return home


@contextlib.contextmanager
def serving(home: Path, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """The real `serve` in `home` (logs/ and data/ default there); yields (url, admin token, its output file)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(CLI), "serve", "--env-file", ".env", "--config", "servers.json", "--port", str(port)]
    output = tmp_path / "serve.out"

    def live() -> bool:
        return httpx.get(f"{url}/livez", timeout=1).status_code == 200

    with serve_process(argv, cwd=home, env=clean_env(tmp_path), log=output, ready=live):
        yield url, str(dotenv_values(home / ".env")["AUTH_TOKEN"]), output


def exercise(url: str, token: str) -> None:
    """Requests that make the gateway write: security lines (a refused request, a login), a store row (the login)
    and a call line (a tool call: the calls file, Issue 9 item 8)."""
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{url}/health").status_code == 401
        assert client.post(f"{url}/auth/login", json={"token": token}).status_code == 200
        assert client.get(f"{url}/health", headers=bearer(token)).status_code == 200
        call = modern_call(client, f"{url}/mcp/noisy", token, "tools/call", {"name": "echo", "arguments": {}})
        assert call.status_code == 200, call.text


def test_every_file_a_running_gateway_creates_is_0600_and_every_directory_0700(tmp_path: Path) -> None:
    """Issue 8 item 12: under umask 002, the .env and mcp.json `demo` writes, the audit log, the per-server stderr
    log, the SQLite store and its -wal/-shm files are 0600; logs/, logs/servers/ and data/ are 0700."""
    with umask(PERMISSIVE_UMASK):
        home = install(tmp_path)
        with serving(home, tmp_path) as (url, token, _):
            stderr_log = home / "logs" / "servers" / "noisy.log"
            wait_until(lambda: stderr_log.exists() and b"noisy: starting" in stderr_log.read_bytes(), WAIT_S)
            exercise(url, token)
            wait_until(
                lambda: all((home / "logs" / name).exists() for name in ("audit.jsonl", "security.jsonl")), WAIT_S
            )
            created = sorted(p for root in ("logs", "data") for p in (home / root).rglob("*"))
            modes = {str(p.relative_to(home)): mode(p) for p in [home / "logs", home / "data", *created]}
    expected = {
        "logs/audit.jsonl",
        "logs/security.jsonl",
        "logs/servers/noisy.log",
        "data/bastion.db",
        "data/bastion.db-wal",
    }
    assert expected <= set(modes), modes
    for name, bits in modes.items():
        wanted = 0o700 if (home / name).is_dir() else 0o600
        assert bits == wanted, f"{name} is {bits:04o}, expected {wanted:04o}"
    assert mode(home / ".env") == 0o600
    assert mode(home / "mcp.json") == 0o600


def test_a_stderr_log_or_audit_log_wider_than_0600_is_narrowed(tmp_path: Path) -> None:
    """Issue 8 item 12: log files left 0644 by an older version are 0600 once the gateway writes to them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    old = logs / "old.log"
    old.write_text("before\n")
    old.chmod(0o644)
    fd = open_append(old)
    try:
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert mode(old) == 0o600
    assert old.read_text() == "before\nafter\n"


def test_symlinks_planted_where_the_logs_go_are_refused_and_their_targets_untouched(tmp_path: Path) -> None:
    """Issue 8 item 12: with symlinks at logs/audit.jsonl, logs/security.jsonl (Issue 9 item 8) and
    logs/servers/noisy.log, the gateway still serves, says which path it refused and why, and writes nothing into
    the files the links point to."""
    home = install(tmp_path)
    (home / "logs" / "servers").mkdir(parents=True)
    victims = {
        home / "logs" / "audit.jsonl": tmp_path / "victim-audit",
        home / "logs" / "security.jsonl": tmp_path / "victim-security",
        home / "logs" / "servers" / "noisy.log": tmp_path / "victim-stderr",
    }
    for link, target in victims.items():
        target.write_text("untouched\n")
        target.chmod(0o644)
        link.symlink_to(target)
    with serving(home, tmp_path) as (url, token, output):
        exercise(url, token)

        def refused_both() -> bool:
            text = output.read_text(errors="replace")
            named = all(str(link.relative_to(home)) in text for link in victims)  # LOG_DIR, AUDIT_LOG are relative
            return named and "symlink" in text

        wait_until(refused_both, WAIT_S)
    for link, target in victims.items():
        assert link.is_symlink()
        assert target.read_text() == "untouched\n"
        assert mode(target) == 0o644


def test_demo_refuses_a_symlink_planted_where_the_env_goes(tmp_path: Path) -> None:
    """Issue 8 item 12: `demo` with a dangling symlink at .env exits 2 naming the path; nothing is created at the
    link's target."""
    home = tmp_path / "install"
    home.mkdir()
    target = tmp_path / "stolen.env"
    (home / ".env").symlink_to(target)
    done = subprocess.run(
        [str(CLI), "demo", "--config", "mcp.json", "--env-file", ".env"],
        cwd=home,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert ".env" in done.stderr
    assert "symlink" in done.stderr
    assert not target.exists()


def test_write_private_refuses_a_symlink_and_leaves_the_target_untouched(tmp_path: Path) -> None:
    """Issue 8 item 12: the one helper refuses a link (dangling or not) by name; neither target is created or
    changed, and no temporary file is left behind."""
    existing = tmp_path / "existing"
    existing.write_bytes(b"keep")
    for name, target in (("to-existing", existing), ("dangling", tmp_path / "nowhere")):
        link = tmp_path / name
        link.symlink_to(target)
        with pytest.raises(UnsafeFile, match="symlink") as caught:
            write_private(link, b"secret")
        assert str(link) in str(caught.value)
    assert existing.read_bytes() == b"keep"
    assert not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "existing", "to-existing"]


def test_write_private_creates_missing_directories_0700_and_the_file_0600(tmp_path: Path) -> None:
    """Issue 8 item 12: whatever the umask, new directories are 0700 and the file 0600."""
    path = tmp_path / "a" / "b" / "key.pem"
    with umask(0):
        write_private(path, "PEM")
    assert path.read_text() == "PEM"
    assert (mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(path)) == (0o700, 0o700, 0o600)


ROUNDS = 200
SIZE = 256 * 1024


def test_a_reader_never_sees_a_partial_file_while_it_is_rewritten(tmp_path: Path) -> None:
    """Issue 8 item 12: rewritten 200 times with 256 KiB of A or of B, the file read concurrently is always all A
    or all B, never a mix, a prefix or empty."""
    path = tmp_path / "state"
    versions = (b"A" * SIZE, b"B" * SIZE)
    write_private(path, versions[0])
    seen: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(ROUNDS):
            write_private(path, versions[round_ % 2])
    finally:
        done.set()
        reader.join(WAIT_S)
    assert seen, "the reader never ran"
    assert {content[:1] for content in seen} <= {b"A", b"B"}
    assert all(content in versions for content in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


FAILING_WRITE = """
import resource, signal, sys
from pathlib import Path
from mcp_bastion.files import write_private
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_private(Path(sys.argv[1]), b"new" * 100_000)
except OSError as exc:
    print(type(exc).__name__, exc.errno)
else:
    print("written")
"""


def test_a_write_that_fails_halfway_leaves_the_old_file_whole_and_no_temporary_file(tmp_path: Path) -> None:
    """Issue 8 item 12: a write cut short (the file-size limit hit after 4 KiB of 300 KB) raises, keeps the previous
    content byte for byte, and leaves no temporary file next to it."""
    path = tmp_path / ".env"
    path.write_bytes(b"AUTH_TOKEN=old\n")
    done = subprocess.run(
        [sys.executable, "-c", FAILING_WRITE, str(path)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "OSError", done.stdout
    assert path.read_bytes() == b"AUTH_TOKEN=old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]
