"""scripts/install-link puts `mcp-bastion` on PATH through ~/.local/bin, in a temp HOME (issue 10 item 3)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-link"
CLI = Path(sys.executable).parent / "mcp-bastion"


def install_link(home: Path, *, on_path: bool, **extra: str) -> subprocess.CompletedProcess[str]:
    path = f"{home / '.local' / 'bin'}:/usr/bin:/bin" if on_path else "/usr/bin:/bin"
    env = {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8", **extra}
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False)


def test_it_links_the_venv_command_and_then_stays_quiet(tmp_path: Path) -> None:
    first = install_link(tmp_path, on_path=True)
    assert first.returncode == 0, first.stderr
    link = tmp_path / ".local" / "bin" / "mcp-bastion"
    assert link.is_symlink()
    assert link.resolve() == CLI.resolve()
    assert "not on your PATH" not in first.stderr
    again = install_link(tmp_path, on_path=True)
    assert again.returncode == 0
    assert again.stderr == ""


def test_without_local_bin_on_path_it_prints_the_line_to_add_and_edits_no_shell_file(tmp_path: Path) -> None:
    done = install_link(tmp_path, on_path=False)
    assert done.returncode == 0, done.stderr
    assert 'export PATH="$HOME/.local/bin:$PATH"' in done.stderr
    assert (tmp_path / ".local" / "bin" / "mcp-bastion").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".local"], "no .profile, .bashrc or anything else written"


def test_a_file_or_another_checkouts_working_link_is_left_alone(tmp_path: Path) -> None:
    bin_dir = tmp_path / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    link = bin_dir / "mcp-bastion"
    link.symlink_to("/bin/true")
    done = install_link(tmp_path, on_path=True)
    assert done.returncode == 0
    assert os.readlink(link) == "/bin/true"
    assert "leaving it" in done.stderr
    link.unlink()
    link.write_text("#!/bin/sh\n")
    assert install_link(tmp_path, on_path=True).returncode == 0
    assert not link.is_symlink()


def test_a_link_to_a_checkout_that_is_gone_is_replaced(tmp_path: Path) -> None:
    bin_dir = tmp_path / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "mcp-bastion").symlink_to(tmp_path / "gone" / ".venv" / "bin" / "mcp-bastion")
    assert install_link(tmp_path, on_path=True).returncode == 0
    assert (bin_dir / "mcp-bastion").resolve() == CLI.resolve()


def test_bastion_skip_link_skips_it(tmp_path: Path) -> None:
    assert install_link(tmp_path, on_path=True, BASTION_SKIP_LINK="1").returncode == 0
    assert not (tmp_path / ".local").exists()
