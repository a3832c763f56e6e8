"""Issue 9 item 10: one address's failed authentications no longer lock out every credential from it.

A credential that already succeeded from the address (remembered per window of the failure counter, in bounded
memory, shared through Redis when REDIS_URL is set) keeps working during the lockout; a valid credential never seen
from there still waits it out, like every wrong guess. Through the real HTTP surface (uvicorn on loopback).
"""

import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest

from mcp_bastion.config import Settings
from mcp_bastion.ratelimit import KNOWN_MAX, KnownCredentials, Limiter, LocalCounters
from mcp_bastion.security import token_hash
from tests.harness import RunningGateway, wait_until
from tests.redis_server import redis_server
from tests.security.support import add_token, admin_token, audit_events, bearer, secure_gateway

WINDOW_S = 3  # the failure counter's fixed window: short, so the lockout ends within the test
FAILURES = 10  # AUTH_FAILURE_LIMIT: this many wrong tokens lock the address out
SEQUENCE_ROOM_S = 2.0  # a lockout sequence starts with at least this much of its window left (it takes ~0.1 s)
T = TypeVar("T")
LOCKOUT: dict[str, Any] = {"auth_failure_limit": FAILURES, "rate_limit_window_ms": WINDOW_S * 1000}


def window_index() -> int:
    return int(time.time()) // WINDOW_S


def start_of_a_window() -> None:
    """Wait (bounded) until the current window has SEQUENCE_ROOM_S left, so a lockout is not cut by its end."""
    wait_until(lambda: WINDOW_S - time.time() % WINDOW_S >= SEQUENCE_ROOM_S, WINDOW_S + 1, interval=0.01)


def health(gw: RunningGateway, token: str) -> httpx.Response:
    return httpx.get(f"{gw.url}/health", headers=bearer(token), timeout=5)


def lock_out(gw: RunningGateway) -> None:
    """FAILURES wrong tokens from 127.0.0.1: each a 401, then the address is locked out."""
    for n in range(FAILURES):
        assert health(gw, f"wrong-{n}-" + "x" * 40).status_code == 401


def test_a_known_token_keeps_working_through_a_lockout_that_new_tokens_and_guesses_wait_out(tmp_path: Path) -> None:
    """Issue 9 item 10: a token (and the login session it opened) used from an address before 10 wrong tokens
    keeps working; a valid token never seen from that address gets 429 until the window ends, and so do guesses."""
    admin = admin_token()
    with secure_gateway([], tmp_path, auth_token=admin, **LOCKOUT) as gw, httpx.Client(timeout=5) as client:
        newcomer = add_token(gw, "newcomer", "admin")
        start_of_a_window()
        started = window_index()
        assert health(gw, admin).status_code == 200  # admin is now known from 127.0.0.1
        login = client.post(f"{gw.url}/auth/login", json={"token": admin})
        assert login.status_code == 200
        lock_out(gw)

        assert health(gw, admin).status_code == 200
        assert client.get(f"{gw.url}/auth/session").json()["principal"] == "admin"  # by cookie: bound to admin
        assert client.post(f"{gw.url}/auth/login", json={"token": admin}).status_code == 200
        refused = health(gw, newcomer)
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= WINDOW_S
        assert httpx.post(f"{gw.url}/auth/login", json={"token": newcomer}, timeout=5).status_code == 429
        assert health(gw, "another-guess-" + "y" * 40).status_code == 429
        assert window_index() == started  # all of it inside one window: the lockout was really in force

        wait_until(lambda: health(gw, newcomer).status_code == 200, 2 * WINDOW_S)
        assert window_index() > started  # it ended with the window, not before
    locked = [line for line in audit_events(tmp_path, "ratelimit.exceeded") if line["outcome"] == "denied"]
    assert len(locked) >= 3  # the newcomer's request, its login and the guess


def test_a_known_token_is_not_a_key_for_other_tokens(tmp_path: Path) -> None:
    """Issue 9 item 10: during a lockout, a request with a known token's value mangled (a guess) is still 429, and
    a token known from one address is not known from another."""
    admin = admin_token()
    with secure_gateway([], tmp_path, auth_token=admin, **LOCKOUT) as gw:
        start_of_a_window()
        started = window_index()
        assert health(gw, admin).status_code == 200
        lock_out(gw)
        assert health(gw, admin[:-1] + ("A" if admin[-1] != "A" else "B")).status_code == 429
        assert health(gw, admin).status_code == 200
        assert window_index() == started
    known = Limiter(Settings(**LOCKOUT)).known
    digest = token_hash(admin)
    assert not _run(known.known("127.0.0.1", digest))
    _run(known.remember("127.0.0.1", digest))
    assert _run(known.known("127.0.0.1", digest))
    assert not _run(known.known("10.0.0.1", digest))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine of the in-process memory (it never suspends)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return cast(T, stop.value)
    raise AssertionError("the in-process memory suspended")


def test_the_remembered_set_is_bounded_and_drops_the_oldest_first() -> None:
    """Issue 9 item 10: past KNOWN_MAX (address, credential) pairs the oldest are forgotten, so successes from ever
    more addresses cannot grow memory; what was seen last is still known."""
    known = Limiter(Settings()).known
    assert known.max_entries == KNOWN_MAX
    credential = token_hash("one token")
    for n in range(KNOWN_MAX + 100):
        _run(known.remember(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", credential))
    assert len(known) == KNOWN_MAX
    assert not _run(known.known("10.0.0.0", credential))  # the first pair went first
    last = KNOWN_MAX + 99
    assert _run(known.known(f"10.{last >> 16 & 255}.{last >> 8 & 255}.{last & 255}", credential))


def test_a_success_is_remembered_for_its_window_and_the_next_then_forgotten() -> None:
    """Issue 9 item 10: remembered per window of the failure counter: still known in the next window (a lockout
    that began after it), forgotten after that unless the credential keeps succeeding."""
    now = [1_000.0 * WINDOW_S]
    known = KnownCredentials(WINDOW_S, LocalCounters(), clock=lambda: now[0])
    _run(known.remember("192.0.2.1", token_hash("t")))
    now[0] += WINDOW_S
    assert _run(known.known("192.0.2.1", token_hash("t")))
    now[0] += WINDOW_S
    assert not _run(known.known("192.0.2.1", token_hash("t")))


@pytest.fixture
def shared_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    with redis_server(workdir) as url:
        yield url


def test_in_cluster_mode_a_token_known_on_one_instance_passes_the_lockout_on_another(
    tmp_path: Path, shared_redis: str
) -> None:
    """Issue 9 item 10: with REDIS_URL, the memory is shared: a token used on instance A keeps working on instance
    B through a lockout counted on B, while a token never used from this address gets 429 there."""
    admin = admin_token()
    settings = {**LOCKOUT, "redis_url": shared_redis, "store_url": shared_redis, "cluster_secret": "c" * 32}
    with (
        secure_gateway([], tmp_path / "a", auth_token=admin, **settings) as first,
        secure_gateway([], tmp_path / "b", auth_token=admin, **settings) as second,
    ):
        made = httpx.post(
            f"{first.url}/api/tokens", json={"name": "newcomer", "scopes": ["admin"]}, headers=bearer(admin)
        )
        assert made.status_code == 201, made.text
        newcomer = made.json()["token"]
        assert health(first, admin).status_code == 200
        lock_out(second)
        assert health(second, admin).status_code == 200  # known through Redis, never used on `second` itself
        assert health(second, newcomer).status_code == 429
