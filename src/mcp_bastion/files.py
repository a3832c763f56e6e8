"""Private files: everything the gateway creates is its owner's only (files 0600, directories 0700).

Two ways in, both refusing a symlink where the file goes (a planted link would redirect secrets or logs to a
place of the attacker's choosing):

- `write_private` replaces a whole file atomically: a temporary file in the same directory, fsync, rename, fsync
  of the directory. A reader (or a crash) sees the old file or the new one, never part of one.
- `open_append` opens an append-only file (logs) with O_NOFOLLOW and mode 0600, narrowing an existing file that is
  wider (one left by an older version, or a umask-dependent tool).

Refusals are `UnsafeFile`, an OSError, so the callers' existing I/O error handling reports them; the message names
the path and the fix.
"""

import errno
import os
import secrets
import stat
from pathlib import Path

FILE_MODE = 0o600  # owner read/write: logs, the store, .env, keys
DIR_MODE = 0o700  # directories the gateway creates for those files
PRIVATE_BITS = 0o077  # group and other bits: any of them set means a file is wider than FILE_MODE
TEMP_NAME_BYTES = 6  # random hex in a temporary file's name: two writers never collide
# O_NONBLOCK: opening a FIFO planted where a log goes fails at once instead of blocking the event loop.
APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A path the gateway refuses to write: a symlink, or something other than a regular file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(errno.ELOOP, f"{problem}; refusing to write through it (remove it and retry)", str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def private_dir(path: Path) -> None:
    """Create `path` and any missing parents with mode 0700; directories that exist are left as they are."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # made by a concurrent writer in between
        os.chmod(directory, DIR_MODE)  # exactly 0700 whatever the umask


def _refuse_link(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFile(path, "a symlink is in the way")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(path, "not a regular file")


def write_private(path: Path, data: bytes | str) -> None:
    """Replace `path` with `data` atomically, mode 0600 (str is written as UTF-8).

    Raises:
        UnsafeFile: `path` is a symlink or not a regular file (it is left untouched).
        OSError: the file could not be written (any previous content is then left as it was).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    private_dir(path.parent)
    _refuse_link(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(TEMP_NAME_BYTES)}.tmp")
    fd = os.open(temp, CREATE_FLAGS, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # exactly 0600 whatever the umask
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` survive a crash (best effort: some filesystems cannot)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_append(path: Path) -> int:
    """A file descriptor appending to `path`, created 0600 (an existing wider file is narrowed to 0600).

    Raises:
        UnsafeFile: `path` is a symlink or not a regular file.
        OSError: the file could not be opened.
    """
    private_dir(path.parent)
    try:
        fd = os.open(path, APPEND_FLAGS, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(path, "a symlink is in the way") from None
        if exc.errno == errno.ENXIO:
            raise UnsafeFile(path, "not a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(path, "not a regular file")
        if info.st_mode & PRIVATE_BITS:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure_private(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist; narrow it to 0600 if it does.

    Raises:
        UnsafeFile: `path` is a symlink or not a regular file.
    """
    os.close(open_append(path))
