"""Sealed session ids and signed hops, without I/O: what a client or a peer can and cannot do with them."""

import base64
import hashlib
import json

import pytest

from mcp_bastion.access import Principal
from mcp_bastion.cluster.hop import HOP_TTL_S, HopSigner
from mcp_bastion.cluster.session_ids import SessionIds, SessionOwner
from mcp_bastion.middleware.hop import Hop, HopError, HopRequest
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


def _request(method: str = "POST", path: str = "/mcp/toolbox", query: bytes = b"", body: bytes = b'{"id":1}',
             **headers: str) -> HopRequest:  # fmt: skip
    raw = [(b"content-type", b"application/json")]
    raw += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return HopRequest(method, path, query, raw, body)


def test_a_hop_verifies_only_for_the_request_it_signed_and_only_while_fresh() -> None:
    clock = Clock()
    sender = HopSigner(Sealer.from_secret(SECRET), "one", wall=clock)
    owner = HopSigner(Sealer.from_secret(SECRET), "two", wall=clock)
    hop = Hop(ALICE, "203.0.113.7", "req-1")
    signed = _request(mcp_session_id="s-1", last_event_id="7", mcp_method="tools/call", mcp_name="echo")
    assert owner.verify(sender.sign(hop, signed, to="two"), signed) == hop._replace(origin="one")
    value = sender.sign(hop, signed, to="two")
    for other in [
        _request(body=b'{"id":2}'),
        _request("DELETE"),
        _request(path="/mcp/other"),
        _request(query=b"x=1"),
        signed._replace(headers=[(k, b"s-2" if k == b"mcp-session-id" else v) for k, v in signed.headers]),
        signed._replace(headers=[(k, v) for k, v in signed.headers if k != b"last-event-id"]),
        signed._replace(headers=[*signed.headers, (b"mcp-protocol-version", b"2025-06-18")]),
        signed._replace(headers=[(k, b"tools/list" if k == b"mcp-method" else v) for k, v in signed.headers]),
        signed._replace(headers=[(k, b"other" if k == b"mcp-name" else v) for k, v in signed.headers]),
    ]:
        with pytest.raises(HopError, match="another request"):
            owner.verify(value, other)
    clock.now += HOP_TTL_S
    with pytest.raises(HopError, match="expired"):
        owner.verify(value, signed)


def test_a_hop_is_used_once_and_only_by_the_instance_it_names() -> None:
    clock = Clock()
    sender = HopSigner(Sealer.from_secret(SECRET), "one", wall=clock)
    two, three = (HopSigner(Sealer.from_secret(SECRET), name, wall=clock) for name in ("two", "three"))
    request = _request(mcp_session_id="s-1")
    value = sender.sign(Hop(ALICE, "ip", "r"), request, to="two")
    with pytest.raises(HopError, match="another instance"):
        three.verify(value, request)
    two.verify(value, request)
    clock.now += HOP_TTL_S / 2
    with pytest.raises(HopError, match="used before"):
        two.verify(value, request)
    clock.now += HOP_TTL_S  # an expired id is forgotten (bounded memory); the hop itself has expired too
    two.verify(sender.sign(Hop(ALICE, "ip", "r"), request, to="two"), request)
    assert len(two._seen) == 1


def test_a_session_id_is_no_hop_and_a_hop_is_no_session_id() -> None:
    sealer = Sealer.from_secret(SECRET)
    session_id = SessionIds(sealer, "one").mint("p")
    with pytest.raises(HopError):
        HopSigner(sealer, "one").verify(session_id, _request())
    hop = HopSigner(sealer, "one").sign(Hop(ALICE, "ip", "r"), _request(), to="one")
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
