"""In-process store for tests and throwaway runs (`memory://`)."""

import copy
import dataclasses
import time

from mcp_bastion.store.base import DuplicateName, LoginSession, Record, TokenRecord, require_valid_name


class MemoryStore:
    """Dicts; nothing survives a restart."""

    def __init__(self) -> None:
        self.tokens: dict[str, TokenRecord] = {}
        self.sessions: dict[str, LoginSession] = {}
        self.revoked: set[str] = set()
        self.records: dict[tuple[str, str], tuple[Record, float | None]] = {}

    async def create_token(self, record: TokenRecord) -> None:
        """Add a token."""
        require_valid_name(record.name)
        if any(t.name == record.name for t in self.tokens.values()):
            raise DuplicateName(f"a token named {record.name!r} exists")
        self.tokens[record.token_hash] = record

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """Find by hash."""
        return self.tokens.get(token_hash)

    async def list_tokens(self) -> list[TokenRecord]:
        """All tokens by name."""
        return sorted(self.tokens.values(), key=lambda t: t.name)

    async def revoke_token(self, name: str) -> bool:
        """Delete by name."""
        for key, record in list(self.tokens.items()):
            if record.name == name:
                del self.tokens[key]
                return True
        return False

    async def revoke_all_tokens(self) -> int:
        """Delete all."""
        count = len(self.tokens)
        self.tokens.clear()
        return count

    async def touch_token(self, name: str, when: float) -> None:
        """Record a use."""
        for key, record in self.tokens.items():
            if record.name == name:
                self.tokens[key] = dataclasses.replace(record, last_used=when)

    async def create_session(self, session: LoginSession) -> None:
        """Add a session."""
        self.sessions[session.id_hash] = session

    async def session_by_hash(self, id_hash: str) -> LoginSession | None:
        """Find a session."""
        return self.sessions.get(id_hash)

    async def delete_session(self, id_hash: str) -> bool:
        """End a session."""
        return self.sessions.pop(id_hash, None) is not None

    async def list_sessions(self) -> list[LoginSession]:
        """All sessions, oldest first."""
        return sorted(self.sessions.values(), key=lambda s: s.created)

    async def delete_all_sessions(self) -> int:
        """End all."""
        count = len(self.sessions)
        self.sessions.clear()
        return count

    async def revoke_hash(self, token_hash: str) -> None:
        """Record a revoked hash."""
        self.revoked.add(token_hash)

    async def is_revoked(self, token_hash: str) -> bool:
        """Whether the hash was revoked."""
        return token_hash in self.revoked

    async def close(self) -> None:
        """Nothing to release."""

    async def put_record(
        self, kind: str, key: str, value: Record, expires: float | None, *, only_new: bool = False
    ) -> bool:
        """Keep a record (a deep copy: callers never share state with the store)."""
        if only_new and await self.get_record(kind, key) is not None:
            return False
        self.records[(kind, key)] = (copy.deepcopy(value), expires)
        return True

    async def get_record(self, kind: str, key: str) -> Record | None:
        """The unexpired record."""
        found = self.records.get((kind, key))
        if found is None or (found[1] is not None and found[1] <= time.time()):
            return None
        return copy.deepcopy(found[0])

    async def delete_record(self, kind: str, key: str) -> bool:
        """Forget a record."""
        return self.records.pop((kind, key), None) is not None

    async def list_records(self, kind: str) -> list[Record]:
        """Unexpired records of a kind."""
        now = time.time()
        return [
            copy.deepcopy(value)
            for (k, _), (value, expires) in self.records.items()
            if k == kind and (expires is None or expires > now)
        ]
