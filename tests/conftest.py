"""Shared fixtures: the Archon simulator on a free 127.0.0.1 port, one Prefect harness.

Prefect is pointed at a throw-away home before anything imports it, so tests never
touch a developer's ~/.prefect or the project's state/ folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="ccdflow-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
SIM_ACF = REPO / "deploy" / "instruments" / "sim.acf"
SIM_YAML = REPO / "deploy" / "instruments" / "sim.yaml"
LVM_ACF = REPO.parent / "shared" / "reference" / "lvm-100khz.acf"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test API for the whole session (about 13 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
async def archon_sim() -> AsyncIterator[object]:
    """A fresh simulator of the sim instrument on a free port."""
    from devices.archon.acf import load_acf
    from devices.archon.simulator import ArchonSimulator

    async with ArchonSimulator(load_acf(SIM_ACF), port=0, seed=1234) as sim:
        yield sim


@pytest.fixture
def sim_instrument(tmp_path: Path, archon_sim: object) -> object:
    """The sim instrument config pointed at the fixture's simulator and a temp data root."""
    import uuid

    from schemas.instrument import InstrumentConfig, load_instrument

    port = archon_sim.port  # type: ignore[attr-defined]
    config = load_instrument(SIM_YAML).with_overrides(port=port, data_root=tmp_path / "data")
    # Each test gets its own Prefect concurrency limit: the session shares one test
    # API, and a slot another test's killed or timed-out run left behind (until its
    # lease expires) must not decide this test. The controller locks are per port.
    limit = f"instrument-ccdsim-{uuid.uuid4().hex[:12]}"
    # No site: a test's night plan must not depend on the hour at the site (light
    # exposures stop at its morning twilight); tests of that give a site of their own.
    return InstrumentConfig.model_validate(
        {**config.model_dump(), "concurrency_name": limit, "site": None}
    )


def harness_api_env() -> dict[str, str]:
    """The environment for a ``ccdflow`` subprocess that uses the session's test API
    (started by ``prefect_harness``) instead of starting an embedded API of its own,
    which takes it 15-25 s."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "use the prefect_harness fixture"
    return {**os.environ, "PREFECT_API_URL": str(url)}
