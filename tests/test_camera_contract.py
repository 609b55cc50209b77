"""One camera contract, run against an Archon camera and an Alpaca camera.

The stage tasks are written against devices.base.CCDController; whatever family a
camera is, it must behave the same way for them: flush when idle, integrate for the
time asked and return when the integration has ended, read out, hand over a 2-D frame
of unsigned counts, report when the light fell, and come back idle from an
interrupted exposure. Both cameras are real servers on 127.0.0.1: our Archon
simulator, and the third-party alpaca-simulators.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from devices.base import CCDController

from .alpaca_sim import RunningSimulator, running_simulator
from .conftest import SIM_ACF

pytestmark = pytest.mark.slow

EXPTIME = 0.3


@pytest.fixture(scope="module")
def alpaca_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("contract-alpaca")) as sim:
        yield sim


@pytest.fixture(params=["archon", "alpaca"])
async def camera(
    request: pytest.FixtureRequest, alpaca_server: RunningSimulator
) -> AsyncIterator[CCDController]:
    if request.param == "archon":
        from devices.archon.acf import load_acf
        from devices.archon.controller import ArchonController, ControllerTiming
        from devices.archon.simulator import ArchonSimulator

        acf = load_acf(SIM_ACF)
        timing = ControllerTiming(command_timeout=2.0, readout_timeout=20.0)
        async with (
            ArchonSimulator(acf, port=0, seed=3) as sim,
            ArchonController("127.0.0.1", sim.port, acf, timing=timing) as controller,
        ):
            await controller.reset()
            yield controller
        return
    from devices.alpaca.camera import AlpacaCamera
    from devices.alpaca.ccd import AlpacaCcdCamera
    from devices.alpaca.client import AlpacaClient

    await asyncio.to_thread(alpaca_server.reload)
    async with AlpacaClient(alpaca_server.host, alpaca_server.port, timeout=5) as client:
        alpaca = AlpacaCamera(client)
        await alpaca.connect(timeout=5)
        yield AlpacaCcdCamera(alpaca)


async def test_a_camera_is_a_ccd_controller(camera: CCDController) -> None:
    assert isinstance(camera, CCDController)


async def test_an_exposure_integrates_reads_out_and_hands_over_counts(
    camera: CCDController,
) -> None:
    await camera.flush()
    before = time.monotonic()
    start = await camera.expose(EXPTIME, open_shutter=False)
    after_expose = time.monotonic()
    assert before <= start <= after_expose
    assert after_expose - start >= EXPTIME * 0.9  # returns once the integration ended
    buffer = await camera.readout()
    frame = await camera.fetch(buffer)
    assert frame.ndim == 2
    assert frame.dtype in (np.uint16, np.uint32)
    assert min(frame.shape) >= 16
    assert int(frame.max()) > 0  # bias/dark counts, not an empty buffer
    times = camera.exposure_times()  # type: ignore[attr-defined]
    assert times.end > times.start
    assert times.start.tzinfo is not None
    assert abs(times.measured_s - EXPTIME) < 0.1
    assert times.requested_s == pytest.approx(EXPTIME)


async def test_an_interrupted_exposure_leaves_the_camera_ready_for_the_next(
    camera: CCDController,
) -> None:
    await camera.flush()
    exposing = asyncio.ensure_future(camera.expose(5.0, open_shutter=False))
    await asyncio.sleep(0.5)
    exposing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await exposing
    await camera.abort()
    await camera.flush()  # idle again: a new exposure may start
    start = await camera.expose(EXPTIME, open_shutter=False)
    assert time.monotonic() - start >= EXPTIME * 0.9
    frame = await camera.fetch(await camera.readout())
    assert frame.ndim == 2
