"""Fixtures of the simulator tests: a quiet sim-instrument controller and a raw connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from devices.archon.acf import load_acf
from devices.archon.simulator import ArchonSimulator

from .wire import QUIET, SIM_ACF, Conn


@pytest.fixture
async def sim() -> AsyncIterator[ArchonSimulator]:
    """The sim instrument's controller, quiet sensor (no cosmics), on a free port."""
    async with ArchonSimulator(load_acf(SIM_ACF), sensor=QUIET, seed=7) as simulator:
        yield simulator


@pytest.fixture
async def conn(sim: ArchonSimulator) -> AsyncIterator[Conn]:
    connection = await Conn.open(sim)
    yield connection
    await connection.close()
