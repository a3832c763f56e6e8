"""The default store: one SQLite file shared by the server and every CLI command (`sqlite:///path`).

Uses the standard library's sqlite3 synchronously on purpose: a primary-key lookup in a local file takes
microseconds, less than a thread hop through aiosqlite would, and every request looks its token up afresh so
that a revocation by the CLI takes effect on the very next request.
"""

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from mcp_bastion.files import ensure_private
from mcp_bastion.store.base import DuplicateName, LoginSession, Record, StoreError, TokenRecord, require_valid_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL,
    created REAL NOT NULL, expires REAL, last_used REAL);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY, principal TEXT NOT NULL, scopes TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL, client_ip TEXT NOT NULL, csrf_hash TEXT NOT NULL, extra TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (token_hash TEXT PRIMARY KEY, revoked REAL NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires REAL, PRIMARY KEY (kind, key));
"""
BUSY_TIMEOUT_S = 5.0  # the CLI and the server may write at the same moment
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")  # files SQLite keeps next to the database, holding its data too


def sidecars(path: Path) -> list[Path]:
    """The files SQLite may create next to the database at `path`."""
    return [path.with_name(path.name + suffix) for suffix in SIDECAR_SUFFIXES]


class SqliteStore:
    """Tokens and sessions in one SQLite file (created 0600, WAL mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            ensure_private(path)  # SQLite then creates -wal/-shm with this file's mode
            for sidecar in sidecars(path):
                if os.path.lexists(sidecar):
                    ensure_private(sidecar)  # left by an older version, maybe wider, maybe a planted link
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store at {path}: {exc}") from exc

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.IntegrityError as exc:
            raise DuplicateName("that name is taken") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"store query failed: {exc}") from exc

    async def create_token(self, record: TokenRecord) -> None:
        """Add a token."""
        require_valid_name(record.name)
        self._run(
            "INSERT INTO tokens VALUES (?,?,?,?,?,?)",
            (record.token_hash, record.name, json.dumps(record.scopes), record.created, record.expires, None),
        )

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """Find by hash."""
        rows = self._run("SELECT * FROM tokens WHERE token_hash = ?", (token_hash,))
        return _token(rows[0]) if rows else None

    async def list_tokens(self) -> list[TokenRecord]:
        """All tokens by name."""
        return [_token(row) for row in self._run("SELECT * FROM tokens ORDER BY name")]

    async def revoke_token(self, name: str) -> bool:
        """Delete by name."""
        return bool(self._run("DELETE FROM tokens WHERE name = ? RETURNING name", (name,)))

    async def revoke_all_tokens(self) -> int:
        """Delete all."""
        return len(self._run("DELETE FROM tokens RETURNING name"))

    async def touch_token(self, name: str, when: float) -> None:
        """Record a use."""
        self._run("UPDATE tokens SET last_used = ? WHERE name = ?", (when, name))

    async def create_session(self, session: LoginSession) -> None:
        """Add a session."""
        self._run(
            "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?)",
            (
                session.id_hash,
                session.principal,
                json.dumps(session.scopes),
                session.created,
                session.expires,
                session.client_ip,
                session.csrf_hash,
                json.dumps(session.extra),
            ),
        )

    async def session_by_hash(self, id_hash: str) -> LoginSession | None:
        """Find a session."""
        rows = self._run("SELECT * FROM sessions WHERE id_hash = ?", (id_hash,))
        return _session(rows[0]) if rows else None

    async def delete_session(self, id_hash: str) -> bool:
        """End a session."""
        return bool(self._run("DELETE FROM sessions WHERE id_hash = ? RETURNING id_hash", (id_hash,)))

    async def list_sessions(self) -> list[LoginSession]:
        """All sessions, oldest first."""
        return [_session(row) for row in self._run("SELECT * FROM sessions ORDER BY created")]

    async def delete_all_sessions(self) -> int:
        """End all."""
        return len(self._run("DELETE FROM sessions RETURNING id_hash"))

    async def revoke_hash(self, token_hash: str) -> None:
        """Record a revoked hash (the first revocation time is kept)."""
        self._run("INSERT OR IGNORE INTO revoked VALUES (?,?)", (token_hash, time.time()))

    async def is_revoked(self, token_hash: str) -> bool:
        """Whether the hash was revoked."""
        return bool(self._run("SELECT 1 FROM revoked WHERE token_hash = ?", (token_hash,)))

    async def close(self) -> None:
        """Close the file."""
        self._db.close()

    async def put_record(
        self, kind: str, key: str, value: Record, expires: float | None, *, only_new: bool = False
    ) -> bool:
        """Keep a record; `only_new` replaces only an expired one, in one statement (atomic across processes)."""
        args = (kind, key, json.dumps(value), expires)
        if not only_new:
            self._run("INSERT OR REPLACE INTO records VALUES (?,?,?,?)", args)
            return True
        written = self._run(
            "INSERT INTO records VALUES (?,?,?,?) ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, "
            "expires = excluded.expires WHERE records.expires IS NOT NULL AND records.expires <= ? RETURNING 1",
            (*args, time.time()),
        )
        return bool(written)

    async def get_record(self, kind: str, key: str) -> Record | None:
        """The unexpired record."""
        rows = self._run(
            "SELECT value FROM records WHERE kind = ? AND key = ? AND (expires IS NULL OR expires > ?)",
            (kind, key, time.time()),
        )
        return _record(rows[0][0]) if rows else None

    async def delete_record(self, kind: str, key: str) -> bool:
        """Forget a record."""
        return bool(self._run("DELETE FROM records WHERE kind = ? AND key = ? RETURNING 1", (kind, key)))

    async def list_records(self, kind: str) -> list[Record]:
        """Unexpired records of a kind (the expired ones of that kind are dropped on the way)."""
        now = time.time()
        self._run("DELETE FROM records WHERE kind = ? AND expires IS NOT NULL AND expires <= ?", (kind, now))
        return [_record(row[0]) for row in self._run("SELECT value FROM records WHERE kind = ?", (kind,))]


def _token(row: tuple[Any, ...]) -> TokenRecord:
    token_hash, name, scopes, created, expires, last_used = row
    return TokenRecord(name, token_hash, tuple(json.loads(scopes)), created, expires, last_used)


def _session(row: tuple[Any, ...]) -> LoginSession:
    id_hash, principal, scopes, created, expires, client_ip, csrf_hash, extra = row
    return LoginSession(
        id_hash, principal, tuple(json.loads(scopes)), created, expires, client_ip, csrf_hash, json.loads(extra)
    )


def _record(raw: str) -> Record:
    value: Record = json.loads(raw)
    return value
