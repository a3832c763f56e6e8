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
