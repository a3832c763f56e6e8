"""A replayed code revokes what the code issued even when the replay races the first redemption (review 8): the
replay arrives after the first claimed the code but before it wrote the grant, so the replay's revocation finds
nothing; the first redemption then sees the replay's mark and revokes its own grant. And the used-code claim
outlives the code, so a replay near the code's expiry is still a replay."""

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_bastion.audit import AuditLog
from mcp_bastion.authserver import AuthServer, build_authserver
from mcp_bastion.authserver.authorize import s256
from mcp_bastion.authserver.exchange import TokenRefused
from mcp_bastion.authserver.records import CODE, CODE_USED, GRANT, Code, to_record
from mcp_bastion.config import Settings
from mcp_bastion.security import token_hash
from mcp_bastion.store.memory import MemoryStore

VERIFIER = "v" * 64
CODE_VALUE = "mcpa_" + "c" * 43
REDIRECT = "http://127.0.0.1:33418/callback"
RESOURCE = "http://127.0.0.1:9/mcp/toolbox"


class ReplayWhileGranting(MemoryStore):
    """A store that runs `replay` just before the first grant is written: the race, made deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.replay: Any = None
        self.replay_error: str | None = None

    async def put_record(
        self, kind: str, key: str, value: Any, expires: float | None, *, only_new: bool = False
    ) -> bool:
        replay, self.replay = (self.replay, None) if kind == GRANT else (None, self.replay)
        if replay is not None:
            try:
                await replay()
            except TokenRefused as exc:
                self.replay_error = exc.description
        return await super().put_record(kind, key, value, expires, only_new=only_new)


def parts_for(tmp_path: Path, store: MemoryStore) -> AuthServer:
    settings = Settings(
        public_url="http://127.0.0.1:9",
        authorization_server="builtin",
        oauth_signing_key_file=tmp_path / "keys.json",
        store_url="memory://",
    )
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=1 << 20, backups=1)
    parts = build_authserver(settings, ["toolbox"], store=store, audit=audit)
    assert parts is not None
    return parts


async def keep_code(store: MemoryStore) -> tuple[dict[str, str], Code]:
    code = Code(
        grant_id="g1",
        client_id="mcpc_client",
        client_name="Client",
        redirect_uri=REDIRECT,
        code_challenge=s256(VERIFIER),
        resource=RESOURCE,
        scopes=("server:toolbox",),
        approved_by="admin",
        expires=time.time() + 60,
        digest=token_hash(CODE_VALUE),
    )
    await store.put_record(CODE, code.digest, to_record(code), code.expires)
    form = {
        "grant_type": "authorization_code",
        "code": CODE_VALUE,
        "code_verifier": VERIFIER,
        "client_id": code.client_id,
        "redirect_uri": REDIRECT,
    }
    return form, code


def test_a_replay_racing_the_first_redemption_leaves_no_grant(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = ReplayWhileGranting()
        exchange = parts_for(tmp_path, store).exchange
        form, code = await keep_code(store)
        store.replay = lambda: exchange.token(form, {})
        with pytest.raises(TokenRefused, match="code already used"):
            await exchange.token(form, {})
        assert store.replay_error == "code already used; what it issued is revoked"
        assert await store.get_record(GRANT, code.grant_id) is None

    anyio.run(scenario)


def test_the_used_code_claim_outlives_the_code(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        exchange = parts_for(tmp_path, store).exchange
        form, code = await keep_code(store)
        await exchange.token(form, {})
        _, claim_expires = store.records[(CODE_USED, code.digest)]
        assert claim_expires is not None
        assert claim_expires >= code.expires + 60

    anyio.run(scenario)
