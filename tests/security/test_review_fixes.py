"""Fixes from the attacker's review of issues 8-11: each test names what was reproduced against the gateway."""

from pathlib import Path

import httpx
import pytest

from mcp_bastion.audit import AuditLog
from mcp_bastion.config import is_loopback
from tests.harness import DEMO, spec
from tests.security.support import (
    OpenStream,
    add_token,
    admin_token,
    bearer,
    legacy_headers,
    modern_body,
    modern_headers,
    open_legacy_session,
    rpc,
    secure_gateway,
)

FORBIDDEN = -32003


@pytest.mark.parametrize(
    "uri", ["demo://public/../readme", "demo://public/%2e%2e/readme", "demo://public/./x", "demo://public/a\\..\\b"]
)
def test_a_resource_scope_glob_never_reaches_outside_its_prefix_through_dot_segments(tmp_path: Path, uri: str) -> None:
    """Review finding 1 (issue 8 item 4): `resource:echo/demo://public/*` matched `demo://public/../readme` (fnmatch's
    `*` crosses `/`), so a child resolving dot segments served what the scope excludes. Dot segments fit no glob."""
    admin = admin_token()
    with secure_gateway([spec("echo", DEMO)], tmp_path, auth_token=admin) as gw, httpx.Client(timeout=10) as client:
        scoped = add_token(gw, "public-reader", "resource:echo/demo://public/*")
        session = open_legacy_session(client, gw.mcp("echo"), scoped)
        answer = client.post(
            gw.mcp("echo"), json=rpc(1, "resources/read", {"uri": uri}), headers=legacy_headers(scoped, session)
        ).json()
        assert answer["error"]["code"] == FORBIDDEN, answer
        assert gw.app.gateway.backends["echo"].calls == 0  # never reached the child


def test_listen_streams_count_against_the_principals_stream_cap(tmp_path: Path) -> None:
    """Review finding 2 (issue 8 item 7): 2026-07-28 `subscriptions/listen` streams held no stream slot, so one
    narrow token could open them without limit. Past MAX_STREAMS_PER_PRINCIPAL the next one is 429."""
    admin = admin_token()
    with secure_gateway([spec("echo", DEMO)], tmp_path, auth_token=admin, max_streams_per_principal=2) as gw:
        token = add_token(gw, "listener", "tool:echo/echo")
        headers = {**modern_headers(token, "subscriptions/listen"), "Accept": "application/json, text/event-stream"}
        body = modern_body(1, "subscriptions/listen", {"notifications": {"toolsListChanged": True}})
        streams = [OpenStream("POST", gw.mcp("echo"), headers, body) for _ in range(2)]
        assert [s.status for s in streams] == [200, 200]
        refused = httpx.post(gw.mcp("echo"), json=body, headers=headers, timeout=10)
        assert refused.status_code == 429
        assert "retry-after" in refused.headers
        other = add_token(gw, "other", "tool:echo/echo")
        other_headers = {**headers, "Authorization": f"Bearer {other}"}
        third = OpenStream("POST", gw.mcp("echo"), other_headers, body)
        assert third.status == 200  # another principal is not affected
        for name in ("listener", "other"):  # revoking ends the streams (and the test does not wait for them)
            assert httpx.delete(f"{gw.url}/api/tokens/{name}", headers=bearer(admin), timeout=10).status_code == 200
        for stream in [*streams, third]:
            assert stream.ended.wait(5)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("127.0.0.1.nip.io", False),
        ("127.attacker.example", False),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback_is_an_address_never_a_name_that_starts_like_one(host: str, loopback: bool) -> None:
    """Review finding 4: `127.0.0.1.nip.io` passed the loopback check, so `connect` (and the plain-HTTP and
    INSECURE_NO_AUTH preflight) would send a token in clear text to wherever that name resolves."""
    assert is_loopback(host) is loopback


def test_a_secret_straddling_the_field_cut_is_masked_whole(tmp_path: Path) -> None:
    """Review finding 6: secrets were masked after the field was cut, so one straddling the cut leaked its start."""
    secret = "S" * 40
    log = AuditLog(tmp_path / "a.jsonl", max_bytes=10**6, backups=1, secrets=[secret])
    log.record("http.refused", outcome="denied", path="/" + "a" * 100 + secret)  # refusal fields are cut at 128
    log.close()
    text = (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    assert "SSSSS" not in text
    assert "****" in text
