from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import RunningGateway, run_gateway, spec


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    """A gateway with the toolbox child (shared) and the demo child."""
    from tests.harness import DEMO

    with run_gateway([spec("toolbox"), spec("demo", DEMO)], tmp_path) as running:
        yield running


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_configure(config: pytest.Config) -> None:
    """The coverage floor (--cov-fail-under in pyproject's addopts) is the whole suite's figure: a run of chosen
    paths, -k or -m still reports coverage, but is not failed for covering less than the whole suite does."""
    whole_suite = config.args_source is pytest.Config.ArgsSource.TESTPATHS
    if not whole_suite or config.option.keyword or config.option.markexpr:
        config.known_args_namespace.cov_fail_under = None  # pytest-cov reads its options from this namespace
