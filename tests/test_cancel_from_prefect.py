"""Cancelling a run the way the Prefect UI does: the run belongs to a served
deployment, the API is told to cancel it, Prefect's runner stops the run's process.
The shutter must close and the controller must be left idle."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from devices.archon.simulator import ArchonSimulator
from devices.archon.simulator.core import CoreState
from schemas.exposure import ExposureSpec
from schemas.instrument import InstrumentConfig

from .conftest import REPO
from .test_reliability import _until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

SERVE = """
from flows.exposure import take_exposure
take_exposure.serve(name="cancel-test", pause_on_shutdown=False)
"""


async def test_cancel_from_the_api_closes_the_shutter(
    tmp_path: Path, archon_sim: ArchonSimulator, sim_instrument: InstrumentConfig
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Cancelling

    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    log = (tmp_path / "serve.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, cwd=REPO, env=env, stdout=log, stderr=log
    )
    try:
        spec = ExposureSpec(image_type="object", exptime=60, object_name="cancel me")
        deadline = time.monotonic() + 120
        while True:  # the deployment exists once serve() has registered it
            try:
                run = await run_deployment(
                    "take-exposure/cancel-test",
                    parameters={"spec": spec, "instrument": sim_instrument},
                    timeout=0,
                )
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        await _until(lambda: archon_sim.shutter_open, 120, "shutter open")
        await asyncio.sleep(0.5)
        async with get_client() as client:
            asked = time.monotonic()
            await client.set_flow_run_state(run.id, Cancelling(), force=True)
            closed_after = await _until(lambda: not archon_sim.shutter_open, 30, "closed")
            for _ in range(600):
                state = (await client.read_flow_run(run.id)).state
                if state is not None and state.is_final():
                    break
                await asyncio.sleep(0.1)
            final_after = time.monotonic() - asked
            limit = await client.read_global_concurrency_limit_by_name(
                sim_instrument.concurrency_limit_name
            )
            print(f"slots still taken after the cancel: {limit.active_slots}")
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 30)
        except TimeoutError:
            server.kill()
            await server.wait()
        log.close()
    output = (tmp_path / "serve.log").read_text()
    print(
        f"cancel from the API: shutter closed {closed_after:.3f} s after Cancelling was set; "
        f"run {state.name if state else None} after {final_after:.1f} s"
    )
    assert state is not None, output
    assert state.is_cancelled(), output
    assert archon_sim.core_state is CoreState.IDLE
    assert closed_after < 1.0, output
