"""The record contract (Issue 14: the built-in authorization server's clients, codes, grants and refresh tokens) on
every backend: JSON in and out, expiry, and `only_new` as the one atomic claim a single-use value relies on."""

# ruff: noqa: F811 - the backend-parametrized fixtures of the contract suite are imported by name

import time

import anyio
import pytest

from mcp_bastion.store import Store
from tests.store.test_contract import backend, store, url  # noqa: F401

pytestmark = pytest.mark.anyio


async def test_a_record_comes_back_as_it_was_stored_until_deleted(store: Store) -> None:
    value = {"client_id": "c1", "scopes": ["server:a"], "n": 3, "nested": {"x": None}}
    assert await store.put_record("client", "c1", value, None)
    assert await store.get_record("client", "c1") == value
    assert await store.get_record("client", "c2") is None
    assert await store.get_record("grant", "c1") is None  # kinds are separate spaces
    assert await store.delete_record("client", "c1")
    assert not await store.delete_record("client", "c1")
    assert await store.get_record("client", "c1") is None


async def test_an_expired_record_is_gone_from_get_and_list(store: Store) -> None:
    now = time.time()
    await store.put_record("code", "old", {"v": 1}, now - 1)
    await store.put_record("code", "new", {"v": 2}, now + 60)
    await store.put_record("code", "forever", {"v": 3}, None)
    assert await store.get_record("code", "old") is None
    assert sorted(r["v"] for r in await store.list_records("code")) == [2, 3]


async def test_only_new_claims_once_and_an_expired_claim_can_be_taken_again(store: Store) -> None:
    later = time.time() + 60
    assert await store.put_record("code-used", "h", {"by": "a"}, later, only_new=True)
    assert not await store.put_record("code-used", "h", {"by": "b"}, later, only_new=True)
    assert await store.get_record("code-used", "h") == {"by": "a"}
    await store.put_record("code-used", "x", {"by": "a"}, time.time() + 0.05)
    with anyio.fail_after(5):
        while await store.get_record("code-used", "x") is not None:
            await anyio.sleep(0.02)
    assert await store.put_record("code-used", "x", {"by": "b"}, later, only_new=True)


async def test_concurrent_claims_of_one_value_let_exactly_one_through(store: Store) -> None:
    wins: list[bool] = []

    async def claim(who: int) -> None:
        wins.append(await store.put_record("refresh-used", "r", {"by": who}, time.time() + 60, only_new=True))

    async with anyio.create_task_group() as tg:
        for who in range(8):
            tg.start_soon(claim, who)
    assert sorted(wins) == [False] * 7 + [True]


async def test_a_plain_put_replaces_and_list_holds_only_its_kind(store: Store) -> None:
    await store.put_record("grant", "g1", {"v": 1}, None)
    await store.put_record("grant", "g1", {"v": 2}, None)
    await store.put_record("grant-x", "g2", {"v": 9}, None)
    assert await store.list_records("grant") == [{"v": 2}]
