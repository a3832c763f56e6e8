"""Sealed session ids and signed hops, without I/O: what a client or a peer can and cannot do with them."""

import base64
import hashlib
import json

import pytest

from mcp_bastion.access import Principal
from mcp_bastion.cluster.hop import HOP_TTL_S, HopSigner
from mcp_bastion.cluster.session_ids import SessionIds, SessionOwner
from mcp_bastion.middleware.hop import Hop, HopError
from mcp_bastion.sealing import Sealer

SECRET = "x" * 32
ALICE = Principal(
    "oauth:idp:alice", "alice", ("server:toolbox",), "bearer", credential="c" * 64, audit=(("issuer", "idp"),)
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_id_names_its_owner_and_is_bound_to_its_principal() -> None:
    one = SessionIds(Sealer.from_secret(SECRET), "one")
    two = SessionIds(Sealer.from_secret(SECRET), "two")
    session_id = one.mint("token:alice")
    assert session_id != one.mint("token:alice")
    assert two.owner(session_id, "token:alice") == SessionOwner("one", True)
    assert two.owner(session_id, "token:bob") == SessionOwner("one", False)
    assert "alice" not in session_id  # the principal is hashed: the id does not name it


def test_a_forged_or_altered_session_id_names_no_owner() -> None:
    ids = SessionIds(Sealer.from_secret(SECRET), "one")
    other = SessionIds(Sealer.from_secret("y" * 32), "evil")
    session_id = ids.mint("p")
    body, mac = session_id.split(".")
    assert ids.owner(other.mint("p"), "p") is None  # another cluster's secret
    assert ids.owner(body[:-2] + "xx." + mac, "p") is None
    assert ids.owner("0123456789abcdef", "p") is None  # a single instance's random id


def test_a_hop_verifies_only_for_the_request_it_signed_and_only_while_fresh() -> None:
    clock = Clock()
    signer = HopSigner(Sealer.from_secret(SECRET), "one", wall=clock)
    hop = Hop(ALICE, "203.0.113.7", "req-1")
    value = signer.sign(hop, "POST", "/mcp/toolbox", b"", b'{"id":1}')
    assert signer.verify(value, "POST", "/mcp/toolbox", b"", b'{"id":1}') == hop._replace(origin="one")
    for method, path, query, body in [
        ("POST", "/mcp/toolbox", b"", b'{"id":2}'),
        ("DELETE", "/mcp/toolbox", b"", b'{"id":1}'),
        ("POST", "/mcp/other", b"", b'{"id":1}'),
        ("POST", "/mcp/toolbox", b"x=1", b'{"id":1}'),
    ]:
        with pytest.raises(HopError, match="another request"):
            signer.verify(value, method, path, query, body)
    clock.now += HOP_TTL_S
    with pytest.raises(HopError, match="expired"):
        signer.verify(value, "POST", "/mcp/toolbox", b"", b'{"id":1}')


def test_a_session_id_is_no_hop_and_a_hop_is_no_session_id() -> None:
    sealer = Sealer.from_secret(SECRET)
    session_id = SessionIds(sealer, "one").mint("p")
    with pytest.raises(HopError):
        HopSigner(sealer, "one").verify(session_id, "POST", "/mcp/toolbox", b"", b"")
    hop = HopSigner(sealer, "one").sign(Hop(ALICE, "ip", "r"), "POST", "/", b"", b"")
    assert SessionIds(sealer, "one").owner(hop, "p") is None


def _payload(sealed: str) -> dict[str, str]:
    body = sealed.split(".")[0]
    found: dict[str, str] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return found


def test_a_session_id_does_not_let_its_holder_confirm_a_guessed_principal() -> None:
    """The id is readable; its principal field is an HMAC with the cluster key, not a hash anyone can recompute."""
    mine = _payload(SessionIds(Sealer.from_secret(SECRET), "one").mint("token:alice"))["p"]
    guessed = hashlib.sha256(b"token:alice").hexdigest()
    assert mine not in guessed
    assert mine != _payload(SessionIds(Sealer.from_secret("y" * 32), "one").mint("token:alice"))["p"]  # keyed
    assert mine == _payload(SessionIds(Sealer.from_secret(SECRET), "two").mint("token:alice"))["p"]  # stable
