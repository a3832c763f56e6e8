"""One gateway with the built-in authorization server per test module, and an operator's browser per test."""

from collections.abc import Iterator

import pytest

from tests.authserver.support import Browser, Builtin, builtin_gateway


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builtin]:
    with builtin_gateway(tmp_path_factory.mktemp("authserver")) as running:
        yield running


@pytest.fixture
def browser(env: Builtin) -> Iterator[Browser]:
    opened = Browser(env)
    try:
        yield opened
    finally:
        opened.close()
