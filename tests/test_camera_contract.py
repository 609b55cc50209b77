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
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from devices.base import CCDController, DeviceUnsupportedError
from devices.camera import Camera, ReadoutRequest
from schemas.instrument import load_instrument
from tasks.control.instrument import ControllerPlan, open_instrument, plan_instrument

from .alpaca_sim import RunningSimulator, running_simulator
from .conftest import REPO, SIM_ACF, SIM_YAML

SIM_ALPACA = REPO / "deploy" / "instruments" / "sim-alpaca.yaml"

pytestmark = pytest.mark.slow

EXPTIME = 0.3


@pytest.fixture(scope="module")
def alpaca_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    with running_simulator(tmp_path_factory.mktemp("contract-alpaca")) as sim:
        yield sim


@dataclass
class Seam:
    """A camera of the instrument, built by the registry from its config and opened
    the way a run opens it, with its plan."""

    camera: Camera
    plan: ControllerPlan


@pytest.fixture(params=["archon", "alpaca"])
async def seam(
    request: pytest.FixtureRequest, alpaca_server: RunningSimulator, tmp_path: Path
) -> AsyncIterator[Seam]:
    if request.param == "archon":
        from devices.archon.acf import load_acf
        from devices.archon.simulator import ArchonSimulator

        async with ArchonSimulator(load_acf(SIM_ACF), port=0, seed=3) as sim:
            config = load_instrument(SIM_YAML).with_overrides(port=sim.port, data_root=tmp_path)
            [plan] = plan_instrument(config)
            async with open_instrument([plan]) as [session]:
                yield Seam(session.controller, plan)
        return
    await asyncio.to_thread(alpaca_server.reload)
    config = load_instrument(SIM_ALPACA).with_overrides(port=alpaca_server.port, data_root=tmp_path)
    [plan] = plan_instrument(config)
    async with open_instrument([plan]) as [session]:
        yield Seam(session.controller, plan)


@pytest.fixture
def camera(seam: Seam) -> CCDController:
    return seam.camera


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


async def test_the_frame_has_the_planned_geometry_full_and_binned(seam: Seam) -> None:
    camera, plan = seam.camera, seam.plan
    await _exposed(camera)
    frame = await camera.fetch(await camera.readout())
    assert frame.shape == plan.buffer_shape
    binned = plan.for_readout(ReadoutRequest(bin_x=2, bin_y=2))
    await camera.apply(binned.setup)
    await _exposed(camera)
    frame = await camera.fetch(await camera.readout())
    assert frame.shape == binned.buffer_shape
    assert binned.lines == plan.lines // 2


async def test_telemetry_identity_and_make_safe(seam: Seam) -> None:
    camera = seam.camera
    telemetry = await camera.telemetry()
    assert telemetry
    assert all(isinstance(v, float) for v in telemetry.values())
    identity = await camera.identity()
    assert identity
    assert all(isinstance(v, str) for v in identity.values())
    exposing = asyncio.ensure_future(camera.expose(5.0, open_shutter=True))
    await asyncio.sleep(0.3)
    found = await camera.secure(5.0)
    exposing.cancel()
    with contextlib.suppress(BaseException):
        await exposing
    assert found.errors == []
    assert found.secured
    assert found.idle


async def test_buffers_are_there_exactly_when_the_capabilities_say(seam: Seam) -> None:
    camera, plan = seam.camera, seam.plan
    await _exposed(camera)
    buffer = await camera.readout()
    if plan.capabilities.buffered_frames:
        held = await camera.held_frame(buffer)
        assert held.complete
        assert held.buffer == buffer
    else:
        with pytest.raises(DeviceUnsupportedError):
            await camera.held_frame(buffer)
    await camera.fetch(buffer)


async def _exposed(camera: Camera) -> None:
    await camera.flush()
    await camera.expose(EXPTIME, open_shutter=False)
